"""The churn pipeline's Dagster side: ingestion, a gated model, its registration."""

from dagster import AssetExecutionContext

from mltrain_assets.artifacts import ArtifactRef
from mltrain_assets.core.assets import Step, registration_asset, workload_asset
from mltrain_assets.core.gates import metric_above
from mltrain_assets.core.ingestion import landing_ingestion_asset
from mltrain_assets.core.pipeline import ModelQuality, PipelineJob, define_pipeline
from mltrain_assets.core.promotion import register_and_promote, snapshot_with_upstream
from mltrain_assets.resources.tracking import ModelRegistry
from mltrain_assets_tests.pipelines.churn_plugin import contract
from mltrain_assets_tests.pipelines.churn_plugin.params import ChurnTrainParams
from mltrain_assets_tests.pipelines.churn_plugin.spec import spec

AUC_GATE = metric_above("churn_auc_above_threshold", "auc", contract.AUC_THRESHOLD)

account_events = landing_ingestion_asset(name="account_events_ingested", spec=spec, description="Account events.")


@workload_asset(spec, ChurnTrainParams, layer="model", gates=[AUC_GATE])
def churn_model(context: AssetExecutionContext, account_events_ingested: ArtifactRef) -> Step:
    """A logistic churn model for the date, gated on held-out AUC."""
    return Step(
        ChurnTrainParams(date=context.partition_key, events_uri=account_events_ingested.uri),
        inputs={"account_events_ingested": account_events_ingested},
    )


@registration_asset(spec, description=f"The churn model registered as `{contract.MODEL_NAME}`, aliased `staging`.")
def registered_churn_model(context: AssetExecutionContext, churn_model: ArtifactRef, registry: ModelRegistry):
    return register_and_promote(
        context,
        registry=registry,
        model_name=contract.MODEL_NAME,
        model_ref=churn_model,
        model_uri=churn_model.metadata["mlflow_model_uri"],
        data_snapshot=snapshot_with_upstream({"churn_model": churn_model}),
        gate=AUC_GATE,
        score_metadata={"auc": churn_model.metadata.get("auc")},
    )


def summary(date: str) -> str:
    from mlflow.tracking import MlflowClient

    try:
        version = MlflowClient().get_model_version_by_alias(contract.MODEL_NAME, "staging")
    except Exception:
        return f"churn, {date}: no `staging` version of {contract.MODEL_NAME}"
    return f"churn, {date}: {contract.MODEL_NAME} v{version.version} is `staging`"


pipeline = define_pipeline(
    spec,
    assets=[account_events, churn_model, registered_churn_model],
    ingestion=PipelineJob("account_events_job", (account_events,), "Ingest landed account events."),
    stages=(PipelineJob("churn_model_job", (churn_model, registered_churn_model), "Train, gate, register."),),
    fallback_cron="0 4 * * *",
    quality=ModelQuality(
        model=churn_model, registered=registered_churn_model, gate=AUC_GATE, model_name=lambda _key: contract.MODEL_NAME
    ),
    report_metrics=("auc",),
    summary=summary,
)
