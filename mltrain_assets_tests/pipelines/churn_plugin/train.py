"""Train the churn classifier on one ingested day: the first 18 hours fit it, the last 6 score it (AUC)."""

import numpy as np

from mltrain_assets.sdk import (
    EVENTS_FILE,
    ArtifactWriter,
    Reporter,
    ensure_experiment,
    read_table,
    run_tags,
    use_tracking,
    workload_main,
)

from .contract import EXPERIMENT_NAME
from .params import ChurnTrainParams


def run(params: ChurnTrainParams, reporter: Reporter) -> dict:
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    events = read_table(params.events_uri, EVENTS_FILE).to_pandas()
    hours = events["event_at"].dt.hour
    fit, holdout = events[hours < 18], events[hours >= 18]
    model = LogisticRegression().fit(fit[["minutes"]], fit["churned"])
    auc = float(roc_auc_score(holdout["churned"], model.predict_proba(holdout[["minutes"]])[:, 1]))
    reporter.info(f"churn {params.date}: {len(fit)} rows fit, {len(holdout)} held out, AUC {auc:.3f}")
    use_tracking(params.mlflow)
    ensure_experiment(EXPERIMENT_NAME)
    with mlflow.start_run(run_name=f"churn-{params.date}", tags=run_tags(params.mlflow)) as run:
        mlflow.log_metric("auc", auc)
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    summary = {
        "date": params.date,
        "auc": auc,
        "n_fit": len(fit),
        "mlflow_run_id": run.info.run_id,
        "mlflow_model_uri": info.model_uri,
    }
    writer = ArtifactWriter(params.out_uri, producer="churn-train", code_version=params.code_version, inputs={})
    writer.write_json("coefficients.json", {"minutes": float(np.ravel(model.coef_)[0])})
    writer.commit(summary)
    return summary


main = workload_main(ChurnTrainParams, run)

if __name__ == "__main__":
    raise SystemExit(main())
