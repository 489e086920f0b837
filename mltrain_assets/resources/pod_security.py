"""Kubernetes Pod Security Standards, "restricted" profile (v1.30), plus the project's own rules.

Every pod this project renders (workload pods and Jobs, the Helm chart's deployments, the run pods)
must pass the restricted profile and run with a read-only root filesystem. The rule table
below is written from the Pod Security Standards page, one row per control, with the fields
it restricts and the values it allows:

    https://kubernetes.io/docs/concepts/security/pod-security-standards/

The table is checked against the upstream pod-security-admission fixtures for v1.30 (kubernetes/kubernetes,
staging/src/k8s.io/pod-security-admission/test/testdata/{baseline,restricted}/v1.30, vendored under
mltrain_assets_tests/resources/psa_fixtures): every "fail" pod refused, every "pass" pod admitted.
Controls the page adds after v1.30 are left out (Host Probes / Lifecycle Hooks, v1.34; the SELinux
type ``container_engine_t``, v1.31). Pure standard library: ``mltrain manifests`` and the tests
import it, so it must stay light.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

URL = "https://kubernetes.io/docs/concepts/security/pod-security-standards/"
VERSION = "v1.30"

# A finding: (container label or None for the pod, field path, value found, what it must be).
Finding = tuple[str | None, str, Any, str]
Check = Callable[[dict, dict], Iterable[Finding]]

CONTAINER_FIELDS = ("containers", "initContainers", "ephemeralContainers")
WORKLOAD_KINDS = ("Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController")

BASELINE_CAPABILITIES = frozenset(
    {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP"}
    | {"SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",  # since v1.27
        "net.ipv4.tcp_keepalive_time",  # these four since v1.29
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset({"container_t", "container_init_t", "container_kvm_t"})  # or unset/""
RESTRICTED_VOLUME_TYPES = (
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
)
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
SECCOMP_ALLOWED = ("RuntimeDefault", "Localhost")


@dataclass(frozen=True)
class Rule:
    control: str
    level: str  # "baseline", "restricted" (the PSS profiles) or "project"
    requirement: str
    check: Check


def _get(obj: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(obj, dict) or obj.get(key) is None:
            return None
        obj = obj[key]
    return obj


def _containers(spec: dict) -> Iterator[tuple[str, dict]]:
    for field in CONTAINER_FIELDS:
        for container in spec.get(field) or []:
            yield f"{field[:-1]} {container.get('name', '?')}", container


class Text(str):
    """A finding's value written as prose ("of type nfs"), shown without quotes."""


def _sc_field(field: str, ok: Callable[[Any], bool], must: str, pod: bool = False) -> Check:
    """One securityContext field, on every container and (with ``pod``) on the pod's securityContext."""
    path = f"securityContext.{field}"

    def check(meta: dict, spec: dict) -> Iterator[Finding]:
        if pod and not ok(value := _get(spec, path)):
            yield None, f"spec.{path}", value, must
        for where, container in _containers(spec):
            if not ok(value := _get(container, path)):
                yield where, path, value, must

    return check


def _each(*checks: Check) -> Check:
    return lambda meta, spec: (finding for check in checks for finding in check(meta, spec))


def _linux_only(check: Check) -> Check:
    """Privilege Escalation, Seccomp and Capabilities (restricted) do not apply to Windows pods."""
    return lambda meta, spec: () if _get(spec, "os.name") == "windows" else check(meta, spec)


def _unset_or_false(value: Any) -> bool:
    return value is None or value is False


def _host_namespaces(meta: dict, spec: dict) -> Iterator[Finding]:
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if not _unset_or_false(spec.get(field)):
            yield None, f"spec.{field}", spec.get(field), "unset or false"


def _capabilities_baseline(meta: dict, spec: dict) -> Iterator[Finding]:
    for where, container in _containers(spec):
        added = _get(container, "securityContext.capabilities.add") or []
        if set(added) - BASELINE_CAPABILITIES:
            must = f"within the baseline set ({', '.join(sorted(BASELINE_CAPABILITIES))})"
            yield where, "securityContext.capabilities.add", added, must


