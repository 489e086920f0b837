"""No credential in a rendered object: what looks like one, and the tracking URI a pod may carry.

A pod spec is readable by anyone who may ``get``/``list`` pods in the namespace (and lands in
``kubectl describe``, audit logs, ``mltrain manifests`` output): credentials reach workload pods only
through the Secret named by ``MLTRAIN_K8S_ENV_SECRET`` (``envFrom``), never in args or literal env.

- :func:`pod_safe_tracking_uri`: an MLflow tracking URI with a password is rendered without it, the
  pod reading it from the Secret (MLflow's own ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``
  for a tracking server, libpq's ``PGPASSWORD`` for a PostgreSQL store); without that Secret the
  launch is refused, naming the setting and the fix.
- :func:`credential_findings`: every credential-shaped value of an object (a URI with a password,
  an AWS access key id or secret key, a non-empty literal under a password/secret-key/token name),
  inside JSON strings too (a workload's ``--params``). Rendering refuses objects with any.

Dagster-free: the tests scan the Helm values and ``deploy/`` with the same rules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# scheme://user:password@host — a URI carrying a password (an empty password is no credential).
URI_WITH_PASSWORD = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:[^/\s@]+@")
AWS_ACCESS_KEY_ID = re.compile(r"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
# 40 characters of base64 with both cases: an AWS secret access key (hex digests, all one case, are not).
AWS_SECRET_KEY = re.compile(
    r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+]*[a-z])(?=[A-Za-z0-9/+]*[A-Z])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
)
# A key (YAML/JSON) or env var name whose literal value is a credential.
SECRET_NAME = re.compile(
    r"(?i)(passw(or)?d|passphrase|secret[._\-]?(access[._\-]?)?key|api[._\-]?key|(?<![a-z])token)$"
)


class CredentialInSpec(ValueError):
    """A setting would put a credential into a pod spec; the message names the setting and the fix."""


def pod_safe_tracking_uri(uri: str, env_secret: str, setting: str = "MLFLOW_TRACKING_URI") -> str:
    """``uri`` as a pod may carry it: without its password, which the pod reads from the env Secret.

    http(s): no userinfo at all (the Secret holds ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``);
    postgresql: the user stays, the password goes (the Secret holds ``PGPASSWORD``, which libpq reads).
    Refused without ``MLTRAIN_K8S_ENV_SECRET``, and for stores with no password variable of their own.
    """
    parts = urlsplit(uri)
    if not parts.password:
        return uri
    scheme = parts.scheme.split("+")[0].lower()
    host = parts.netloc.rsplit("@", 1)[1]
    if scheme in ("http", "https"):
        needs, netloc = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD", host
    elif scheme == "postgresql":
        needs, netloc = "PGPASSWORD", f"{parts.netloc.rsplit('@', 1)[0].split(':', 1)[0]}@{host}"
    else:
        raise CredentialInSpec(
            f"{setting} carries a password, and a {scheme} store has no password variable a pod could read from a "
            "Secret: the password would be written into every workload pod's spec. Use a tracking server "
            "(http(s)://, with MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD) or PostgreSQL (PGPASSWORD)"
        )
    if not env_secret:
        raise CredentialInSpec(
            f"{setting} carries a password, which would be written into every workload pod's spec (its params). "
            f"Set MLTRAIN_K8S_ENV_SECRET to a Secret holding {needs}: pods then get {setting} without the password "
            "and read it from that Secret"
        )
    return urlunsplit(parts._replace(netloc=netloc))


def credential_findings(obj: Any, where: str = "") -> list[str]:
    """Each credential-shaped value in ``obj`` as ``"<kind>/<name> <path>: <what>"`` (the value itself masked)."""
    if not where and isinstance(obj, dict) and "kind" in obj:
        where = f"{obj['kind']}/{(obj.get('metadata') or {}).get('name', '')}"
    return [f"{where} {path}: {what}" if path else f"{where}: {what}" for path, what in _walk(obj, "")]


def _walk(node: Any, path: str, name: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        # An env entry ({name: X_PASSWORD, value: ...}) names its value by its "name" field.
        entry_name = node.get("name") if isinstance(node.get("name"), str) and "value" in node else ""
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            yield from _walk(value, here, entry_name if key == "value" and entry_name else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]", name)
    elif isinstance(node, str):
        yield from _string(node, path, name)


def _string(text: str, path: str, name: str) -> Iterator[tuple[str, str]]:
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict | list):  # a workload's --params, a JSON setting
            yield from ((f"{path} (JSON) {p}", w) for p, w in _walk(parsed, ""))
            return
    if text and SECRET_NAME.search(name):
        yield path, f"a literal value for {name!r}"
    if URI_WITH_PASSWORD.search(text):
        yield path, "a URI with a password (scheme://user:password@host)"
    if AWS_ACCESS_KEY_ID.search(text):
        yield path, "an AWS access key id"
    if AWS_SECRET_KEY.search(text):
        yield path, "an AWS secret access key (40 characters of mixed-case base64)"
