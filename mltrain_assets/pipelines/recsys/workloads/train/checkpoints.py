"""Per-epoch training checkpoints: where they live, what setup they belong to, and reading them back.

After every epoch rank 0 writes ``epoch=NNN.pt`` (model, optimizer, RNG state, loss history:
tensors and plain values only) to ``checkpoint_uri_for(out_uri)``, i.e.
``{partition}/_checkpoints/v={version}/`` next to, not inside, the version folder, which
``ArtifactWriter`` would wipe. Checkpoints are not committed versions, so they are written
here rather than by ``ArtifactWriter``: a file appears whole (temp + rename locally, one PUT
on S3). Each carries the fingerprint of its training setup; a different setup never resumes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import posixpath
import re
import sys
import uuid
from typing import Any

import torch

from mltrain_assets.artifacts import filesystem
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.params import TrainParams

_CHECKPOINT_RE = re.compile(r"^epoch=(\d{3,})\.pt$")


def checkpoint_uri(params: TrainParams) -> str:
    """Where this training's checkpoints live: ``params.checkpoint_uri``, else next to ``out_uri``."""
    return params.checkpoint_uri or contract.checkpoint_uri_for(params.out_uri)


def training_fingerprint(params: TrainParams) -> str:
    """What makes two trainings the same, the epoch count aside: checkpoints of another setup are never resumed.

    The versioned parameters but ``epochs`` (a longer run resumes a shorter one), the input
    URIs, and the code and architecture constants. Runtime fields (nodes, workers, device,
    where checkpoints go) are left out: they do not change the weights.
    """
    setup = {name: value for name, value in params.versioned_fields().items() if name != "epochs"}
    inputs = {f.name: getattr(params, f.name) for f in dataclasses.fields(params) if f.metadata.get("role") == "input"}
    payload = {
        "code": TrainParams.code_version,
        "setup": setup,
        "inputs": inputs,
        "hidden": list(contract.HIDDEN_SIZES),
        "max_position": contract.MAX_POSITION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_name(epoch: int) -> str:
    return f"epoch={epoch:03d}.pt"


def list_checkpoints(uri: str) -> list[int]:
    """Epochs with a complete checkpoint file, ascending (temp files never match the name)."""
    fs, root = filesystem(uri)
    try:
        names = [posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)]
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for m in map(_CHECKPOINT_RE.match, names) if m)


def write_checkpoint(uri: str, epoch: int, payload: dict[str, Any]) -> str:
    """Write ``epoch=NNN.pt`` so that a reader sees the whole file or none of it."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    fs, root = filesystem(uri)
    fs.makedirs(root, exist_ok=True)
    final = posixpath.join(root, checkpoint_name(epoch))
    if "file" in fs.protocol or "local" in fs.protocol:
        tmp = posixpath.join(root, f".{checkpoint_name(epoch)}.{uuid.uuid4().hex}.tmp")
        with fs.open(tmp, "wb") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)  # atomic on POSIX
    else:
        fs.pipe_file(final, buffer.getvalue())  # an object-store PUT is atomic
    return final


def read_checkpoint(uri: str, epoch: int) -> dict[str, Any]:
    """Tensors and plain values only: ``weights_only=True`` refuses anything else."""
    fs, root = filesystem(uri)
    data = fs.cat_file(posixpath.join(root, checkpoint_name(epoch)))
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def latest_checkpoint(uri: str, fingerprint: str, max_epoch: int) -> tuple[int, dict[str, Any] | None]:
    """The newest readable checkpoint of this training setup with epoch <= ``max_epoch``; ``(0, None)`` if none."""
    for epoch in reversed(list_checkpoints(uri)):
        if epoch > max_epoch:
            continue
        try:
            payload = read_checkpoint(uri, epoch)
        except Exception as exc:  # an unreadable checkpoint is skipped, never fatal
            print(f"skipping unreadable checkpoint epoch={epoch}: {exc}", file=sys.stderr)
            continue
        if payload.get("fingerprint") == fingerprint and int(payload.get("epoch", -1)) == epoch:
            return epoch, payload
    return 0, None


def remove_checkpoints(uri: str) -> None:
    """Drop the checkpoint folder (once the version is committed)."""
    fs, root = filesystem(uri)
    if fs.exists(root):
        fs.rm(root, recursive=True)
