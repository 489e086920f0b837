"""MLflow for the recommender training: one run per trained model, found again on a retry."""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Any

import mlflow
import pandas as pd

from mltrain_assets.workloads.common.tracking import ensure_experiment, use_tracking
from mltrain_assets.workloads.recsys import contract
from mltrain_assets.workloads.recsys.model import RecsysNet
from mltrain_assets.workloads.recsys.params import TrainParams

AGGREGATE_METRICS = ("auc", "n_train", "n_eval", "final_loss", "val_loss", "base_rate_val_loss", "skill_nats")


def weights_digest(model: RecsysNet) -> str:
    """A content hash of the weights (names, dtypes, shapes, bytes): equal weights, equal digest."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def existing_run(out_uri: str, digest: str) -> str | None:
    """A finished run that already logged these very weights for this output (a retry after logging, before commit)."""
    runs = mlflow.search_runs(
        filter_string=(
            f"tags.`mltrain.out_uri` = '{out_uri}' and tags.`mltrain.weights_sha256` = '{digest}' "
            "and attributes.status = 'FINISHED'"
        ),
        output_format="list",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def log_training_run(
    params: TrainParams,
    model_dir: str,
    metrics: dict[str, Any],
    digest: str,
    train_df: pd.DataFrame,
    eval_df: pd.DataFrame,
) -> str:
    """One MLflow run ``recommender-<date>``: params, per-epoch losses, AUC, inputs, the model directory."""
    use_tracking(params.mlflow)
    ensure_experiment(params.experiment)
    existing = existing_run(params.out_uri, digest)
    if existing:
        return existing
    uris = list(params.interactions_uris)
    with mlflow.start_run(run_name=f"recommender-{params.date}") as run:
        mlflow.set_tags(
            {
                "mltrain.out_uri": params.out_uri,
                "mltrain.date": params.date,
                "mltrain.weights_sha256": digest,
                "mltrain.shuffled_labels": str(bool(params.shuffle_labels)).lower(),
            }
        )
        mlflow.log_params({
            "date": params.date, "epochs": params.epochs, "batch_size": params.batch_size, "lr": params.lr,
            "weight_decay": params.weight_decay, "seed": params.seed, "nproc": params.nproc_per_node,
            "nnodes": params.nnodes, "world_size": params.world_size, "backend": params.backend,
            "device": params.device, "shuffle_labels": bool(params.shuffle_labels),
            "hidden_sizes": list(contract.HIDDEN_SIZES), "validation_fraction": contract.VALIDATION_FRACTION,
            "embeddings_uri": params.embeddings_uri, "eval_uri": params.eval_uri, "interactions_uris": json.dumps(uris),
            "resumed_from_epoch": metrics["resumed_from_epoch"],
        })  # fmt: skip
        for epoch, (loss, val_loss) in enumerate(
            zip(metrics["loss_history"], metrics["val_loss_history"], strict=True), start=1
        ):
            mlflow.log_metrics({"train_loss": loss, "val_loss": val_loss}, step=epoch)
        mlflow.log_metrics({key: float(metrics[key]) for key in AGGREGATE_METRICS})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # source-resolution and integer-schema hints
            train_ds = mlflow.data.from_pandas(
                train_df, source=uris[-1], targets="clicked", name=f"user_interactions[{len(uris)}d<{params.date}]"
            )
            eval_ds = mlflow.data.from_pandas(
                eval_df, source=params.eval_uri, targets="clicked", name=f"user_interactions[{params.date}]"
            )
            mlflow.log_input(train_ds, context="training")
            mlflow.log_input(eval_ds, context="evaluation")
        mlflow.log_artifacts(model_dir, artifact_path=contract.MODEL_ARTIFACT_PATH)
        return run.info.run_id
