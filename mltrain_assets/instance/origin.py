"""An instance whose in-process runs of this project's code carry the ``mltrain_assets`` location's origin.

``dg launch --assets`` and ``dagster asset materialize -m mltrain_assets.definitions`` execute in their own
process through ``execute_job``, which creates the run with a Python origin only: the UI lists it but cannot
re-execute it (``launchPipelineReexecution`` with a parent run id reads ``remote_job_origin``). Named as the
profile's ``instance_class``, this instance gives such a run the origin of the code location ``workspace.yaml``
declares, exactly as ``mltrain materialize`` records it (``cli/demo.py``); runs of other code and runs created
with an origin (the webserver, the daemon) are created as Dagster creates them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import DagsterInstance

from mltrain_assets.instance.dagster_private import (
    CodeLocationOrigin,
    LoadableTargetOrigin,
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
    WorkspaceFileTarget,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE_FILE = REPO_ROOT / "workspace.yaml"
# The code location the webserver and the daemon load (workspace.yaml, [tool.dagster] in pyproject.toml).
LOCATION_NAME = "mltrain_assets"
DEFINITIONS_MODULE = "mltrain_assets.definitions"


class LocationOriginInstance(DagsterInstance):
    """``instance_class: {module: mltrain_assets.instance.origin, class: LocationOriginInstance}`` in dagster.yaml."""

    @classmethod
    def config_schema(cls) -> Mapping[str, Any]:
        return {}  # no settings of its own: every key of dagster.yaml is Dagster's

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, Any]:
        from mltrain_assets.instance.dagster_private import InstanceRef

        return InstanceRef.config_defaults(base_dir)

    def create_run_for_job(self, *args: Any, **kwargs: Any):
        job_def = kwargs.get("job_def", args[0] if args else None)
        if kwargs.get("remote_job_origin") is None and job_def is not None and _ours(kwargs.get("job_code_origin")):
            kwargs["remote_job_origin"] = remote_job_origin(job_def.name)
        return super().create_run_for_job(*args, **kwargs)


def _ours(job_code_origin: Any) -> bool:
    pointer = getattr(getattr(job_code_origin, "repository_origin", None), "code_pointer", None)
    return getattr(pointer, "module", None) == DEFINITIONS_MODULE


def code_location_origin() -> CodeLocationOrigin:
    """The origin of the ``mltrain_assets`` location exactly as ``workspace.yaml`` declares it.

    Parsing the file loads nothing (no code server starts). Without the file (an installed
    package), the same module-based location is described directly.
    """
    if WORKSPACE_FILE.exists():
        for origin in WorkspaceFileTarget(paths=[str(WORKSPACE_FILE)]).create_origins():
            if origin.location_name == LOCATION_NAME:
                return origin
    return ManagedGrpcPythonEnvCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(module_name=DEFINITIONS_MODULE), location_name=LOCATION_NAME
    )


def remote_job_origin(job_name: str, repository_name: str | None = None) -> RemoteJobOrigin:
    """Where the UI finds this job: the code location's (only) repository, by default the one ``defs`` makes."""
    if repository_name is None:  # by name: the definitions are loaded above this package, never imported by it
        repository_name = importlib.import_module(DEFINITIONS_MODULE).defs.get_repository_def().name
    return RemoteJobOrigin(RemoteRepositoryOrigin(code_location_origin(), repository_name), job_name)
