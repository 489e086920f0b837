"""The instance profile ``$DAGSTER_HOME/dagster.yaml`` is the user's: mltrain adds what it needs, never overwrites.

``install_profile`` (what every command that opens the instance runs first):

- no ``dagster.yaml`` yet: the template (``MLTRAIN_DAGSTER_YAML``, default ``dagster.yaml``) is copied as it is;
- one exists: the template's keys it lacks are added (at any depth, the template's value), every other line is
  kept as the user wrote it; a key the user set keeps the user's value, unless it is one of ``NEEDED``: a value
  there that mltrain cannot work with is refused (``UsageError``: one line naming the key, the value and what
  mltrain needs, exit 2) and nothing is written.

The merged profile is checked with Dagster's own instance-config validation before it is written, so a merge
Dagster would refuse (``run_queue`` next to a ``run_coordinator``...) is refused here, naming Dagster's reason.

It also points Dagster's CLIs (``dg``, ``dagster``) run from the project folder at the instance mltrain uses
there by default: they read ``./.env`` before they open an instance (see ``point_dagster_cli_here``).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mltrain_assets.cli.errors import UsageError

REPO_ROOT = Path(__file__).resolve().parents[2]
# The instance a checkout's commands use when MLTRAIN_HOME and DAGSTER_HOME are unset (settings.py).
DEFAULT_DAGSTER_HOME = Path(".mltrain") / "dagster"
# mltrain's own classes a profile may name, at the module they were moved from -> the module they live in now.
MOVED_MODULES = {
    "mltrain_assets.core.instance": "mltrain_assets.instance.origin",
    "mltrain_assets.core.heal": "mltrain_assets.instance.heal",
}
# Keys Dagster refuses side by side: a user's key on the left means the template's keys on the right stay out.
EXCLUSIVE = {
    "run_coordinator": ("run_queue",),
    "run_storage": ("storage",),
    "event_log_storage": ("storage",),
    "schedule_storage": ("storage",),
}


@dataclass(frozen=True)
class Need:
    """A key mltrain cannot work without: ``ok`` tells whether the user's value will do."""

    key: str
    needs: str
    why: str
    ok: Callable[[Any, Mapping[str, Any]], bool]


def _class_of(value: Any) -> type | None:
    """The class a ``{module, class}`` entry names, or None when it cannot be imported."""
    if not isinstance(value, Mapping) or "module" not in value or "class" not in value:
        return None
    try:
        found = getattr(importlib.import_module(str(value["module"])), str(value["class"]))
    except (ImportError, AttributeError):
        return None
    return found if isinstance(found, type) else None


def _is_subclass(value: Any, base: type) -> bool:
    found = _class_of(value)
    return found is not None and issubclass(found, base)


def _queued_coordinator(value: Any, _template: Mapping[str, Any]) -> bool:
    from dagster import QueuedRunCoordinator

    return _is_subclass(value, QueuedRunCoordinator)


def _local_launcher(value: Any, _template: Mapping[str, Any]) -> bool:
    from dagster import DefaultRunLauncher

    return os.environ.get("MLTRAIN_COMPUTE") == "k8s" or _is_subclass(value, DefaultRunLauncher)


def _storage_kind(value: Any, template: Mapping[str, Any]) -> bool:
    wanted = template.get("storage")
    return not isinstance(wanted, Mapping) or (isinstance(value, Mapping) and set(value) == set(wanted))


NEEDED = (
    Need(
        "run_coordinator",
        "QueuedRunCoordinator",
        "the run queue applies concurrency.runs and the pools to every launch",
        _queued_coordinator,
    ),
    Need(
        "run_launcher",
        "DefaultRunLauncher or a subclass",
        "run workers on this machine, which `mltrain heal` and run monitoring check",
        _local_launcher,
    ),
    Need(
        "concurrency.pools.granularity",
        "op",
        "the pools (spark, training, registry) limit steps",
        lambda value, _t: value == "op",
    ),
    Need(
        "run_monitoring.enabled",
        "true",
        "run monitoring frees the pool slots of runs that died",
        lambda value, _t: value is True,
    ),
    Need("storage", "the storage of MLTRAIN_DAGSTER_YAML", "the selected profile's storage", _storage_kind),
)


