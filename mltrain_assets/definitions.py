"""The one ``Definitions`` object of the ``mltrain_assets`` code location: each registered pipeline's
definitions merged with the shared resources, automation and reporting. Assembled, no logic."""

from dagster import Definitions, EnvVar, in_process_executor

from mltrain_assets.core.alerts import ALERT_SENSORS
from mltrain_assets.core.automation import automation_sensor
from mltrain_assets.core.pipeline import all_pipelines
from mltrain_assets.instance.reap import workload_reaper
from mltrain_assets.launch.workload_resources import check_step_names
from mltrain_assets.pipelines.reporting import definitions as reporting
from mltrain_assets.resources.compute import Compute
from mltrain_assets.resources.storage import ArtifactRefIOManagerFactory, ArtifactStorage
from mltrain_assets.resources.tracking import ModelRegistry
from mltrain_assets.settings import apply_defaults, validate_settings

apply_defaults()
validate_settings()  # a typo in any setting fails the code location at load, naming the variable

defs = Definitions.merge(
    Definitions(
        # What the UI's Materialize launches (the implicit asset job): its steps run in the run worker, like the
        # pipelines' own jobs, rather than in one process per step that imports these definitions again.
        executor=in_process_executor,
        sensors=[automation_sensor, workload_reaper, *ALERT_SENSORS],
        resources={
            "storage": ArtifactStorage(
                base_uri=EnvVar("MLTRAIN_STORAGE_URI"), landing_uri=EnvVar("MLTRAIN_LANDING_URI")
            ),
            "io_manager": ArtifactRefIOManagerFactory(base_uri=EnvVar("MLTRAIN_STORAGE_URI")),
            "compute": Compute.from_settings(),  # the deployment MLTRAIN_COMPUTE names
            "registry": ModelRegistry(
                tracking_uri=EnvVar("MLFLOW_TRACKING_URI"),
                ui_url=EnvVar("MLTRAIN_MLFLOW_UI_URL"),
                dagster_ui_url=EnvVar("MLTRAIN_DAGSTER_UI_URL"),
            ),
        },
    ),
    *(pipeline.defs for pipeline in all_pipelines()),
    reporting.defs,  # the model quality report over every pipeline
)
# A step named in MLTRAIN_WORKLOAD_RESOURCES that is no asset here fails the load too (a typo would be ignored).
check_step_names({key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()})
