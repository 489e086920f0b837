"""The ``torchrun`` target of the recommender training: one DDP worker per process.

``python -m torch.distributed.run … -m mltrain_assets.pipelines.recsys.workloads.train.worker --params JSON``:
the very ``TrainParams`` JSON the launcher received, so the workers train exactly what the
control plane asked for. Rank 0 finds the checkpoint to resume from (the one the launcher saw)
and tells the others.

torchrun starts workers in their own sessions, so killing the launcher's process group
would leave them running. Each worker therefore asks Linux to SIGKILL it when its parent
(the torchrun agent) dies, before anything else happens: the heavy imports (torch, the data)
come after, inside ``train``.

A finished worker leaves with ``os._exit``: everything it produced (checkpoints) is already
durable, and interpreter finalization with live gloo/OpenMP/Arrow threads can hang, which
would keep torchrun waiting for a worker that has in fact finished.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mltrain_assets.pipelines.recsys.params import TrainParams

if TYPE_CHECKING:  # torch and the model load inside ``train``, after ``die_with_parent``
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from mltrain_assets.pipelines.recsys.workloads.features import EncodedRows, FactorTable
    from mltrain_assets.pipelines.recsys.workloads.model import RecsysNet

MODULE = "mltrain_assets.pipelines.recsys.workloads.train.worker"
PROGRESS_MARKER = "MLTRAIN_PROGRESS "  # rank 0's stdout lines the launcher relays as progress


def die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the agent died before the request took effect
        os._exit(1)


def _progress(event: dict[str, Any]) -> None:
    print(PROGRESS_MARKER + json.dumps(event), flush=True)


@dataclass
class _Worker:
    """This process's place in the job: its rank, the world size, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device


@dataclass
class _TrainingData:
    """The window a worker trains on: compact rows and labels, the train/validation split, the factor tables."""

    config: dict[str, Any]
    users: FactorTable
    items: FactorTable
    rows: EncodedRows
    labels: torch.Tensor
    train_index: torch.Tensor
    val_index: torch.Tensor
    base_rate: float

    @property
    def max_position(self) -> int:
        return self.config["max_position"]


@dataclass
class _Run:
    """One worker's training: where it runs, what on, the model, its optimizer and loss, its validation share."""

    worker: _Worker
    data: _TrainingData
    model: RecsysNet
    optimizer: torch.optim.Optimizer
    loss_fn: torch.nn.Module
    my_val: torch.Tensor


def _start_worker(params: TrainParams) -> _Worker:
    """torchrun's rank and world size (checked against the params); deterministic kernels, threads, the device."""
    import torch

    from mltrain_assets.pipelines.recsys.workloads.train.data import threads_per_worker

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size != params.world_size:
        raise RuntimeError(
            f"torchrun started {world_size} workers, the params ask for {params.nnodes} nodes x "
            f"{params.nproc_per_node} = {params.world_size}"
        )
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads_per_worker(params.nproc_per_node))
    if params.device == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return _Worker(rank, world_size, local_rank, device)


def _load_training_data(params: TrainParams) -> _TrainingData:
    """The factor tables, the model config they imply, and the window's rows and labels split for validation."""
    from mltrain_assets.pipelines.recsys.workloads.features import FactorTable, global_click_rate
    from mltrain_assets.pipelines.recsys.workloads.fold_in import stack_tables
    from mltrain_assets.pipelines.recsys.workloads.model import default_config
    from mltrain_assets.pipelines.recsys.workloads.train.data import (
        fresh_users,
        load_item_factors,
        load_window,
        training_labels,
        validation_split,
    )

    item_factors = load_item_factors(params.embeddings_uri)
    rank_dim = len(item_factors.column("factors")[0])
    config = default_config(
        rank_dim, global_ctr=global_click_rate(item_factors), hidden_sizes=list(params.hidden_sizes)
    )
    items = FactorTable.from_arrow(item_factors, "item_id", config["global_ctr"])
    # Each day's users as of that day (fold_in.py): a row never sees its own day's clicks.
    per_day = fresh_users(len(params.interactions_uris), config["global_ctr"])
    users, offsets = stack_tables(per_day)
    max_position = config["max_position"]
    # Compact rows and int8 labels, read a day at a time (train/data.py); features are built per batch.
    rows, clicked = load_window(
        params.interactions_uris, users, items, max_position, list(zip(per_day, offsets, strict=True))
    )
    del per_day
    labels = training_labels(clicked, params.shuffle_labels, params.seed)
    del clicked
    train_index, val_index = validation_split(len(rows), params.seed)
    base_rate = float(labels[train_index].double().mean())
    return _TrainingData(config, users, items, rows, labels, train_index, val_index, base_rate)


