"""The claim on a version folder: one writer at a time, kept fresh by a heartbeat, broken when its owner died."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from mltrain_assets.artifacts.manifest import AlreadyCommitted, read_manifest
from mltrain_assets.artifacts.storage import _create_exclusive

CLAIM_NAME = "_CLAIM.json"
CLAIM_HEARTBEAT_S = 15.0
CLAIM_STALE_S = 120.0  # a claim not refreshed for this long belongs to a writer that died elsewhere
CLAIM_POLL_S = 2.0
CLAIM_WAIT_S = 4 * 3600.0  # the longest a second writer waits for the first to commit


class _Claim:
    """The exclusive right to write one version folder, kept fresh by a heartbeat until released."""

    def __init__(self, fs, path: str, owner: dict[str, Any]):
        self.fs, self.path, self.owner = fs, path, owner
        self.file = posixpath.join(path, CLAIM_NAME)
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="mltrain-claim", daemon=True)
        self._beat.start()
        atexit.register(self.release)  # a workload that fails after claiming frees the version at once

    @classmethod
    def acquire(cls, fs, path: str, uri: str, wait_s: float) -> _Claim:
        owner = {"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        fs.makedirs(path, exist_ok=True)
        deadline = time.monotonic() + wait_s
        while True:
            if _create_exclusive(fs, posixpath.join(path, CLAIM_NAME), _claim_body(owner)):
                committed = read_manifest(uri)
                if committed is None:
                    return cls(fs, path, owner)
                fs.rm(posixpath.join(path, CLAIM_NAME))  # the previous holder committed as it let go
                raise AlreadyCommitted(uri, committed)
            committed = read_manifest(uri)
            if committed is not None:
                raise AlreadyCommitted(uri, committed)
            holder = _read_claim(fs, posixpath.join(path, CLAIM_NAME))
            if holder is not None and _claim_is_stale(holder):
                with contextlib.suppress(FileNotFoundError):
                    fs.rm(posixpath.join(path, CLAIM_NAME))
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{uri}: another writer ({holder}) has held it for over {wait_s:.0f}s without committing"
                )
            time.sleep(CLAIM_POLL_S)

    def _heartbeat(self) -> None:
        while not self._stop.wait(CLAIM_HEARTBEAT_S):
            with contextlib.suppress(OSError):
                self.fs.pipe_file(self.file, _claim_body(self.owner))

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        holder = _read_claim(self.fs, self.file)
        if holder is not None and holder.get("id") == self.owner["id"]:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self.file)


def _claim_body(owner: dict[str, Any]) -> bytes:
    return json.dumps({**owner, "heartbeat": time.time()}).encode()


def _read_claim(fs, path: str) -> dict[str, Any] | None:
    try:
        return json.loads(fs.cat_file(path))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _claim_is_stale(holder: Mapping[str, Any]) -> bool:
    """The holder is gone: its process died on this host, or it stopped beating (another host)."""
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder.get("pid", 0)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            pass
    return time.time() - float(holder.get("heartbeat", 0)) > CLAIM_STALE_S
