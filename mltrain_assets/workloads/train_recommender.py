"""Distributed training of the click model (PyTorch DDP under ``torchrun``), with per-epoch checkpoints.

``python -m mltrain_assets.workloads.train_recommender --interactions-uris JSON_LIST --eval-uri URI
--embeddings-uri URI --date D --out-uri URI [--epochs N --nproc 2 --seed 0 --experiment recommender
--shuffle-labels]``

This process (launched by Dagster Pipes like any workload) starts
``torchrun --standalone --nnodes 1 --nproc-per-node N -m mltrain_assets.workloads.train_recommender_worker``,
relays the workers' progress, then evaluates AUC on the held-out day, logs the run to MLflow
and commits the model directory plus ``metrics.json`` into ``--out-uri``.

Checkpoints: after every epoch rank 0 writes ``epoch=NNN.pt`` (model, optimizer, RNG state,
loss history: tensors and plain values only) to ``checkpoint_uri_for(out_uri)``, i.e.
``{partition}/_checkpoints/v={version}/`` next to, not inside, the version folder, which
``ArtifactWriter`` would wipe. A file appears whole (temp + rename locally, one PUT on S3).
On start the latest checkpoint of the same training setup is resumed, and the final weights
are bit-for-bit those of an uninterrupted run: the data order of epoch ``e`` depends only on
``(seed, e)``, algorithms are deterministic, and the RNG state is restored.

Backend and device are flags: ``gloo``/``cpu`` by default, ``nccl``/``cuda`` (one GPU per
local rank) on GPU nodes; ``--nnodes``/``--rdzv-endpoint`` span several nodes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import posixpath
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch

from mltrain_assets.artifacts import ArtifactWriter, filesystem, read_manifest, require_manifest
from mltrain_assets.workloads import recsys_config as cfg
from mltrain_assets.workloads._runtime import DataRejected, Reporter, run_workload
from mltrain_assets.workloads.recsys_model import (
    MODEL_FILES,
    EncodedRows,
    RecsysNet,
    default_config,
    encode,
    encode_rows,
    feature_statistics,
    global_click_rate,
    make_bundle,
    read_artifact_table,
    save_model_dir,
    score,
)

EVENTS_FILE = "events.parquet"
METRICS_FILE = "metrics.json"
EVENT_COLUMNS = ["user_id", "item_id", "device", "position", "event_at", "clicked"]
PROGRESS_MARKER = "MLTRAIN_PROGRESS "
WORKER_MODULE = "mltrain_assets.workloads.train_recommender_worker"
_CHECKPOINT_RE = re.compile(r"^epoch=(\d{3,})\.pt$")


# --------------------------------------------------------------------------- inputs


def load_events(uris: list[str], columns: list[str] = EVENT_COLUMNS) -> pd.DataFrame:
    """Concatenate committed ``user_interactions`` versions' events, in the given order."""
    frames = [read_artifact_table(uri, EVENTS_FILE, columns).to_pandas() for uri in uris]
    if not frames:
        raise DataRejected("train_recommender: no training days given")
    return pd.concat(frames, ignore_index=True)


def load_factors(embeddings_uri: str):
    return read_artifact_table(embeddings_uri, "user_factors.parquet"), read_artifact_table(
        embeddings_uri, "item_factors.parquet"
    )


def model_config_for(args: argparse.Namespace, rank: int, global_ctr: float) -> dict[str, Any]:
    return default_config(rank, global_ctr=global_ctr)


def training_fingerprint(args: argparse.Namespace) -> str:
    """What makes two trainings the same (the epoch count aside): checkpoints of another setup are never resumed."""
    payload = {
        "code": cfg.TRAIN_CODE_VERSION,
        "interactions": json.loads(args.interactions_uris),
        "embeddings": args.embeddings_uri,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "shuffle_labels": bool(args.shuffle_labels),
        "hidden": list(cfg.HIDDEN_SIZES),
        "max_position": cfg.MAX_POSITION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def training_labels(clicked: np.ndarray, shuffle: bool, seed: int) -> torch.Tensor:
    labels = torch.from_numpy(clicked.astype(np.float32))
    if shuffle:
        # Breaks the link between features and labels while keeping the click rate: the gate must fail.
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + 7_919))
        labels = labels[perm]
    return labels


# --------------------------------------------------------------------------- checkpoints


def checkpoint_name(epoch: int) -> str:
    return f"epoch={epoch:03d}.pt"


