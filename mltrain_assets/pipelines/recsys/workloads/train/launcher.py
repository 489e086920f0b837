"""Distributed training of the click model (PyTorch DDP under ``torchrun``), with per-epoch checkpoints.

``python -m mltrain_assets.pipelines.recsys.workloads.train.launcher --params JSON`` (``TrainParams``).

This process (launched by Dagster Pipes like any workload) checks that its inputs are committed,
starts torchrun (``agent.py``: torchrun whose stores listen on loopback, or the pod's IP on a
multi-node Job, never on every interface) ``--standalone --nnodes 1 --nproc-per-node N -m
mltrain_assets.pipelines.recsys.workloads.train.worker --params JSON`` with the very params it received,
relays the workers' progress, then (node 0 only)
evaluates AUC on the held-out day, logs the run to MLflow and commits the model directory plus
``metrics.json`` into ``out_uri``.

Checkpoints (``checkpoints``): rank 0 writes one per epoch next to the version folder. On start
the latest checkpoint of the same training setup is resumed, and the final weights are
bit-for-bit those of an uninterrupted run: the data order of epoch ``e`` depends only on
``(seed, e)``, algorithms are deterministic, and the RNG state is restored.

Backend and device are params: ``gloo``/``cpu`` by default, ``nccl``/``cuda`` (one GPU per local
rank) on GPU nodes. ``nnodes``/``rdzv_endpoint`` span several nodes: each node runs this launcher
with the same params (``node_rank=-1``: the node's Indexed Job completion index); the world is
``nnodes * nproc_per_node`` workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import pyarrow as pa

from mltrain_assets.artifacts import ArtifactWriter, read_manifest, require_manifest
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.params import TrainParams
from mltrain_assets.pipelines.recsys.workloads.evaluate import auc_of, labels_and_scores, review_figures
from mltrain_assets.pipelines.recsys.workloads.model import MODEL_FILES, RecsysNet, make_bundle, save_model_dir, score
from mltrain_assets.pipelines.recsys.workloads.train import agent, checkpoints, worker
from mltrain_assets.pipelines.recsys.workloads.train.data import (
    FRESH_USERS_ENV,
    click_labels,
    prepare_fresh_users,
    read_events,
    threads_per_worker,
)
from mltrain_assets.pipelines.recsys.workloads.train.tracking import log_training_run, weights_digest
from mltrain_assets.workloads.common.runtime import Reporter, workload_main

METRICS_FILE = "metrics.json"
LOOPBACK = "127.0.0.1"
POD_IP_ENV = "MLTRAIN_POD_IP"  # set from status.podIP in the training pods (resources/compute.py)
PRODUCER = "mltrain_assets.workloads.train_recommender"
BACKENDS = ("gloo", "nccl")
# Worker-group restarts a multi-node agent allows: each lost node (evicted, preempted) costs one.
MAX_RESTARTS = 3
DEVICES = ("cpu", "cuda")


def validate(params: TrainParams) -> None:
    """Refuse params that cannot train, and inputs not committed, before any worker starts."""
    params.require_output()
    if not params.interactions_uris:
        raise ValueError("TrainParams.interactions_uris must be a non-empty list of URIs")
    if params.backend not in BACKENDS:
        raise ValueError(f"TrainParams.backend must be one of {list(BACKENDS)}, got {params.backend!r}")
    if params.device not in DEVICES:
        raise ValueError(f"TrainParams.device must be one of {list(DEVICES)}, got {params.device!r}")
    if params.nnodes > 1 and not params.rdzv_endpoint:
        raise ValueError(f"TrainParams.nnodes={params.nnodes} needs rdzv_endpoint (host:port of the c10d rendezvous)")
    for uri in [*params.interactions_uris, params.eval_uri, params.embeddings_uri]:
        require_manifest(uri)  # fail before starting workers when an input is not committed


def torchrun_command(params: TrainParams, python: str = sys.executable) -> list[str]:
    """torchrun over ``params.nnodes`` nodes x ``params.nproc_per_node`` workers, each given ``params`` unchanged."""
    if params.rdzv_endpoint:
        rendezvous = [
            "--nnodes",
            str(params.nnodes),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            params.rdzv_endpoint,
            "--rdzv-id",
            checkpoints.training_fingerprint(params),  # every node of this training computes the same
            # Node 0 hosts the rendezvous store, decided by rank rather than by matching host names.
            "--rdzv-conf",
            f"is_host={str(params.resolved_node_rank() == 0).lower()}",
        ]
    else:
        # --standalone picks a free port itself: no MASTER_PORT to manage, no clash with a killed run.
        rendezvous = ["--standalone", "--nnodes", "1"]
    # Several nodes: when one is evicted and its pod replaced, the others' workers fail at their next collective,
    # their agents restart them and re-rendezvous with the replacement, and the workers resume from the last
    # checkpoint. One node: a restart would only repeat the failure (the step's retry resumes it instead).
    restarts = MAX_RESTARTS if params.rdzv_endpoint else 0
    # The agent is torchrun with its stores listening on the bind address only (agent.py).
    return [python, "-m", agent.__name__, *rendezvous, "--local-addr", rendezvous_bind_address(params),
            "--nproc-per-node", str(params.nproc_per_node), "--max-restarts", str(restarts),
            "-m", worker.MODULE, *params.argv()]  # fmt: skip


def rendezvous_bind_address(params: TrainParams) -> str:
    """Where this node's rendezvous and worker sockets listen: loopback for one node, else the pod's IP."""
    if params.nnodes == 1:
        return LOOPBACK
    pod_ip = os.environ.get(POD_IP_ENV)
    if not pod_ip:
        raise ValueError(
            f"{params.nnodes}-node training needs ${POD_IP_ENV} (the pod's IP, from the downward API) to bind its "
            "rendezvous to the pod network"
        )
    return pod_ip


def worker_environment(params: TrainParams) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES_")}  # workers do not talk to Dagster
    env["OMP_NUM_THREADS"] = str(threads_per_worker(params.nproc_per_node))
    env["PYTHONUNBUFFERED"] = "1"
    address = rendezvous_bind_address(params)
    env[agent.BIND_ENV] = address
    interface = agent.interface_of(address)
    if interface:
        # Gloo's and NCCL's pair sockets on the rendezvous' interface too (a deployment's own choice wins).
        env.setdefault("GLOO_SOCKET_IFNAME", interface)
        env.setdefault("NCCL_SOCKET_IFNAME", interface)
    if params.device == "cuda":
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
            if line.startswith(worker.PROGRESS_MARKER):
                event = json.loads(line[len(worker.PROGRESS_MARKER) :])
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


def evaluate_and_commit(
    params: TrainParams,
    checkpoint_uri: str,
    fingerprint: str,
    resumed_from: int,
    reporter: Reporter,
    started: float,
    user_factors: pa.Table,
    item_factors: pa.Table,
) -> dict[str, Any]:
    """Node 0, after training: AUC of the final checkpoint on the held-out day, the MLflow run, the commit."""
    final_epoch, final = checkpoints.latest_checkpoint(checkpoint_uri, fingerprint, params.epochs)
    if final is None or final_epoch != params.epochs:
        raise RuntimeError(f"training ended without the epoch={params.epochs:03d} checkpoint in {checkpoint_uri}")
    config = json.loads(final["config"])
    model = RecsysNet.from_config(config)
    model.load_state_dict(final["model"])
    loss_history = [float(x) for x in final["loss_history"]]
    val_history = [float(x) for x in final["val_loss_history"]]
    skill = float(final["base_val_loss"]) - val_history[-1]
    no_skill = skill < contract.MIN_SKILL_NATS
    held_out = read_events(params.eval_uri)  # Arrow: the day is scored without a pandas copy
    network_auc = None
    if no_skill:
        # Without skill the network's output varies by numerical noise, and AUC (scale-free) would
        # rank by that noise; ship the constant base-rate predictor instead: it ranks nothing. The
        # network's own AUC is kept in the metrics for the record.
        bundle = make_bundle(model, config, user_factors, item_factors)
        network_auc = auc_of(click_labels(held_out), score(bundle, held_out))
        reporter.info(
            f"validation skill {skill:.2e} nats < {contract.MIN_SKILL_NATS}: shipping the base-rate predictor "
            f"(the network's own AUC on {params.date}: {network_auc:.4f})"
        )
        model.init_output(float(final["base_rate"]))
    trained_digest = weights_digest(model)

    with tempfile.TemporaryDirectory(prefix="recommender-") as tmp:
        model_dir = os.path.join(tmp, "model")
        save_model_dir(model_dir, model, config, user_factors, item_factors)
        labels, scores = labels_and_scores(model_dir, held_out)
        auc = auc_of(labels, scores)
        reporter.info(f"AUC on {params.date} (held out): {auc:.4f}")
        metrics = {
            "auc": auc,
            "n_train": int(final["n_train"]),
            "n_validation": int(final["n_validation"]),
            "n_eval": held_out.num_rows,
            "epochs": params.epochs,
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
            "shuffled_labels": bool(params.shuffle_labels),
            "weights_sha256": trained_digest,
        }
        run_id = log_training_run(params, model_dir, metrics, trained_digest)
        log_review_figures(run_id, labels, scores, f"recommender {params.date} (held-out day)")
        writer = ArtifactWriter(
            params.out_uri,
            producer=PRODUCER,
            code_version=TrainParams.code_version,
            inputs={
                "user_interactions": list(params.interactions_uris),
                "eval": params.eval_uri,
                "interaction_embeddings": params.embeddings_uri,
            },
        )
        for name in MODEL_FILES:
            writer.add_local_file(name, os.path.join(model_dir, name))
        model_uri = f"runs:/{run_id}/{contract.MODEL_ARTIFACT_PATH}"
        writer.write_json(METRICS_FILE, {**metrics, "mlflow_run_id": run_id, "model_artifact_uri": model_uri})
        summary = {
            "auc": auc,
            "epochs": params.epochs,
            "resumed_from_epoch": resumed_from,
            "final_loss": loss_history[-1],
            "val_loss": val_history[-1],
            "skill_nats": skill,
            "no_skill_fallback": no_skill,
            "mlflow_run_id": run_id,
            "model_artifact_uri": model_uri,
            "n_train": int(final["n_train"]),
            "n_eval": held_out.num_rows,
            "shuffled_labels": bool(params.shuffle_labels),
            "date": params.date,
            "nproc": params.world_size,
            "world_size": params.world_size,
            "weights_sha256": trained_digest,
            "elapsed_s": round(time.monotonic() - started, 2),
        }
        writer.commit(summary=summary)
    return summary


def log_review_figures(run_id: str, labels, scores, title: str) -> list[str]:
    """ROC curve and calibration on the held-out day, as artifacts of the run the registered version points to."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()  # the store log_training_run used (use_tracking set it)
    figures = review_figures(labels, scores, title)
    for path, figure in figures.items():
        client.log_figure(run_id, figure, path)  # a retry re-logs the same figure under the same path
    return list(figures)


