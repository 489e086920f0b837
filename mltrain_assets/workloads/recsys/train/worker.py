"""The ``torchrun`` target of the recommender training: one DDP worker per process.

``python -m torch.distributed.run … -m mltrain_assets.workloads.recsys.train.worker --params JSON``:
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
from typing import Any

from mltrain_assets.workloads.recsys.params import TrainParams

MODULE = "mltrain_assets.workloads.recsys.train.worker"
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


def train(params: TrainParams) -> int:
    """Train under DDP; rank 0 checkpoints after every epoch. The launcher reads the last checkpoint."""
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from mltrain_assets.workloads.recsys.model import (
        RecsysNet,
        default_config,
        encode,
        feature_statistics,
        global_click_rate,
        make_bundle,
    )
    from mltrain_assets.workloads.recsys.train.checkpoints import (
        checkpoint_uri,
        latest_checkpoint,
        read_checkpoint,
        training_fingerprint,
        write_checkpoint,
    )
    from mltrain_assets.workloads.recsys.train.data import (
        epoch_order,
        load_factors,
        load_window,
        threads_per_worker,
        training_labels,
        validation_split,
    )

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
    checkpoints = checkpoint_uri(params)
    dist.init_process_group(backend=params.backend)
    try:
        fingerprint = training_fingerprint(params)
        started = time.monotonic()
        user_factors, item_factors = load_factors(params.embeddings_uri)
        rank_dim = len(user_factors.column("factors")[0])
        config = default_config(rank_dim, global_ctr=global_click_rate(item_factors))
        bundle = make_bundle(RecsysNet.from_config(config), config, user_factors, item_factors)
        users, items = bundle.users, bundle.items
        max_position = config["max_position"]
        # Compact rows and int8 labels, read a day at a time (train/data.py); features are built per batch.
        rows, clicked = load_window(params.interactions_uris, users, items, max_position)
        labels = training_labels(clicked, params.shuffle_labels, params.seed)
        del clicked
        train_index, val_index = validation_split(len(rows), params.seed)
        base_rate = float(labels[train_index].double().mean())

        torch.manual_seed(params.seed)
        model = RecsysNet.from_config(config)
        model.set_standardization(*feature_statistics(rows, users, items, max_position, index=train_index))
        model.init_output(base_rate)
        model = model.to(device)
        if device.type != "cpu":
            rows = rows.to(device)
            labels = labels.to(device)
            train_index, val_index = train_index.to(device), val_index.to(device)
            users.vectors, users.stats = users.vectors.to(device), users.stats.to(device)
            items.vectors, items.stats = items.vectors.to(device), items.stats.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
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
                        loss_fn(logits, labels[index].float()).double(),
                        torch.tensor(float(len(index)), dtype=torch.float64, device=device),
                    ]
                )
            dist.all_reduce(totals)
            return float(totals[0] / totals[1])

        base_val_loss = validation_loss(float(np.log(base_rate / (1 - base_rate))))
        loss_history: list[float] = []
        val_history: list[float] = []

        # Rank 0 decides where to resume; everyone loads the same file.
        start = torch.tensor([0], dtype=torch.int64)
        if rank == 0:
            start[0] = latest_checkpoint(checkpoints, fingerprint, params.epochs)[0]
        start = start.to(device)
        dist.broadcast(start, src=0)
        start_epoch = int(start[0].item())
        if start_epoch > 0:
            state = read_checkpoint(checkpoints, start_epoch)
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
                    "epochs": params.epochs,
                    "train_rows": len(train_index),
                    "validation_rows": len(val_index),
                    "world_size": world_size,
                    "load_s": round(time.monotonic() - started, 2),
                }
            )

        ddp = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
        for epoch in range(start_epoch + 1, params.epochs + 1):
            epoch_started = time.monotonic()
            # Data order depends on (seed, epoch) only: DistributedSampler's, as one tensor.
            positions = epoch_order(len(train_index), world_size, rank, params.seed, epoch)
            order = train_index[positions.to(device)]
            ddp.train()
            totals = torch.zeros(2, dtype=torch.float64, device=device)
            for begin in range(0, len(order), params.batch_size):
                index = order[begin : begin + params.batch_size]
                features = encode(rows.take(index), users, items, max_position)
                loss_sum = loss_fn(ddp(features), labels[index].float())
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