def install_profile(
    template: Path,
    home: Path,
    project: Path | None = REPO_ROOT,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> list[str]:
    """Create or complete ``home/dagster.yaml`` from ``template``; returns the keys it added (dotted).

    ``project``: the folder whose ``.env`` points Dagster's CLIs at its default instance, written when ``home``
    is that instance (so the line never names a home that was not made; None: leave it).
    """
    target = home / "dagster.yaml"
    added = _install(template, target, say)
    if project is not None and home.resolve() == (project / DEFAULT_DAGSTER_HOME).resolve():
        point_dagster_cli_here(project)
    return added


def _install(template: Path, target: Path, say: Callable[[str], None]) -> list[str]:
    if not target.exists():
        _write(target, template.read_text())
        return []
    text = _moved_modules_renamed(target, say)
    wanted = _mapping(template.read_text(), template)
    have = _mapping(text, target)
    for need in NEEDED:
        present, value = _lookup(have, need.key)
        if need.key == "storage" and not present and any(k in have for k in EXCLUSIVE if k.endswith("_storage")):
            present, value = True, {k: have[k] for k in EXCLUSIVE if k in have}
        if present and not need.ok(value, wanted):
            wanted_value = "/".join(wanted["storage"]) if need.key == "storage" and "storage" in wanted else need.needs
            raise UsageError(
                f"{target}: {need.key} is {_show(value)}, mltrain needs {wanted_value} ({need.why}); "
                f"change or remove {need.key} there"
            )
    added: list[str] = []
    merged = _merge(have, wanted, "", added)
    if not added:
        return []
    new_text = _with_added(text, have, merged)
    _validate(new_text, target)
    _write(target, new_text)
    say(f"mltrain: {target}: added {', '.join(added)} (from {template.name}; your other settings kept)")
    return added


def _moved_modules_renamed(target: Path, say: Callable[[str], None]) -> str:
    """The profile's text with mltrain's moved modules named where they live now (written back, and said)."""
    text = target.read_text()
    renamed = text
    for old, new in MOVED_MODULES.items():
        renamed = re.sub(rf"(module:\s*['\"]?){re.escape(old)}(?=['\"]?\s*$)", rf"\g<1>{new}", renamed, flags=re.M)
    if renamed != text:
        moved = [old for old in MOVED_MODULES if old in text]
        _write(target, renamed)
        say(f"mltrain: {target}: {', '.join(moved)} renamed to where they live now (your other settings kept)")
    return renamed


def point_dagster_cli_here(root: Path = REPO_ROOT) -> None:
    """``DAGSTER_HOME`` for Dagster's CLIs in the project folder: theirs if set, else mltrain's default instance.

    ``dg`` and ``dagster`` load ``./.env`` before opening an instance (Dagster's CLI utilities); ``${VAR:-default}``
    keeps a DAGSTER_HOME the shell exports. Only in a source checkout (a pyproject with ``[tool.dg]``), and only
    when the file names no DAGSTER_HOME: the user's own ``.env`` lines stay as they are.
    """
    pyproject = root / "pyproject.toml"
    if not pyproject.exists() or "[tool.dg]" not in pyproject.read_text():
        return
    env_file = root / ".env"
    current = env_file.read_text() if env_file.exists() else ""
    if re.search(r"^\s*(export\s+)?DAGSTER_HOME\s*=", current, re.MULTILINE):
        return
    line = (
        "# Dagster's CLIs here (dg dev, dg launch...) open the instance mltrain uses here; an exported DAGSTER_HOME wins.\n"
        f"DAGSTER_HOME=${{DAGSTER_HOME:-{(root / DEFAULT_DAGSTER_HOME).resolve()}}}\n"
    )
    # A read-only checkout (an image): Dagster's CLIs there take DAGSTER_HOME from the environment.
    with contextlib.suppress(OSError):
        _write(env_file, current + ("\n" if current and not current.endswith("\n") else "") + line)


def _mapping(text: str, path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as bad:
        raise UsageError(f"{path} is not valid YAML ({' '.join(str(bad).split())}): fix or remove it") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UsageError(f"{path}: expected a mapping of settings, found {type(loaded).__name__}: fix or remove it")
    return loaded


def _lookup(config: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _show(value: Any) -> str:
    if isinstance(value, Mapping) and "class" in value:
        if _class_of(value) is None:
            return f"{value.get('module')}.{value['class']}, which cannot be imported"
        return str(value["class"])
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return "/".join(str(k) for k in value)
    return str(value)


def _merge(have: Mapping[str, Any], wanted: Mapping[str, Any], prefix: str, added: list[str]) -> dict[str, Any]:
    """``have`` with ``wanted``'s missing keys (recorded in ``added``); ``have``'s values win."""
    merged = copy.deepcopy(dict(have))
    blocked = {key for user_key, keys in EXCLUSIVE.items() if not prefix and user_key in have for key in keys}
    for key, value in wanted.items():
        if key in blocked:
            continue
        if key not in merged:
            merged[key] = copy.deepcopy(value)
            added.append(prefix + str(key))
        elif isinstance(merged[key], dict) and isinstance(value, Mapping):
            merged[key] = _merge(merged[key], value, f"{prefix}{key}.", added)
    return merged


_TOP_LEVEL_KEY = re.compile(r"^(?P<key>[^\s#:'\"-][^:]*|'[^']*'|\"[^\"]*\"):")


def _with_added(text: str, have: Mapping[str, Any], merged: Mapping[str, Any]) -> str:
    """The user's text with the merge applied: new top-level keys appended, and each top-level block that gained
    a nested key rewritten (only that block; the user's lines elsewhere, comments included, stay verbatim)."""
    lines = text.splitlines(keepends=True)
    starts = [(i, yaml.safe_load(m.group("key"))) for i, line in enumerate(lines) if (m := _TOP_LEVEL_KEY.match(line))]
    out = list(lines)
    for index in reversed(range(len(starts))):
        start, key = starts[index]
        if key not in have or merged[key] == have[key]:
            continue
        end = starts[index + 1][0] if index + 1 < len(starts) else len(lines)
        while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
            end -= 1  # comments and blank lines before the next key belong to it
        out[start:end] = [yaml.safe_dump({key: merged[key]}, sort_keys=False, default_flow_style=False)]
    new = "".join(out)
    appended = {key: value for key, value in merged.items() if key not in have}
    if appended:
        if new and not new.endswith("\n"):
            new += "\n"
        new += "\n# Added by mltrain from its template (yours to edit):\n"
        new += yaml.safe_dump(appended, sort_keys=False, default_flow_style=False)
    if _mapping(new, Path("dagster.yaml")) != merged:
        # A layout the line-wise rewrite does not understand (anchors, a document marker...): write the data.
        new = yaml.safe_dump(dict(merged), sort_keys=False, default_flow_style=False)
    return new


def _validate(text: str, target: Path) -> None:
    """Dagster's own check of an instance profile (schema and the keys it refuses side by side)."""
    from dagster import DagsterInvalidConfigError

    from mltrain_assets.instance.dagster_private import dagster_instance_config

    with tempfile.TemporaryDirectory() as scratch:
        Path(scratch, "dagster.yaml").write_text(text)
        try:
            dagster_instance_config(scratch)
        except DagsterInvalidConfigError as refused:
            reasons = "; ".join(error.message for error in refused.errors) or str(refused).splitlines()[0]
            raise UsageError(
                f"{target}: adding what mltrain needs would make an instance Dagster refuses ({reasons}); "
                f"edit {target.name} there"
            ) from None


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a reader (a code server, the daemon) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)