def list_checkpoints(checkpoint_uri: str) -> list[int]:
    """Epochs with a complete checkpoint file, ascending (temp files never match the name)."""
    fs, root = filesystem(checkpoint_uri)
    try:
        names = [posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)]
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for m in map(_CHECKPOINT_RE.match, names) if m)


def write_checkpoint(checkpoint_uri: str, epoch: int, payload: dict[str, Any]) -> str:
    """Write ``epoch=NNN.pt`` so that a reader sees the whole file or none of it."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    fs, root = filesystem(checkpoint_uri)
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


def read_checkpoint(checkpoint_uri: str, epoch: int) -> dict[str, Any]:
    fs, root = filesystem(checkpoint_uri)
    data = fs.cat_file(posixpath.join(root, checkpoint_name(epoch)))
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def latest_checkpoint(checkpoint_uri: str, fingerprint: str, max_epoch: int) -> tuple[int, dict[str, Any] | None]:
    """The newest readable checkpoint of this training setup with epoch <= ``max_epoch``; ``(0, None)`` if none."""
    for epoch in reversed(list_checkpoints(checkpoint_uri)):
        if epoch > max_epoch:
            continue
        try:
            payload = read_checkpoint(checkpoint_uri, epoch)
        except Exception as exc:  # an unreadable checkpoint is skipped, never fatal
            print(f"skipping unreadable checkpoint epoch={epoch}: {exc}", file=sys.stderr)
            continue
        if payload.get("fingerprint") == fingerprint and int(payload.get("epoch", -1)) == epoch:
            return epoch, payload
    return 0, None


# --------------------------------------------------------------------------- worker (one per rank)


def worker_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="one DDP worker of train_recommender (started by torchrun)")
    p.add_argument("--interactions-uris", required=True)
    p.add_argument("--embeddings-uri", required=True)
    p.add_argument("--checkpoint-uri", required=True)
    p.add_argument("--epochs", type=int, default=cfg.TRAIN_EPOCHS)
    p.add_argument("--batch-size", type=int, default=cfg.TRAIN_BATCH_SIZE)
    p.add_argument("--lr", type=float, default=cfg.TRAIN_LR)
    p.add_argument("--weight-decay", type=float, default=cfg.TRAIN_WEIGHT_DECAY)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shuffle-labels", action="store_true")
    p.add_argument("--backend", default=cfg.TRAIN_BACKEND)
    p.add_argument("--device", default=cfg.TRAIN_DEVICE, choices=["cpu", "cuda"])
    p.add_argument("--resume-from", type=int, default=-1, help="epoch to resume from; -1 finds the latest")
    return p


def _progress(event: dict[str, Any]) -> None:
    print(PROGRESS_MARKER + json.dumps(event), flush=True)


def _to(rows: EncodedRows, device: torch.device) -> EncodedRows:
    return EncodedRows(*(t.to(device) for t in (rows.user_row, rows.item_row, rows.device, rows.position, rows.hour)))


def validation_split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed ``VALIDATION_FRACTION`` of the window's rows, held out of training: ``(train, validation)`` indices."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 104_729))
    n_val = round(n * cfg.VALIDATION_FRACTION)
    return order[n_val:].sort().values, order[:n_val].sort().values


def worker_main(argv: list[str] | None = None) -> int:
    """Train under DDP; rank 0 checkpoints after every epoch. The launcher reads the last checkpoint."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data.distributed import DistributedSampler

    args = worker_parser().parse_args(argv)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(int(os.environ.get("MLTRAIN_TORCH_THREADS", "1")))
    if args.device == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend=args.backend)
    try:
        fingerprint = training_fingerprint(args)
        started = time.monotonic()
        events = load_events(json.loads(args.interactions_uris))
        user_factors, item_factors = load_factors(args.embeddings_uri)
        rank_dim = len(user_factors.column("factors")[0])
        config = model_config_for(args, rank_dim, global_click_rate(item_factors))
        bundle = make_bundle(RecsysNet.from_config(config), config, user_factors, item_factors)
        users, items = bundle.users, bundle.items
        max_position = config["max_position"]
        rows = encode_rows(events, users, items, max_position)
        labels = training_labels(events["clicked"].to_numpy(), args.shuffle_labels, args.seed)
        del events
        train_index, val_index = validation_split(len(rows), args.seed)
        base_rate = float(labels[train_index].double().mean())

        torch.manual_seed(args.seed)
        model = RecsysNet.from_config(config)
        model.set_standardization(*feature_statistics(rows.take(train_index), users, items, max_position))
        model.init_output(base_rate)
        model = model.to(device)
        if device.type != "cpu":
            rows, labels = _to(rows, device), labels.to(device)
            train_index, val_index = train_index.to(device), val_index.to(device)
            users.vectors, users.stats = users.vectors.to(device), users.stats.to(device)
            items.vectors, items.stats = items.vectors.to(device), items.stats.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")
        my_val = val_index[rank::world_size]

        @torch.no_grad()
        def validation_loss(constant_logit: float | None = None) -> float:
            totals = torch.zeros(2, dtype=torch.float64, device=device)
            for begin in range(0, len(my_val), 65_536):
                index = my_val[begin : begin + 65_536]
                if constant_logit is None:
                    logits = model(encode(rows.take(index), users, items, max_position))
                else:
                    logits = torch.full((len(index),), constant_logit, device=device)
                totals += torch.stack(
                    [
                        loss_fn(logits, labels[index]).double(),
                        torch.tensor(float(len(index)), dtype=torch.float64, device=device),
                    ]
                )
            dist.all_reduce(totals)
            return float(totals[0] / totals[1])

        base_val_loss = validation_loss(float(np.log(base_rate / (1 - base_rate))))
        loss_history: list[float] = []
        val_history: list[float] = []

        # Rank 0 decides where to resume; everyone loads the same file.
        start = torch.tensor([args.resume_from], dtype=torch.int64)
        if rank == 0 and args.resume_from < 0:
            start[0] = latest_checkpoint(args.checkpoint_uri, fingerprint, args.epochs)[0]
        start = start.to(device)
        dist.broadcast(start, src=0)
        start_epoch = int(start[0].item())
        if start_epoch > 0:
            state = read_checkpoint(args.checkpoint_uri, start_epoch)
            if state.get("fingerprint") != fingerprint:
                raise RuntimeError(f"checkpoint epoch={start_epoch} belongs to another training setup")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            loss_history = [float(x) for x in state["loss_history"]]
            val_history = [float(x) for x in state["val_loss_history"]]
        if rank == 0:
            _progress(
                {
                    "event": "start",
                    "resumed_from_epoch": start_epoch,
                    "epochs": args.epochs,
                    "train_rows": len(train_index),
                    "validation_rows": len(val_index),
                    "world_size": world_size,
                    "load_s": round(time.monotonic() - started, 2),
                }
            )

        ddp = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
        sampler = DistributedSampler(
            range(len(train_index)), num_replicas=world_size, rank=rank, shuffle=True, seed=args.seed
        )
        for epoch in range(start_epoch + 1, args.epochs + 1):
            epoch_started = time.monotonic()
            sampler.set_epoch(epoch)  # data order depends on (seed, epoch) only
            order = train_index[torch.tensor(list(sampler), dtype=torch.int64, device=device)]
            ddp.train()
            totals = torch.zeros(2, dtype=torch.float64, device=device)
            for begin in range(0, len(order), args.batch_size):
                index = order[begin : begin + args.batch_size]
                features = encode(rows.take(index), users, items, max_position)
                loss_sum = loss_fn(ddp(features), labels[index])
                optimizer.zero_grad(set_to_none=True)
                (loss_sum / len(index)).backward()
                optimizer.step()
                totals += torch.stack(
                    [loss_sum.detach().double(), torch.tensor(float(len(index)), dtype=torch.float64, device=device)]
                )
            dist.all_reduce(totals)
            loss_history.append(float(totals[0] / totals[1]))
            model.eval()
            val_history.append(validation_loss())
            if rank == 0:
                payload = {
                    "epoch": epoch,
                    "fingerprint": fingerprint,
                    "world_size": world_size,
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "loss_history": torch.tensor(loss_history, dtype=torch.float64),
                    "val_loss_history": torch.tensor(val_history, dtype=torch.float64),
                    "base_val_loss": base_val_loss,
                    "base_rate": base_rate,
                    "n_train": len(train_index),
                    "n_validation": len(val_index),
                    "config": json.dumps(config, sort_keys=True),
                }
                write_checkpoint(args.checkpoint_uri, epoch, payload)
                _progress(
                    {
                        "event": "epoch",
                        "epoch": epoch,
                        "epochs": args.epochs,
                        "loss": loss_history[-1],
                        "val_loss": val_history[-1],
                        "seconds": round(time.monotonic() - epoch_started, 2),
                    }
                )
            dist.barrier()  # no rank starts the next epoch before the checkpoint is durable
    finally:
        dist.destroy_process_group()
    return 0