def run(params: TrainParams, reporter: Reporter) -> dict[str, Any]:
    started = time.monotonic()
    if params.out_uri:
        committed = read_manifest(params.out_uri)
        if committed is not None:
            reporter.info(f"{params.out_uri} is already committed; nothing to do")
            return committed["summary"]
    validate(params)
    checkpoint_uri = checkpoints.checkpoint_uri(params)
    fingerprint = checkpoints.training_fingerprint(params)
    resumed_from, _ = checkpoints.latest_checkpoint(checkpoint_uri, fingerprint, params.epochs)
    reporter.info(f"checkpoints at {checkpoint_uri}; resuming from epoch {resumed_from} of {params.epochs}")
    node_rank = params.resolved_node_rank()
    training = resumed_from < params.epochs
    with tempfile.TemporaryDirectory(prefix="fresh-users-") as fresh:
        # The users' vectors solved once per node (fold_in.py), not once per worker; the model's on node 0 only.
        solving = time.monotonic()
        user_factors, item_factors = prepare_fresh_users(
            params.embeddings_uri, params.interactions_uris, fresh if training else None, model_users=node_rank == 0
        )
        reporter.info(f"fresh user vectors solved in {time.monotonic() - solving:.1f}s")
        if training:
            run_torchrun(torchrun_command(params), {**worker_environment(params), FRESH_USERS_ENV: fresh}, reporter)
    if user_factors is None:  # solved on node 0 only: the other nodes train, node 0 also evaluates and commits
        reporter.info(f"node {node_rank} of {params.nnodes}: trained; node 0 evaluates and commits")
        return {"node_rank": node_rank, "trained": True}
    summary = evaluate_and_commit(
        params, checkpoint_uri, fingerprint, resumed_from, reporter, started, user_factors, item_factors
    )
    if not params.keep_checkpoints:
        checkpoints.remove_checkpoints(checkpoint_uri)
    reporter.info(f"committed {params.out_uri}: {summary}")
    return summary


main = workload_main(TrainParams, run)

if __name__ == "__main__":
    raise SystemExit(main())
