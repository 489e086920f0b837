"""The churn pipeline's Dagster side: ingestion, a model gated on AUC, its registration."""

from mltrain_assets.sdk import (
    ArtifactRef,
    AssetExecutionContext,
    PipelineJob,
    Registration,
    Step,
    define_pipeline,
    landing_ingestion_asset,
    metric_above,
    model_stage,
    staging_version,
)

from . import contract
from .params import ChurnTrainParams
from .spec import spec

# The model's one gate and one registered name: its step, its registration and its report entry follow.
churn = model_stage(spec, metric_above("churn_auc_above_threshold", "auc", contract.AUC_THRESHOLD), contract.MODEL_NAME)

account_events = landing_ingestion_asset(spec, name="account_events_ingested", description="Account events.")


@churn.model(ChurnTrainParams)
def churn_model(context: AssetExecutionContext, account_events_ingested: ArtifactRef) -> Step:
    """A logistic churn model for the date, gated on held-out AUC."""
    return Step(
        ChurnTrainParams(date=context.partition_key, events_uri=account_events_ingested.uri),
        inputs={"account_events_ingested": account_events_ingested},
    )


@churn.registration
def registered_churn_model(context: AssetExecutionContext, churn_model: ArtifactRef) -> Registration:
    """The churn model registered with lineage tags, aliased `staging` when it passes its gate."""
    return Registration(churn_model.metadata["mlflow_model_uri"], upstream={"churn_model": churn_model})


def summary(date: str) -> str:
    version = staging_version(contract.MODEL_NAME)
    if version is None:
        return f"churn, {date}: no `staging` version of {contract.MODEL_NAME}"
    return f"churn, {date}: {contract.MODEL_NAME} v{version.version} is `staging`"


pipeline = define_pipeline(
    spec,
    ingestion=PipelineJob("account_events_job", (account_events,), "Ingest landed account events."),
    stages=(PipelineJob("churn_model_job", (churn_model, registered_churn_model), "Train, gate, register."),),
    fallback_cron="0 4 * * *",
    quality=churn.quality,
    report_metrics=("auc",),
    summary=summary,
)
