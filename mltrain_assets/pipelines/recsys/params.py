"""Parameters of the recommendations workloads: built by the assets, parsed by the workloads."""

from __future__ import annotations

import dataclasses

from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.sdk import (
    DistributedParams,
    MlflowSettings,
    SparkSettings,
    WorkloadParams,
    hyperparameter,
    input_uri,
    runtime,
    service,
    workload,
)


@workload(".workloads.embeddings", kinds={"spark"}, profile="spark")
@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbeddingsParams(WorkloadParams):
    """User and item ALS factors (Spark MLlib, implicit feedback) over a window of interaction days."""

    date: str
    rank: int = hyperparameter(default=contract.ALS_RANK, help="ALS factors per user and item (embedding size)", ge=1)
    iterations: int = hyperparameter(default=contract.ALS_ITERATIONS, help="ALS alternating sweeps", ge=1)
    reg: float = hyperparameter(default=contract.ALS_REG, help="ALS L2 regularisation", ge=0)
    alpha: float = hyperparameter(default=contract.ALS_ALPHA, help="ALS confidence per unit of rating", ge=0)
    negative_weight: float = hyperparameter(
        default=contract.ALS_NEGATIVE_WEIGHT, help="rating subtracted per impression without a click", ge=0
    )
    seed: int = 0
    interactions_uris: tuple[str, ...] = input_uri(default=())
    spark: SparkSettings = service("spark", default_factory=SparkSettings)


@workload(".workloads.train.launcher", kinds={"pytorch", "mlflow"}, profile="training")
@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainParams(DistributedParams):
    """The click model trained with DistributedDataParallel under torchrun, checkpointed per epoch."""

    date: str
    epochs: int = hyperparameter(default=contract.TRAIN_EPOCHS, help="passes over the training rows", ge=1)
    batch_size: int = hyperparameter(default=contract.TRAIN_BATCH_SIZE, help="rows per step, per worker", ge=1)
    lr: float = hyperparameter(default=contract.TRAIN_LR, help="Adam learning rate", gt=0, le=1)
    weight_decay: float = hyperparameter(default=contract.TRAIN_WEIGHT_DECAY, help="Adam weight decay", ge=0)
    hidden_width: int = hyperparameter(
        default=contract.HIDDEN_SIZES[0], help="units in the MLP's first hidden layer (the second has half)", ge=2
    )
    seed: int = 0
    shuffle_labels: bool = False  # train on shuffled labels: the AUC gate must fail
    interactions_uris: tuple[str, ...] = input_uri(default=())  # D-7 .. D-1
    eval_uri: str = input_uri(default="")  # day D, held out
    embeddings_uri: str = input_uri(default="")
    # Where and how to run (DistributedParams): the same model comes out of 1 node x 2 workers or 2 nodes x 1.
    nproc_per_node: int = runtime(default=contract.TRAIN_NPROC)
    backend: str = runtime(default=contract.TRAIN_BACKEND)
    device: str = runtime(default=contract.TRAIN_DEVICE)
    checkpoint_uri: str = runtime(default="")  # empty: contract.checkpoint_uri_for(out_uri)
    keep_checkpoints: bool = runtime(default=False)
    experiment: str = runtime(default=contract.EXPERIMENT_NAME)
    mlflow: MlflowSettings = service("mlflow", default_factory=MlflowSettings)

    @property
    def hidden_sizes(self) -> tuple[int, int]:
        """The MLP's two hidden layers: ``hidden_width`` units, then half as many."""
        return (self.hidden_width, self.hidden_width // 2)


@workload(".workloads.evaluate", resources={"timeout_s": 900})  # champion/challenger evaluation
@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluateParams(WorkloadParams):
    """AUC of one model on one committed, held-out day (commits nothing; reports ``auc``)."""

    commits = False

    model_uri: str = input_uri(default="")
    eval_uri: str = input_uri(default="")
    mlflow: MlflowSettings = service("mlflow", default_factory=MlflowSettings)


@workload(".workloads.recommend", kinds={"pytorch", "parquet"})
@dataclasses.dataclass(frozen=True, kw_only=True)
class RecommendParams(WorkloadParams):
    """Top-K items per user from a registered model version, scored in batches."""

    top_k: int = contract.TOP_K
    position: int = 0
    hour: float = 20.0
    users_limit: int | None = None
    model_uri: str = input_uri(default="")
    device: str = "ios"  # the context the items are scored for
    mlflow: MlflowSettings = service("mlflow", default_factory=MlflowSettings)
