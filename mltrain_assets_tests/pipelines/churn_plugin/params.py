"""Parameters of the churn training workload."""

import dataclasses

from mltrain_assets.workloads.common.params import MlflowSettings, WorkloadParams, input_uri, service, workload
from mltrain_assets_tests.pipelines.churn_plugin.contract import TRAIN_CODE_VERSION


@workload(".train", TRAIN_CODE_VERSION, kinds={"scikit-learn", "mlflow"})
@dataclasses.dataclass(frozen=True, kw_only=True)
class ChurnTrainParams(WorkloadParams):
    """A logistic churn model for one date from its ingested account events, tracked in MLflow."""

    date: str
    events_uri: str = input_uri(default="")
    mlflow: MlflowSettings = service("mlflow", default_factory=MlflowSettings)
