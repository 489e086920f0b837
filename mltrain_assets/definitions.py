"""The one ``Definitions`` object of the ``mltrain_assets`` code location: assembled, no logic."""

from dagster import Definitions, EnvVar

from mltrain_assets.assets.recsys import recsys_assets
from mltrain_assets.assets.rides import demand_assets
from mltrain_assets.automation import automation_sensor
from mltrain_assets.jobs import demand_jobs, recsys_jobs
from mltrain_assets.resources.compute import ComputeBackend
from mltrain_assets.resources.storage import ArtifactRefIOManagerFactory, ArtifactStorage
from mltrain_assets.resources.tracking import ModelRegistry
from mltrain_assets.schedules import daily_schedules
from mltrain_assets.sensors import landing_sensors
from mltrain_assets.settings import apply_defaults

apply_defaults()

defs = Definitions(
    assets=[*demand_assets, *recsys_assets],
    jobs=[*demand_jobs, *recsys_jobs],
    sensors=[*landing_sensors, automation_sensor],
    schedules=daily_schedules,
    resources={
        "storage": ArtifactStorage(base_uri=EnvVar("MLTRAIN_STORAGE_URI"), landing_uri=EnvVar("MLTRAIN_LANDING_URI")),
        "io_manager": ArtifactRefIOManagerFactory(base_uri=EnvVar("MLTRAIN_STORAGE_URI")),
        "compute": ComputeBackend(
            backend=EnvVar("MLTRAIN_COMPUTE"),
            spark_master=EnvVar("MLTRAIN_SPARK_MASTER"),
            sql_engine=EnvVar("MLTRAIN_SQL_ENGINE"),
            k8s_image=EnvVar("MLTRAIN_K8S_IMAGE"),
            k8s_namespace=EnvVar("MLTRAIN_K8S_NAMESPACE"),
        ),
        "registry": ModelRegistry(tracking_uri=EnvVar("MLFLOW_TRACKING_URI")),
    },
)