def _host_path(meta: dict, spec: dict) -> Iterator[Finding]:
    for i, volume in enumerate(spec.get("volumes") or []):
        if volume.get("hostPath") is not None:
            yield None, f"spec.volumes[{i}] ({volume.get('name')})", Text("of type hostPath"), "of another type"


def _host_ports(meta: dict, spec: dict) -> Iterator[Finding]:
    for where, container in _containers(spec):
        for i, port in enumerate(container.get("ports") or []):
            if port.get("hostPort") not in (None, 0):
                yield where, f"ports[{i}].hostPort", port["hostPort"], "unset or 0"


def _apparmor_annotations(meta: dict, spec: dict) -> Iterator[Finding]:
    for key, value in sorted((meta.get("annotations") or {}).items()):
        allowed = not value or value == "runtime/default" or value.startswith("localhost/")
        if key.startswith(APPARMOR_ANNOTATION) and not allowed:
            yield None, f"metadata.annotations[{key}]", value, "unset, runtime/default or localhost/*"


def _sysctls(meta: dict, spec: dict) -> Iterator[Finding]:
    for i, sysctl in enumerate(_get(spec, "securityContext.sysctls") or []):
        if sysctl.get("name") not in SAFE_SYSCTLS:
            yield None, f"spec.securityContext.sysctls[{i}].name", sysctl.get("name"), "a safe sysctl"


def _volume_types(meta: dict, spec: dict) -> Iterator[Finding]:
    for i, volume in enumerate(spec.get("volumes") or []):
        types = [key for key, value in volume.items() if key != "name" and value is not None]
        # A volume with no source is an emptyDir: the API server defaults it so before admission sees it.
        if any(kind not in RESTRICTED_VOLUME_TYPES for kind in types):
            found, must = Text(f"of type {'/'.join(types)}"), ", ".join(RESTRICTED_VOLUME_TYPES)
            yield None, f"spec.volumes[{i}] ({volume.get('name')})", found, f"one of {must}"


def _run_as_non_root(meta: dict, spec: dict) -> Iterator[Finding]:
    pod = _get(spec, "securityContext.runAsNonRoot")
    if pod is False:
        yield None, "spec.securityContext.runAsNonRoot", False, "true (or unset with every container setting true)"
    for where, container in _containers(spec):
        value = _get(container, "securityContext.runAsNonRoot")
        if value is False or (value is None and pod is not True):
            yield where, "securityContext.runAsNonRoot", value, "true, or unset with the pod-level field true"


def _seccomp(meta: dict, spec: dict) -> Iterator[Finding]:
    pod = _get(spec, "securityContext.seccompProfile.type")
    if pod is not None and pod not in SECCOMP_ALLOWED:
        yield None, "spec.securityContext.seccompProfile.type", pod, "RuntimeDefault or Localhost"
    for where, container in _containers(spec):
        value = _get(container, "securityContext.seccompProfile.type")
        if (value is None and pod not in SECCOMP_ALLOWED) or (value is not None and value not in SECCOMP_ALLOWED):
            yield where, "securityContext.seccompProfile.type", value, "RuntimeDefault or Localhost (here or pod-level)"


def _capabilities_restricted(meta: dict, spec: dict) -> Iterator[Finding]:
    for where, container in _containers(spec):
        dropped = _get(container, "securityContext.capabilities.drop")
        if "ALL" not in (dropped or []):
            yield where, "securityContext.capabilities.drop", dropped, "a list including ALL"
        added = _get(container, "securityContext.capabilities.add") or []
        if set(added) - {"NET_BIND_SERVICE"}:
            yield where, "securityContext.capabilities.add", added, "unset or only NET_BIND_SERVICE"