def _new_model(params: TrainParams, data: _TrainingData) -> RecsysNet:
    """The seeded initial model, standardized on the training rows, its output bias at the base click rate."""
    import torch

    from mltrain_assets.pipelines.recsys.workloads.features import feature_statistics
    from mltrain_assets.pipelines.recsys.workloads.model import RecsysNet

    torch.manual_seed(params.seed)
    model = RecsysNet.from_config(data.config)
    model.set_standardization(
        *feature_statistics(data.rows, data.users, data.items, data.max_position, index=data.train_index)
    )
    model.init_output(data.base_rate)
    return model


def _move_to_device(data: _TrainingData, device: torch.device) -> None:
    data.rows = data.rows.to(device)
    data.labels = data.labels.to(device)
    data.train_index, data.val_index = data.train_index.to(device), data.val_index.to(device)
    users, items = data.users, data.items
    users.vectors, users.stats = users.vectors.to(device), users.stats.to(device)
    items.vectors, items.stats = items.vectors.to(device), items.stats.to(device)


def _prepare_run(params: TrainParams, worker: _Worker) -> _Run:
    """Load the data, build the model, put both on this worker's device; the optimizer and the loss."""
    import torch

    data = _load_training_data(params)
    model = _new_model(params, data).to(worker.device)
    if worker.device.type != "cpu":
        _move_to_device(data, worker.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")
    my_val = data.val_index[worker.rank :: worker.world_size]
    return _Run(worker, data, model, optimizer, loss_fn, my_val)


def _validation_loss(run: _Run, constant_logit: float | None = None) -> float:
    """The mean validation loss over all workers: of the model, or of one ``constant_logit`` for every row."""
    import torch
    import torch.distributed as dist

    from mltrain_assets.pipelines.recsys.workloads.features import encode

    data, device = run.data, run.worker.device
    with torch.no_grad():
        totals = torch.zeros(2, dtype=torch.float64, device=device)
        for begin in range(0, len(run.my_val), 65_536):
            index = run.my_val[begin : begin + 65_536]
            if constant_logit is None:
                logits = run.model(encode(data.rows.take(index), data.users, data.items, data.max_position))
            else:
                logits = torch.full((len(index),), constant_logit, device=device)
            totals += torch.stack(
                [
                    run.loss_fn(logits, data.labels[index].float()).double(),
                    torch.tensor(float(len(index)), dtype=torch.float64, device=device),
                ]
            )
        dist.all_reduce(totals)
        return float(totals[0] / totals[1])


def _resume(run: _Run, params: TrainParams, checkpoints: str, fingerprint: str) -> tuple[int, list[float], list[float]]:
    """The epoch to resume after (0: none) and the loss histories so far; the model and optimizer restored."""
    import torch
    import torch.distributed as dist

    from mltrain_assets.pipelines.recsys.workloads.train.checkpoints import latest_checkpoint, read_checkpoint

    # Rank 0 decides where to resume; everyone loads the same file.
    start = torch.tensor([0], dtype=torch.int64)
    if run.worker.rank == 0:
        start[0] = latest_checkpoint(checkpoints, fingerprint, params.epochs)[0]
    start = start.to(run.worker.device)
    dist.broadcast(start, src=0)
    start_epoch = int(start[0].item())
    if start_epoch == 0:
        return 0, [], []
    state = read_checkpoint(checkpoints, start_epoch)
    if state.get("fingerprint") != fingerprint:
        raise RuntimeError(f"checkpoint epoch={start_epoch} belongs to another training setup")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return start_epoch, [float(x) for x in state["loss_history"]], [float(x) for x in state["val_loss_history"]]


def _train_epoch(run: _Run, ddp: DistributedDataParallel, params: TrainParams, epoch: int) -> float:
    """One pass over this worker's share of the training rows; the mean training loss over all workers."""
    import torch
    import torch.distributed as dist

    from mltrain_assets.pipelines.recsys.workloads.features import encode
    from mltrain_assets.pipelines.recsys.workloads.train.data import epoch_learning_rate, epoch_order

    data, worker = run.data, run.worker
    # Data order depends on (seed, epoch) only: DistributedSampler's, as one tensor.
    positions = epoch_order(len(data.train_index), worker.world_size, worker.rank, params.seed, epoch)
    order = data.train_index[positions.to(worker.device)]
    for group in run.optimizer.param_groups:
        group["lr"] = epoch_learning_rate(params.lr, epoch)
    ddp.train()
    totals = torch.zeros(2, dtype=torch.float64, device=worker.device)
    for begin in range(0, len(order), params.batch_size):
        index = order[begin : begin + params.batch_size]
        features = encode(data.rows.take(index), data.users, data.items, data.max_position)
        loss_sum = run.loss_fn(ddp(features), data.labels[index].float())
        run.optimizer.zero_grad(set_to_none=True)
        (loss_sum / len(index)).backward()
        run.optimizer.step()
        totals += torch.stack(
            [loss_sum.detach().double(), torch.tensor(float(len(index)), dtype=torch.float64, device=worker.device)]
        )
    dist.all_reduce(totals)
    return float(totals[0] / totals[1])


def _checkpoint_payload(
    run: _Run,
    epoch: int,
    fingerprint: str,
    loss_history: list[float],
    val_history: list[float],
    base_val_loss: float,
) -> dict[str, Any]:
    """What rank 0 checkpoints after an epoch: the model, optimizer and RNG states, the histories so far."""
    import torch

    data = run.data
    return {
        "epoch": epoch,
        "fingerprint": fingerprint,
        "world_size": run.worker.world_size,
        "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        "optimizer": run.optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "loss_history": torch.tensor(loss_history, dtype=torch.float64),
        "val_loss_history": torch.tensor(val_history, dtype=torch.float64),
        "base_val_loss": base_val_loss,
        "base_rate": data.base_rate,
        "n_train": len(data.train_index),
        "n_validation": len(data.val_index),
        "config": json.dumps(data.config, sort_keys=True),
    }


def train(params: TrainParams) -> int:
    """Train under DDP; rank 0 checkpoints after every epoch. The launcher reads the last checkpoint."""
    import numpy as np
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from mltrain_assets.pipelines.recsys.workloads.train.checkpoints import (
        checkpoint_uri,
        training_fingerprint,
        write_checkpoint,
    )

    worker = _start_worker(params)
    checkpoints = checkpoint_uri(params)
    dist.init_process_group(backend=params.backend)
    try:
        fingerprint = training_fingerprint(params)
        started = time.monotonic()
        run = _prepare_run(params, worker)
        base_rate = run.data.base_rate
        base_val_loss = _validation_loss(run, float(np.log(base_rate / (1 - base_rate))))
        start_epoch, loss_history, val_history = _resume(run, params, checkpoints, fingerprint)
        if worker.rank == 0:
            _progress(
                {
                    "event": "start",
                    "resumed_from_epoch": start_epoch,
                    "epochs": params.epochs,
                    "train_rows": len(run.data.train_index),
                    "validation_rows": len(run.data.val_index),
                    "world_size": worker.world_size,
                    "load_s": round(time.monotonic() - started, 2),
                }
            )

        ddp = DistributedDataParallel(
            run.model, device_ids=[worker.local_rank] if worker.device.type == "cuda" else None
        )
        _ALIVE_UNTIL_EXIT.append(ddp)
        for epoch in range(start_epoch + 1, params.epochs + 1):
            epoch_started = time.monotonic()
            loss_history.append(_train_epoch(run, ddp, params, epoch))
            run.model.eval()
            val_history.append(_validation_loss(run))
            if worker.rank == 0:
                payload = _checkpoint_payload(run, epoch, fingerprint, loss_history, val_history, base_val_loss)
                write_checkpoint(checkpoints, epoch, payload)
                _progress(
                    {
                        "event": "epoch",
                        "epoch": epoch,
                        "epochs": params.epochs,
                        "loss": loss_history[-1],
                        "val_loss": val_history[-1],
                        "seconds": round(time.monotonic() - epoch_started, 2),
                    }
                )
            dist.barrier()  # no rank starts the next epoch before the checkpoint is durable
    finally:
        dist.destroy_process_group()
    return 0


# DDP's Reducer holds the gloo process group. Freeing it (when ``train`` returns) joins gloo's worker
# threads with the GIL held, and one of them may be freeing a finished barrier's tensors, which needs
# the GIL: a deadlock (seen once at the end of a 2-node k8s-local run, node 0 hung in
# ~ProcessGroupGloo). The process ends with os._exit right after, so the Reducer is never freed.
_ALIVE_UNTIL_EXIT: list[object] = []


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the launcher's ``--params`` (the one parser every workload uses) and train."""
    return train(TrainParams.parse_args(argv))


if __name__ == "__main__":
    die_with_parent()
    try:
        code = main()
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
