"""MLflow for the recommender training: one run per trained model, found again on a retry.

The run ``recommender-<date>`` holds params, the loss curves (``train_loss``/``val_loss`` at
``step=epoch``, 1..epochs, nothing else under those names), one-value metrics (``auc``,
``final_train_loss``, ``final_val_loss``, …), the training and evaluation datasets, and the model:
a ``pyfunc`` logged from code (``recsys/pyfunc.py``) with the model directory as its artifact and
a signature (impression columns -> ``click_probability``). ``runs:/<run>/model`` resolves to it.
Tags: ``mltrain.date``, ``mltrain.out_uri``, ``mltrain.weights_sha256`` and, launched by Dagster,
``mltrain.partition``, ``mltrain.dagster_run_id`` and links to the Dagster run and asset partition.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.digest_utils import MAX_ROWS, get_normalized_md5_digest
from mlflow.data.pandas_dataset import PandasDataset

from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.params import TrainParams
from mltrain_assets.pipelines.recsys.workloads.model import (
    MODEL_DIR_ARTIFACT,
    OUTPUT_COLUMN,
    RecsysNet,
    example_input,
    load_model_dir,
    score,
)
from mltrain_assets.pipelines.recsys.workloads.train.data import window_head, window_rows
from mltrain_assets.workloads.common.tracking import ensure_experiment, run_tags, use_tracking

# One value each (step 0). The curves are train_loss/val_loss per epoch; their last values are the final_* here.
AGGREGATE_METRICS = {
    "auc": "auc",
    "n_train": "n_train",
    "n_eval": "n_eval",
    "final_train_loss": "final_loss",
    "final_val_loss": "val_loss",
    "base_rate_val_loss": "base_rate_val_loss",
    "skill_nats": "skill_nats",
}
# The pyfunc model's code (MLflow "models from code"): its source is logged, never a pickle.
PYFUNC_CODE = Path(__file__).resolve().parents[1] / "pyfunc.py"
PYFUNC_REQUIREMENTS = ("torch", "numpy", "pandas", "pyarrow", "fsspec", "mlflow")


def weights_digest(model: RecsysNet) -> str:
    """A content hash of the weights (names, dtypes, shapes, bytes): equal weights, equal digest."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


class WindowDataset(PandasDataset):
    """MLflow's pandas dataset of a window too large to hold as pandas: its first ``MAX_ROWS`` rows stand in.

    ``from_pandas`` digests a frame's first ``MAX_ROWS`` rows, its length and column names, takes
    the schema from the dtypes and the profile from the shape, and (to pick the string columns)
    calls ``type`` on every cell, minutes at 20M rows. The same digest, schema and profile come
    from the head and the true row count, so the logged record is the one ``from_pandas`` of the
    whole window would log (a test holds the two equal).
    """

    def __init__(self, head: pd.DataFrame, n_rows: int, source: str, targets: str, name: str):
        self._n_rows = n_rows
        super().__init__(
            head.head(MAX_ROWS),
            source=resolve_dataset_source(source),
            targets=targets,
            name=name,
            digest=_window_digest(head.head(MAX_ROWS), n_rows),
        )

    @property
    def profile(self) -> dict[str, int]:
        return {"num_rows": self._n_rows, "num_elements": self._n_rows * len(self.df.columns)}


def _window_digest(head: pd.DataFrame, n_rows: int) -> str:
    """``mlflow.data.digest_utils.compute_pandas_digest`` of a frame whose first rows are ``head`` and length ``n_rows``."""
    string_columns = head.columns[head.map(lambda value: type(value) is str).all(0)]
    numeric_columns = head.select_dtypes(include=[np.number]).columns
    hashed = head[string_columns.union(numeric_columns)]
    return get_normalized_md5_digest(
        [pd.util.hash_pandas_object(hashed).values, np.int64(n_rows)] + [str(x).encode() for x in head.columns]
    )


def window_dataset(uris: list[str], source: str, name: str) -> WindowDataset:
    """The committed days at ``uris`` as an MLflow dataset, read no further than its first ``MAX_ROWS`` rows."""
    return WindowDataset(window_head(uris, MAX_ROWS), sum(window_rows(uris)), source, "clicked", name)


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
                **run_tags(params.mlflow),
            }
        )
        mlflow.log_params({
            "date": params.date, "epochs": params.epochs, "batch_size": params.batch_size, "lr": params.lr,
            "weight_decay": params.weight_decay, "seed": params.seed, "nproc": params.nproc_per_node,
            "nnodes": params.nnodes, "world_size": params.world_size, "backend": params.backend,
            "device": params.device, "shuffle_labels": bool(params.shuffle_labels),
            "hidden_sizes": list(params.hidden_sizes), "validation_fraction": contract.VALIDATION_FRACTION,
            "embeddings_uri": params.embeddings_uri, "eval_uri": params.eval_uri, "interactions_uris": json.dumps(uris),
            "resumed_from_epoch": metrics["resumed_from_epoch"],
        })  # fmt: skip
        for epoch, (loss, val_loss) in enumerate(
            zip(metrics["loss_history"], metrics["val_loss_history"], strict=True), start=1
        ):
            mlflow.log_metrics({"train_loss": loss, "val_loss": val_loss}, step=epoch)
        mlflow.log_metrics({name: float(metrics[key]) for name, key in AGGREGATE_METRICS.items()})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # source-resolution and integer-schema hints
            train_ds = window_dataset(uris, uris[-1], f"user_interactions[{len(uris)}d<{params.date}]")
            eval_ds = window_dataset([params.eval_uri], params.eval_uri, f"user_interactions[{params.date}]")
            mlflow.log_input(train_ds, context="training")
            mlflow.log_input(eval_ds, context="evaluation")
        log_pyfunc_model(model_dir)
        return run.info.run_id


def log_pyfunc_model(model_dir: str) -> Any:
    """Log the model directory as the run's ``model``: a pyfunc from code, with signature and input example."""
    from mlflow.models import infer_signature

    bundle = load_model_dir(model_dir)
    example = example_input(bundle)
    # What RecommenderModel.predict returns for the example (without importing the models-from-code file).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = infer_signature(example, pd.DataFrame({OUTPUT_COLUMN: score(bundle, example).astype("float64")}))
    with warnings.catch_warnings():
        # The ids are integers and never missing: MLflow's hint about integer columns does not apply.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        return mlflow.pyfunc.log_model(
            name=contract.MODEL_ARTIFACT_PATH,
            python_model=str(PYFUNC_CODE),
            artifacts={MODEL_DIR_ARTIFACT: model_dir},
            signature=signature,
            input_example=example,
            # Explicit requirements: inferring them would load the model in a subprocess.
            pip_requirements=_requirements(),
        )


def _requirements() -> list[str]:
    pins = []
    for name in PYFUNC_REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(name)
    return pins