_host_process = _sc_field("windowsOptions.hostProcess", _unset_or_false, "unset or false", pod=True)
_privileged = _sc_field("privileged", _unset_or_false, "unset or false")
_apparmor_type = _sc_field(
    "appArmorProfile.type",
    lambda v: v in (None, "RuntimeDefault", "Localhost"),
    "unset, RuntimeDefault or Localhost",
    pod=True,
)
_apparmor = _each(_apparmor_type, _apparmor_annotations)
_selinux = _each(
    _sc_field(
        "seLinuxOptions.type",
        lambda v: not v or v in SELINUX_TYPES,
        f"unset or one of {', '.join(sorted(SELINUX_TYPES))}",
        pod=True,
    ),
    _sc_field("seLinuxOptions.user", lambda v: not v, "unset", pod=True),
    _sc_field("seLinuxOptions.role", lambda v: not v, "unset", pod=True),
)
_proc_mount = _sc_field("procMount", lambda v: v in (None, "Default"), "unset or Default")
_seccomp_baseline = _sc_field("seccompProfile.type", lambda v: v != "Unconfined", "anything but Unconfined", pod=True)
_privilege_escalation = _sc_field("allowPrivilegeEscalation", lambda v: v is False, "false")
_run_as_user = _sc_field("runAsUser", lambda v: v != 0, "unset or non-zero", pod=True)
_read_only_root = _sc_field("readOnlyRootFilesystem", lambda v: v is True, "true")


def _level(level: str, *rows: tuple[str, str, Check]) -> tuple[Rule, ...]:
    """One profile's rows of the table: (control, requirement, check)."""
    return tuple(Rule(control, level, requirement, check) for control, requirement, check in rows)


RULES: tuple[Rule, ...] = (
    *_level(
        "baseline",
        ("HostProcess", "windowsOptions.hostProcess unset or false", _host_process),
        ("Host Namespaces", "hostNetwork, hostPID, hostIPC unset or false", _host_namespaces),
        ("Privileged Containers", "privileged unset or false", _privileged),
        ("Capabilities", "capabilities.add only from the baseline set", _capabilities_baseline),
        ("HostPath Volumes", "no hostPath volume", _host_path),
        ("Host Ports", "hostPort unset or 0", _host_ports),
        ("AppArmor", "appArmorProfile.type / annotation RuntimeDefault or Localhost if set", _apparmor),
        ("SELinux", "seLinuxOptions.type a container type; user, role unset", _selinux),
        ("/proc Mount Type", "procMount unset or Default", _proc_mount),
        ("Seccomp", "seccompProfile.type not Unconfined", _seccomp_baseline),
        ("Sysctls", "only the safe sysctls", _sysctls),
    ),
    *_level(
        "restricted",
        ("Volume Types", "volumes only of the allowed types", _volume_types),
        ("Privilege Escalation", "allowPrivilegeEscalation false", _linux_only(_privilege_escalation)),
        ("Running as Non-root", "runAsNonRoot true on the pod or every container", _run_as_non_root),
        ("Running as Non-root user", "runAsUser not 0", _run_as_user),
        ("Seccomp", "RuntimeDefault or Localhost on the pod or every container", _linux_only(_seccomp)),
        ("Capabilities", "drop ALL; add only NET_BIND_SERVICE", _linux_only(_capabilities_restricted)),
    ),
    *_level("project", ("Read-only Root Filesystem", "readOnlyRootFilesystem true", _read_only_root)),
)


def _pods(obj: dict) -> list[tuple[str, dict, dict]]:
    """(label, pod metadata, pod spec) for each pod template in a Kubernetes object."""
    if obj.get("kind") == "List":
        return [pod for item in obj.get("items") or [] for pod in _pods(item)]
    kind = obj.get("kind") or "object"
    label = f"{kind}/{_get(obj, 'metadata.name') or '?'}"
    if kind == "Pod":
        return [(label, obj.get("metadata") or {}, obj.get("spec") or {})]
    if kind == "CronJob":
        template = _get(obj, "spec.jobTemplate.spec.template")
    elif kind in WORKLOAD_KINDS:
        template = _get(obj, "spec.template")
    else:  # PodTemplate, or any dict carrying template.spec
        template = obj.get("template")
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        return []
    return [(label, template.get("metadata") or {}, template["spec"])]