# --------------------------------------------------------------------------- launcher


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--interactions-uris", required=True, help="JSON list of committed user_interactions versions (D-7..D-1)"
    )
    p.add_argument("--eval-uri", required=True, help="committed user_interactions version of day D (held out)")
    p.add_argument("--embeddings-uri", required=True, help="committed interaction_embeddings version for D")
    p.add_argument("--date", required=True)
    p.add_argument("--out-uri", required=True)
    p.add_argument("--checkpoint-uri", default=None, help="default: checkpoint_uri_for(out_uri)")
    p.add_argument("--epochs", type=int, default=cfg.TRAIN_EPOCHS)
    p.add_argument("--batch-size", type=int, default=cfg.TRAIN_BATCH_SIZE)
    p.add_argument("--lr", type=float, default=cfg.TRAIN_LR)
    p.add_argument("--weight-decay", type=float, default=cfg.TRAIN_WEIGHT_DECAY)
    p.add_argument("--nproc", type=int, default=cfg.TRAIN_NPROC, help="workers per node")
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument(
        "--rdzv-endpoint", default=None, help="host:port of the c10d rendezvous (multi-node); default standalone"
    )
    p.add_argument(
        "--node-rank",
        type=int,
        default=int(os.environ.get("MLTRAIN_NODE_RANK", "0")),
        help="only node 0 evaluates, logs and commits",
    )
    p.add_argument("--backend", default=cfg.TRAIN_BACKEND, choices=["gloo", "nccl"])
    p.add_argument("--device", default=cfg.TRAIN_DEVICE, choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--experiment", default=cfg.EXPERIMENT_NAME)
    p.add_argument("--shuffle-labels", action="store_true", help="train on shuffled labels (the AUC gate must fail)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the checkpoint folder after the commit")
    return p


def torchrun_command(args: argparse.Namespace, checkpoint_uri: str, resume_from: int) -> list[str]:
    if args.rdzv_endpoint:
        rendezvous = [
            "--nnodes",
            str(args.nnodes),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            args.rdzv_endpoint,
            "--rdzv-id",
            training_fingerprint(args),
        ]
    else:
        # --standalone picks a free port itself: no MASTER_PORT to manage, no clash with a killed run.
        rendezvous = ["--standalone", "--nnodes", "1"]
    worker_args = [
        "--interactions-uris", args.interactions_uris,
        "--embeddings-uri", args.embeddings_uri,
        "--checkpoint-uri", checkpoint_uri,
        "--epochs", str(args.epochs),
        "--batch-size", str(args.batch_size),
        "--lr", repr(args.lr),
        "--weight-decay", repr(args.weight_decay),
        "--seed", str(args.seed),
        "--backend", args.backend,
        "--device", args.device,
        "--resume-from", str(resume_from),
    ]  # fmt: skip
    if args.shuffle_labels:
        worker_args.append("--shuffle-labels")
    return [sys.executable, "-m", "torch.distributed.run", *rendezvous, "--nproc-per-node", str(args.nproc),
            "--max-restarts", "0", "-m", WORKER_MODULE, *worker_args]  # fmt: skip


def worker_environment(args: argparse.Namespace) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES_")}  # workers do not talk to Dagster
    threads = max(1, (os.cpu_count() or 1) // max(1, args.nproc))
    env.setdefault("MLTRAIN_TORCH_THREADS", str(threads))
    env["OMP_NUM_THREADS"] = env["MLTRAIN_TORCH_THREADS"]
    env["PYTHONUNBUFFERED"] = "1"
    if args.device == "cuda":
        env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    return env


def run_torchrun(command: list[str], env: dict[str, str], reporter: Reporter) -> None:
    """Run torchrun, relay rank 0's progress; SIGTERM/SIGINT to us is forwarded (torchrun stops its workers)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)

    def forward(signum, _frame):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for line in process.stdout:
            if line.startswith(PROGRESS_MARKER):
                event = json.loads(line[len(PROGRESS_MARKER) :])
                if event.get("event") == "epoch":
                    reporter.progress(
                        event["epoch"],
                        event["epochs"],
                        f"epochs (loss {event['loss']:.4f}, validation {event['val_loss']:.4f}, {event['seconds']}s)",
                    )
                else:
                    reporter.info(f"workers started: {event}")
            else:
                print(line, end="", file=sys.stderr, flush=True)
        returncode = process.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if process.poll() is None:
            process.kill()
            process.wait()
    if returncode != 0:
        raise RuntimeError(f"torchrun exited with {returncode} (see the worker output above)")


def weights_digest(model: RecsysNet) -> str:
    """A content hash of the weights (names, dtypes, shapes, bytes): equal weights, equal digest."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _existing_mlflow_run(out_uri: str, digest: str) -> str | None:
    """A finished run that already logged these very weights for this output (a retry after logging, before commit)."""
    import mlflow

    runs = mlflow.search_runs(
        filter_string=(
            f"tags.`mltrain.out_uri` = '{out_uri}' and tags.`mltrain.weights_sha256` = '{digest}' "
            "and attributes.status = 'FINISHED'"
        ),
        output_format="list",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def log_to_mlflow(
    args, model_dir: str, metrics: dict[str, Any], digest: str, train_df: pd.DataFrame, eval_df: pd.DataFrame
) -> str:
    """One MLflow run ``recommender-<date>``: params, per-epoch losses, AUC, inputs, the model directory."""
    import mlflow

    from mltrain_assets.workloads._mlflow import ensure_experiment

    ensure_experiment(args.experiment)
    existing = _existing_mlflow_run(args.out_uri, digest)
    if existing:
        return existing
    uris = json.loads(args.interactions_uris)
    with mlflow.start_run(run_name=f"recommender-{args.date}") as run:
        mlflow.set_tags(
            {
                "mltrain.out_uri": args.out_uri,
                "mltrain.date": args.date,
                "mltrain.weights_sha256": digest,
                "mltrain.shuffled_labels": str(bool(args.shuffle_labels)).lower(),
            }
        )
        mlflow.log_params({
            "date": args.date, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "weight_decay": args.weight_decay, "seed": args.seed, "nproc": args.nproc, "nnodes": args.nnodes,
            "backend": args.backend, "device": args.device, "shuffle_labels": bool(args.shuffle_labels),
            "hidden_sizes": list(cfg.HIDDEN_SIZES), "validation_fraction": cfg.VALIDATION_FRACTION,
            "embeddings_uri": args.embeddings_uri, "eval_uri": args.eval_uri, "interactions_uris": json.dumps(uris),
            "resumed_from_epoch": metrics["resumed_from_epoch"],
        })  # fmt: skip
        for epoch, (loss, val_loss) in enumerate(
            zip(metrics["loss_history"], metrics["val_loss_history"], strict=True), start=1
        ):
            mlflow.log_metrics({"train_loss": loss, "val_loss": val_loss}, step=epoch)
        mlflow.log_metrics({key: float(metrics[key]) for key in (
            "auc", "n_train", "n_eval", "final_loss", "val_loss", "base_rate_val_loss", "skill_nats")})  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # source-resolution and integer-schema hints
            train_ds = mlflow.data.from_pandas(
                train_df, source=uris[-1], targets="clicked", name=f"user_interactions[{len(uris)}d<{args.date}]"
            )
            eval_ds = mlflow.data.from_pandas(
                eval_df, source=args.eval_uri, targets="clicked", name=f"user_interactions[{args.date}]"
            )
            mlflow.log_input(train_ds, context="training")
            mlflow.log_input(eval_ds, context="evaluation")
        mlflow.log_artifacts(model_dir, artifact_path=cfg.MODEL_ARTIFACT_PATH)
        return run.info.run_id


def main_body(args: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    from mltrain_assets.workloads.evaluate_recommender import auc_of, evaluate_model_dir

    started = time.monotonic()
    committed = read_manifest(args.out_uri)
    if committed is not None:
        reporter.info(f"{args.out_uri} is already committed; nothing to do")
        return committed["summary"]
    uris = json.loads(args.interactions_uris)
    if not isinstance(uris, list) or not uris:
        raise ValueError("--interactions-uris must be a non-empty JSON list of URIs")
    for uri in [*uris, args.eval_uri, args.embeddings_uri]:
        require_manifest(uri)  # fail before starting workers when an input is not committed
    checkpoint_uri = args.checkpoint_uri or cfg.checkpoint_uri_for(args.out_uri)
    fingerprint = training_fingerprint(args)
    resumed_from, _ = latest_checkpoint(checkpoint_uri, fingerprint, args.epochs)
    reporter.info(f"checkpoints at {checkpoint_uri}; resuming from epoch {resumed_from} of {args.epochs}")
    if resumed_from < args.epochs:
        run_torchrun(torchrun_command(args, checkpoint_uri, resumed_from), worker_environment(args), reporter)
    if args.node_rank != 0:
        return {"node_rank": args.node_rank, "trained": True}

    final_epoch, final = latest_checkpoint(checkpoint_uri, fingerprint, args.epochs)
    if final is None or final_epoch != args.epochs:
        raise RuntimeError(f"training ended without the epoch={args.epochs:03d} checkpoint in {checkpoint_uri}")
    config = json.loads(final["config"])
    model = RecsysNet.from_config(config)
    model.load_state_dict(final["model"])
    loss_history = [float(x) for x in final["loss_history"]]
    val_history = [float(x) for x in final["val_loss_history"]]
    skill = float(final["base_val_loss"]) - val_history[-1]
    no_skill = skill < cfg.MIN_SKILL_NATS
    user_factors, item_factors = load_factors(args.embeddings_uri)
    train_df = load_events(uris)
    eval_df = load_events([args.eval_uri])
    network_auc = None
    if no_skill:
        # Without skill the network's output varies by numerical noise, and AUC (scale-free) would
        # rank by that noise; ship the constant base-rate predictor instead: it ranks nothing. The
        # network's own AUC is kept in the metrics for the record.
        bundle = make_bundle(model, config, user_factors, item_factors)
        network_auc = auc_of(eval_df["clicked"].to_numpy(), score(bundle, eval_df))
        reporter.info(
            f"validation skill {skill:.2e} nats < {cfg.MIN_SKILL_NATS}: shipping the base-rate predictor "
            f"(the network's own AUC on {args.date}: {network_auc:.4f})"
        )
        model.init_output(float(final["base_rate"]))
    trained_digest = weights_digest(model)

    with tempfile.TemporaryDirectory(prefix="recommender-") as tmp:
        model_dir = os.path.join(tmp, "model")
        save_model_dir(model_dir, model, config, user_factors, item_factors)
        auc = evaluate_model_dir(model_dir, eval_df)
        reporter.info(f"AUC on {args.date} (held out): {auc:.4f}")
        metrics = {
            "auc": auc,
            "n_train": int(final["n_train"]),
            "n_validation": int(final["n_validation"]),
            "n_eval": len(eval_df),
            "epochs": args.epochs,
            "resumed_from_epoch": resumed_from,
            "final_loss": loss_history[-1],
            "loss_history": loss_history,
            "val_loss": val_history[-1],
            "val_loss_history": val_history,
            "base_rate": float(final["base_rate"]),
            "base_rate_val_loss": float(final["base_val_loss"]),
            "skill_nats": skill,
            "no_skill_fallback": no_skill,
            "network_auc": network_auc,
            "shuffled_labels": bool(args.shuffle_labels),
            "weights_sha256": trained_digest,
        }
        run_id = log_to_mlflow(args, model_dir, metrics, trained_digest, train_df, eval_df)
        writer = ArtifactWriter(
            args.out_uri,
            producer="mltrain_assets.workloads.train_recommender",
            code_version=cfg.TRAIN_CODE_VERSION,
            inputs={"user_interactions": uris, "eval": args.eval_uri, "interaction_embeddings": args.embeddings_uri},
        )
        for name in MODEL_FILES:
            writer.add_local_file(name, os.path.join(model_dir, name))
        model_uri = f"runs:/{run_id}/{cfg.MODEL_ARTIFACT_PATH}"
        writer.write_json(METRICS_FILE, {**metrics, "mlflow_run_id": run_id, "model_artifact_uri": model_uri})
        summary = {
            "auc": auc,
            "epochs": args.epochs,
            "resumed_from_epoch": resumed_from,
            "final_loss": loss_history[-1],
            "val_loss": val_history[-1],
            "skill_nats": skill,
            "no_skill_fallback": no_skill,
            "mlflow_run_id": run_id,
            "model_artifact_uri": model_uri,
            "n_train": int(final["n_train"]),
            "n_eval": len(eval_df),
            "shuffled_labels": bool(args.shuffle_labels),
            "date": args.date,
            "nproc": args.nproc * args.nnodes,
            "weights_sha256": trained_digest,
            "elapsed_s": round(time.monotonic() - started, 2),
        }
        writer.commit(summary=summary)
    if not args.keep_checkpoints:
        fs, root = filesystem(checkpoint_uri)
        fs.rm(root, recursive=True)
    reporter.info(f"committed {args.out_uri}: {summary}")
    return summary


def main() -> int:
    return run_workload("train_recommender", parser(), main_body)


if __name__ == "__main__":
    raise SystemExit(main())
