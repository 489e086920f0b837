"""Every private Dagster name mltrain uses (``dagster._...``), in one place, each with why.

Checked against Dagster 1.13.27: each name below has no public equivalent in ``dagster``
(``dagster/__init__.py``, the public API). No other module of ``mltrain_assets`` imports from
``dagster._`` (``mltrain_assets_tests/instance/test_dagster_private.py`` fails if one does, or if a name
imported here is not listed below). After a Dagster upgrade, check this file: a name that moved
breaks the import here, and a name that became public can be imported from ``dagster`` instead.

Creating a run the way the webserver and the daemon create it (``cli/demo.py``): the run must
carry the ``mltrain_assets`` code location's origin so the UI lists it under that location and can
re-execute it. The public ``execute_job``/``materialize``/``JobDefinition.execute_in_process``
create the run themselves and record only a Python origin ("from a different code location" in
the UI), and take no origin to record; so the run is created with
``DagsterInstance.create_run_for_job(remote_job_origin=...)`` and executed with ``execute_run``:

- ``execute_run`` (``dagster._core.execution.api``): executes an already created run in this
  process (what ``dagster asset materialize`` and a run worker do). Public ``execute_job`` creates
  a run of its own instead; there is no public function that executes a given ``DagsterRun``.
- ``ReconstructableRepository`` (``dagster._core.definitions.reconstruct``): the job as a run worker
  reloads it, ``mltrain_assets.definitions:defs`` in the project folder, and the run's Python origin
  (``job_code_origin``). Public ``reconstructable()``/``build_reconstructable_job()`` point at a
  module-scope job or a function of our own, not at the ``Definitions`` object: the implicit asset
  jobs (``__ASSET_JOB``) that ``mltrain materialize`` runs are not module attributes at all.
- ``CodeLocationOrigin``, ``ManagedGrpcPythonEnvCodeLocationOrigin`` (``dagster._core.remote_origin``)
  and ``LoadableTargetOrigin`` (``dagster._core.types.loadable_target_origin``): the location's
  origin as ``workspace.yaml`` declares it, and (without the file, an installed package) the same
  module-based location described directly. ``CodeLocationOrigin`` is only the return type.
- ``WorkspaceFileTarget`` (``dagster._core.workspace.load_target``): parses ``workspace.yaml`` into
  those origins without loading any code (no code server starts). Dagster has no public parser.
- ``RemoteJobOrigin``, ``RemoteRepositoryOrigin`` (``dagster._core.remote_origin``): the
  ``remote_job_origin`` argument of ``create_run_for_job`` is made of these; nothing public builds one.
- ``ASSET_PARTITION_RANGE_START_TAG``, ``ASSET_PARTITION_RANGE_END_TAG``
  (``dagster._core.storage.tags``): the run tags that make one run materialize a partition range
  (``mltrain materialize --partition-range``, the demo's single-run ingestion window), as
  ``dagster asset materialize --partition-range`` and backfills set them. ``JobDefinition`` has
  public ``get_tags_for_partition_key`` for one key but nothing for a range, and ``RunRequest``
  only reads these tags back (``partition_key_range``). Only ``MAX_RUNTIME_SECONDS_TAG`` of the
  system tags is public.

Failing a run whose worker died, and checking workers for run monitoring (``instance/heal.py``):

- ``JobFailureData``, ``RunFailureReason`` (``dagster._core.events``): public
  ``DagsterInstance.report_run_failed(run, message, job_failure_data)`` takes the failure data as
  this private class. ``RunFailureReason.UNEXPECTED_TERMINATION`` is recorded on the run
  (``dagster/failure_reason``, shown in the UI) and tells run retries the run crashed rather than
  failed a step (``retry_on_asset_or_op_failure: false`` retries only the former).
- ``CheckRunHealthResult``, ``WorkerStatus`` (``dagster._core.launcher``): what
  ``RunLauncher.check_run_worker_health`` must return; ``PidCheckedRunLauncher`` (a subclass of the
  public ``DefaultRunLauncher``) implements it. The public API exports neither.

Gates of a run over a range of partitions (``core/steps.py``):

- ``AssetCheckEvaluationTargetMaterializationData``
  (``dagster._core.definitions.asset_checks.asset_check_evaluation``): which materialization a check
  evaluation judged. A range run reports its partitioned gates as public ``AssetCheckEvaluation``s,
  one per partition (``AssetCheckResult`` takes no partition: it takes the run's, and a range run has
  none); without this the instance counts each partition's result as not evaluated for its latest
  materialization and the UI shows no result there.

The instance profile and the instance class (``cli/profile.py``, ``instance/origin.py``):

- ``dagster_instance_config`` (``dagster._core.instance.config``): Dagster's own check of a
  ``dagster.yaml`` (schema, and the keys it refuses side by side), run on a merged profile before
  ``mltrain`` writes it. Public ``DagsterInstance.from_config`` would build the storages (connect to
  PostgreSQL) to find the same errors.
- ``InstanceRef`` (``dagster._core.instance.ref``): ``InstanceRef.config_defaults``, the storages a
  profile that names none gets, which a ``DagsterInstance`` subclass named as ``instance_class`` must
  provide (``LocationOriginInstance``: ``dg launch`` runs get the code location's origin).

Alerts (``core/alerts.py``):

- ``SerializableErrorInfo`` (``dagster._utils.error``): the type of a failed run's and step's error
  (``JobFailureData.error``, ``StepFailureData.error``), whose ``cause`` chain leads to the step code's own
  exception; a type annotation only, Dagster exports no public name for it.

Also relied on, without an import (no public accessor): ``PidCheckedRunLauncher`` reads the
instance it was registered with as ``self._instance`` (``RunLauncher``'s weak reference; Dagster's
own launchers read it the same way).

Imported from ``dagster`` instead (public there, though once imported here from ``dagster._``):
``DagsterEventType``, ``DagsterRun``, ``RunsFilter``,
``DefaultRunLauncher``, ``JobExecutionResult``, ``DagsterInvalidSubsetError``,
``DagsterUnknownPartitionError``, ``partition_loading_context`` (all ``from dagster import ...``);
``BackfillPolicyType.SINGLE_RUN`` is ``BackfillPolicy.single_run()``; ``SINGLETON_REPOSITORY_NAME``
is the loaded ``RepositoryDefinition.name``; ``make_new_run_id`` is ``str(uuid.uuid4())``; whether
the run storage is SQLite is read from the public ``instance.run_storage`` (``instance/heal.py``).
"""

from __future__ import annotations

from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.events import JobFailureData, RunFailureReason
from dagster._core.execution.api import execute_run
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.remote_origin import (
    CodeLocationOrigin,
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._utils.error import SerializableErrorInfo

__all__ = [
    "ASSET_PARTITION_RANGE_END_TAG",
    "ASSET_PARTITION_RANGE_START_TAG",
    "AssetCheckEvaluationTargetMaterializationData",
    "CheckRunHealthResult",
    "CodeLocationOrigin",
    "InstanceRef",
    "JobFailureData",
    "LoadableTargetOrigin",
    "ManagedGrpcPythonEnvCodeLocationOrigin",
    "ReconstructableRepository",
    "RemoteJobOrigin",
    "RemoteRepositoryOrigin",
    "RunFailureReason",
    "SerializableErrorInfo",
    "WorkerStatus",
    "WorkspaceFileTarget",
    "dagster_instance_config",
    "execute_run",
]