def pod_specs(obj: dict) -> list[tuple[str, dict]]:
    """The pod specs inside a Kubernetes object, each with a label like "Job/name"; [] for other kinds."""
    return [(label, spec) for label, _, spec in _pods(obj)]


def _show(value: Any) -> str:
    return "unset" if value is None else value if isinstance(value, Text) else json.dumps(value)


def violations(obj: dict, levels: Iterable[str] | None = None) -> list[str]:
    """Every violation of RULES (of ``levels`` only, if given) in the object's pods, one line each (empty: it passes)."""
    found = []
    rules = [rule for rule in RULES if levels is None or rule.level in levels]
    for label, meta, spec in _pods(obj):
        for rule in rules:
            for where, path, value, must in rule.check(meta, spec):
                place = f"{label} {where}" if where else label
                found.append(f"{place}: {rule.control} ({rule.level}): {path} is {_show(value)}, must be {must}")
    return found


# Privileged ports: not a Pod Security control, a start-up failure. A process that is not root and holds no
# NET_BIND_SERVICE cannot bind a port below the node's net.ipv4.ip_unprivileged_port_start (1024 unless the
# pod's safe sysctl lowers it), so a server told to listen there crashes on start.
PORT_FLAGS = ("-p", "--port")
UNPRIVILEGED_PORT_START = 1024


def _command_words(container: dict) -> list[str]:
    """command + args as words; a shell script among them (``bash -c "x -p 80"``) is split as the shell would."""
    words: list[str] = []
    for word in [*(container.get("command") or []), *(container.get("args") or [])]:
        try:
            words.extend(shlex.split(word) if re.search(r"\s", word) else [word])
        except ValueError:  # unbalanced quotes: not a script shlex can read
            words.extend(word.split())
    return words


def listening_ports(container: dict) -> list[tuple[str, Any]]:
    """(where, port) for each port the container declares (``ports[].containerPort``) or its command is told to
    listen on (``-p N``, ``--port N``, ``--port=N``); a value that is not a number is returned as written."""
    found: list[tuple[str, Any]] = [
        (f"ports[{i}].containerPort", port.get("containerPort")) for i, port in enumerate(container.get("ports") or [])
    ]
    words = _command_words(container)
    for i, word in enumerate(words):
        if word in PORT_FLAGS and i + 1 < len(words):
            found.append((f"command {word} {words[i + 1]}", words[i + 1]))
        elif word.startswith("--port="):
            found.append((f"command {word}", word.split("=", 1)[1]))
    return [(where, int(port) if str(port).isdigit() else port) for where, port in found]


def privileged_ports(obj: dict) -> list[str]:
    """Every port a container of the object's pods would listen on and cannot, one line each (empty: none)."""
    found = []
    for label, _, spec in _pods(obj):
        start = UNPRIVILEGED_PORT_START
        for sysctl in _get(spec, "securityContext.sysctls") or []:
            if sysctl.get("name") == "net.ipv4.ip_unprivileged_port_start" and str(sysctl.get("value")).isdigit():
                start = int(sysctl["value"])
        for where, container in _containers(spec):
            if "NET_BIND_SERVICE" in (_get(container, "securityContext.capabilities.add") or []):
                continue
            for path, port in listening_ports(container):
                if not isinstance(port, int):
                    found.append(f"{label} {where}: Privileged Port (project): {path} is not a port number")
                elif port < start:
                    must = f"{start} or above, or the container must add NET_BIND_SERVICE"
                    found.append(f"{label} {where}: Privileged Port (project): {path} is {port}, must be {must}")
    return found
