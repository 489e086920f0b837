"""Parameters of the churn training workload."""

import dataclasses

from mltrain_assets.sdk import MlflowSettings, WorkloadParams, input_uri, service, workload


@workload(".train", kinds={"scikit-learn", "mlflow"})
@dataclasses.dataclass(frozen=True, kw_only=True)
class ChurnTrainParams(WorkloadParams):
    """A logistic churn model for one date from its ingested account events, tracked in MLflow."""

    date: str
    events_uri: str = input_uri(default="")
    mlflow: MlflowSettings = service("mlflow", default_factory=MlflowSettings)
