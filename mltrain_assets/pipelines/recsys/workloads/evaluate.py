"""Score a recommender model on one held-out day: ``{auc, n}``.

``python -m mltrain_assets.pipelines.recsys.workloads.evaluate --params JSON`` (``EvaluateParams``).

``model_uri`` is an MLflow model URI (``models:/recommender/3``, ``models:/recommender@staging``,
``runs:/<run_id>/model``, ``models:/m-<id>``), or a model directory (local path, ``file://`` or
``s3://``, e.g. a committed ``recommender_model`` version). An MLflow URI is downloaded: the
pyfunc model's ``model_dir`` artifact, or the bare model directory older versions registered. The control plane scores the current ``staging``
model and the challenger on the same day to decide a promotion.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.metrics import roc_auc_score

from mltrain_assets.pipelines.recsys.params import EvaluateParams
from mltrain_assets.pipelines.recsys.workloads.model import load_model_dir, resolve_model_dir, score
from mltrain_assets.pipelines.recsys.workloads.train.data import click_labels, read_events
from mltrain_assets.workloads.common.runtime import DataRejected, Reporter, workload_main
from mltrain_assets.workloads.common.tracking import use_tracking

MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")


def is_mlflow_uri(model_uri: str) -> bool:
    return model_uri.startswith(MLFLOW_SCHEMES)


@contextmanager
def model_directory(model_uri: str) -> Iterator[str]:
    """A readable model directory for ``model_uri``: MLflow artifacts are downloaded to a temp folder."""
    if not is_mlflow_uri(model_uri):
        yield model_uri
        return
    import mlflow

    with tempfile.TemporaryDirectory(prefix="recommender-model-") as tmp:
        yield resolve_model_dir(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))


def auc_of(labels: np.ndarray, scores: np.ndarray, what: str = "eval day") -> float:
    labels = np.asarray(labels)
    positives = int(labels.sum())
    if positives == 0 or positives == len(labels):
        raise DataRejected(f"{what}: rule both_classes_present failed: {positives} clicks in {len(labels)} impressions")
    return float(roc_auc_score(labels, scores))


def labels_and_scores(model_dir: str, impressions: pd.DataFrame | pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The clicks of ``impressions`` (pandas or Arrow, label ``clicked``) and the model's click probabilities."""
    bundle = load_model_dir(model_dir)
    labels = click_labels(impressions) if isinstance(impressions, pa.Table) else impressions["clicked"].to_numpy()
    return np.asarray(labels), np.asarray(score(bundle, impressions))


def evaluate_model_dir(model_dir: str, impressions: pd.DataFrame | pa.Table) -> float:
    """ROC AUC of the model in ``model_dir`` on ``impressions`` (pandas or Arrow, label ``clicked``)."""
    return auc_of(*labels_and_scores(model_dir, impressions))


def oracle_auc(events: pa.Table, oracle: pa.Table) -> dict[str, float | int]:
    """ROC AUC of ``events``' clicks (``event_id``, ``clicked``) scored by the simulator's own probabilities.

    ``oracle``: ``simulate.click_probabilities`` of the same day (``event_id``, ``p_click``, ``true_logit``).
    """
    joined = events.select(["event_id", "clicked"]).join(oracle, "event_id", join_type="inner")
    if joined.num_rows != events.num_rows:
        raise ValueError(
            f"oracle_auc: {events.num_rows - joined.num_rows} of {events.num_rows} events unknown to the oracle"
        )
    clicked = joined.column("clicked").to_numpy()
    return {
        "oracle_auc": float(roc_auc_score(clicked, joined.column("p_click").to_numpy())),
        "oracle_auc_noise_free": float(roc_auc_score(clicked, joined.column("true_logit").to_numpy())),
        "n": joined.num_rows,
    }


# The figures a reviewer opens first on a recommender's MLflow run, by artifact path.
ROC_FIGURE = "figures/roc_curve.png"
CALIBRATION_FIGURE = "figures/calibration.png"
CALIBRATION_BINS = 10


def review_figures(labels: np.ndarray, scores: np.ndarray, title: str) -> dict[str, Any]:
    """ROC curve and calibration (reliability diagram, quantile bins) of ``scores`` on ``labels``, as Agg figures."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_curve

    auc = auc_of(labels, scores, title)
    false_positive, true_positive, _ = roc_curve(labels, scores)
    roc = Figure(figsize=(4.8, 4.4), dpi=90, layout="constrained")
    FigureCanvasAgg(roc)
    ax = roc.subplots()
    ax.plot(false_positive, true_positive, color="tab:blue", linewidth=1.4, label=f"model (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="tab:gray", linestyle="--", linewidth=0.8, label="chance (AUC 0.5)")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(f"ROC curve\n{title}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, frameon=False)

    # Quantile bins: the scores crowd near the base rate, equal-width bins would leave most empty.
    observed, predicted = calibration_curve(labels, scores, n_bins=CALIBRATION_BINS, strategy="quantile")
    calibration = Figure(figsize=(4.8, 4.4), dpi=90, layout="constrained")
    FigureCanvasAgg(calibration)
    ax = calibration.subplots()
    top = float(max(predicted.max(initial=0), observed.max(initial=0), 1e-3)) * 1.1
    ax.plot([0, top], [0, top], color="tab:gray", linestyle="--", linewidth=0.8, label="perfectly calibrated")
    ax.plot(predicted, observed, color="tab:blue", marker="o", markersize=4, linewidth=1.4, label="model")
    ax.axhline(float(np.mean(labels)), color="crimson", linewidth=0.8, linestyle=":", label="base rate")
    ax.set(xlabel="predicted click probability (bin mean)", ylabel="observed click rate", xlim=(0, top), ylim=(0, top))
    ax.set_title(f"Calibration, {len(predicted)} quantile bins\n{title}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return {ROC_FIGURE: roc, CALIBRATION_FIGURE: calibration}


def evaluate(model_uri: str, eval_uri: str) -> dict[str, Any]:
    """``{auc, n, positives, model_uri, eval_uri}`` of ``model_uri`` on the committed day at ``eval_uri``."""
    held_out = read_events(eval_uri)  # Arrow: scored without a pandas copy of the day
    with model_directory(model_uri) as model_dir:
        auc = evaluate_model_dir(model_dir, held_out)
    return {"auc": auc, "n": held_out.num_rows, "positives": int(click_labels(held_out).sum()), "model_uri": model_uri,
            "eval_uri": eval_uri}  # fmt: skip


def run(params: EvaluateParams, reporter: Reporter) -> dict[str, Any]:
    started = time.monotonic()
    use_tracking(params.mlflow)  # models:/ and runs:/ URIs resolve against this store
    result = evaluate(params.model_uri, params.eval_uri)
    result["elapsed_s"] = round(time.monotonic() - started, 2)
    reporter.info(f"AUC of {params.model_uri}: {result['auc']:.4f} on {result['n']} impressions")
    print(json.dumps(result), flush=True)
    return result


main = workload_main(EvaluateParams, run)

if __name__ == "__main__":
    raise SystemExit(main())
