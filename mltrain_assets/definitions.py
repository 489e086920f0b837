"""The one ``Definitions`` object of the ``mltrain_assets`` code location: each registered pipeline's
definitions merged with the shared resources and automation. Assembled, no logic."""

from dagster import Definitions, EnvVar

from mltrain_assets.core.automation import automation_sensor
from mltrain_assets.core.pipeline import all_pipelines
from mltrain_assets.resources.compute import ComputeBackend
from mltrain_assets.resources.storage import ArtifactRefIOManagerFactory, ArtifactStorage
from mltrain_assets.resources.tracking import ModelRegistry
from mltrain_assets.settings import apply_defaults

apply_defaults()

defs = Definitions.merge(
    Definitions(
        sensors=[automation_sensor],
        resources={
            "storage": ArtifactStorage(
                base_uri=EnvVar("MLTRAIN_STORAGE_URI"), landing_uri=EnvVar("MLTRAIN_LANDING_URI")
            ),
            "io_manager": ArtifactRefIOManagerFactory(base_uri=EnvVar("MLTRAIN_STORAGE_URI")),
            "compute": ComputeBackend.from_settings(),
            "registry": ModelRegistry(tracking_uri=EnvVar("MLFLOW_TRACKING_URI")),
        },
    ),
    *(pipeline.defs for pipeline in all_pipelines()),
)
