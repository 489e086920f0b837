"""k8s-local's record of the objects it is running, so that what a dead run left behind can be reaped.

A cluster keeps every object until someone deletes it; k8s-local keeps a record per launch in
``$MLTRAIN_HOME/k8s-local/objects/<name>.json`` (the rendered objects, their run id, and the
marker its processes carry) from before its processes start until the launch ends. A run worker
killed with SIGKILL never removes it: ``mltrain heal`` (``instance/reap.py``) finds the record of a run
that ended, kills whatever process still carries its marker (by process group) and deletes it.

Processes are found by an environment marker (``MLTRAIN_K8S_LOCAL_OBJECT=<name>/<token>``), read from
``/proc/<pid>/environ``, rather than by recorded pids: every process a pod started inherits it (a
torchrun worker, a Spark JVM, their children), and a pid reused by an unrelated process never has it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mltrain_assets.launch.protocol import RUN_ID_LABEL

MARKER_ENV = "MLTRAIN_K8S_LOCAL_OBJECT"


def objects_dir(home: Path | None = None) -> Path:
    from mltrain_assets.settings import mltrain_home

    return (home or mltrain_home()) / "k8s-local" / "objects"


@dataclass(frozen=True)
class LocalRecord:
    """One k8s-local launch: its objects, the run they belong to and its processes' marker."""

    path: Path
    name: str
    run_id: str
    marker: str
    objects: list[dict[str, Any]]
    launcher_pid: int

    @classmethod
    def read(cls, path: Path) -> LocalRecord | None:
        try:
            data = json.loads(path.read_text())
            return cls(
                path=path,
                name=str(data["name"]),
                run_id=str(data.get("run_id") or ""),
                marker=str(data["marker"]),
                objects=list(data.get("objects") or []),
                launcher_pid=int(data.get("launcher_pid") or 0),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # half-written or removed meanwhile

    def kinds(self) -> list[str]:
        return [f"{o.get('kind')} {o.get('metadata', {}).get('namespace', '')}/{o.get('metadata', {}).get('name', '')}"
                for o in self.objects]  # fmt: skip

    def processes(self) -> list[int]:
        """Live pids carrying this launch's marker."""
        return processes_with(f"{MARKER_ENV}={self.marker}")

    def kill(self, grace_s: float = 2.0) -> list[int]:
        """SIGTERM then SIGKILL every process group holding a marked process; the groups killed."""
        ours = os.getpgid(0)  # never the caller's own group
        groups = sorted({pgid for pid in self.processes() if (pgid := _pgid(pid)) is not None and pgid != ours})
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pgid in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
            deadline = time.monotonic() + grace_s
            while sig == signal.SIGTERM and self.processes() and time.monotonic() < deadline:
                time.sleep(0.05)
        for pid in self.processes():  # a marked process that left its group (setsid) goes by itself
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return groups

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def records(home: Path | None = None) -> list[LocalRecord]:
    folder = objects_dir(home)
    found = [LocalRecord.read(path) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return [record for record in found if record is not None]


@contextlib.contextmanager
def recorded(
    objects: list[dict[str, Any]], processes: list[tuple[list[str], dict[str, str]]]
) -> Iterator[list[tuple[list[str], dict[str, str]]]]:
    """Record the launch while it runs; yields ``processes`` with the marker in each one's env."""
    main = next((o for o in objects if o.get("kind") in ("Pod", "Job")), None)
    if main is None:
        yield processes
        return
    name = main["metadata"]["name"]
    marker = f"{name}/{secrets.token_hex(8)}"
    folder = objects_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    record = {
        "name": name,
        "run_id": (main["metadata"].get("labels") or {}).get(RUN_ID_LABEL, ""),
        "marker": marker,
        "launcher_pid": os.getpid(),
        "objects": objects,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, sort_keys=True))
    os.replace(tmp, path)
    try:
        yield [(command, {**env, MARKER_ENV: marker}) for command, env in processes]
    finally:
        path.unlink(missing_ok=True)


def processes_with(entry: str) -> list[int]:
    """Pids of this user's live processes whose environment holds ``entry`` (``NAME=value``)."""
    needle = entry.encode() + b"\0"
    found = []
    for folder in Path("/proc").iterdir():
        if not folder.name.isdigit():
            continue
        try:
            environ = (folder / "environ").read_bytes() + b"\0"
            state = (folder / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone, or another user's
            continue
        if state != "Z" and (environ.startswith(needle) or b"\0" + needle in environ):
            found.append(int(folder.name))
    return found


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
