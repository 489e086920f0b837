"""Parameters of the churn training workload."""

import dataclasses

from mltrain_assets.workloads.common.params import MlflowSettings, WorkloadParams, input_uri, service


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChurnTrainParams(WorkloadParams):
    """A logistic churn model for one date from its ingested account events, tracked in MLflow."""

    module = "mltrain_assets_tests.pipelines.churn_plugin.train"

    date: str
    events_uri: str = input_uri(default="")
    mlflow: MlflowSettings = service("mlflow", default_factory=MlflowSettings)
