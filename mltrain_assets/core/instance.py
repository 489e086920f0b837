"""An instance whose in-process runs of this project's code carry the ``mltrain_assets`` location's origin.

``dg launch --assets`` and ``dagster asset materialize -m mltrain_assets.definitions`` execute in their own
process through ``execute_job``, which creates the run with a Python origin only: the UI lists it but cannot
re-execute it (``launchPipelineReexecution`` with a parent run id reads ``remote_job_origin``). Named as the
profile's ``instance_class``, this instance gives such a run the origin of the code location ``workspace.yaml``
declares, exactly as ``mltrain materialize`` records it (``cli/demo.py``); runs of other code and runs created
with an origin (the webserver, the daemon) are created as Dagster creates them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import DagsterInstance

DEFINITIONS_MODULE = "mltrain_assets.definitions"


class LocationOriginInstance(DagsterInstance):
    """``instance_class: {module: mltrain_assets.core.instance, class: LocationOriginInstance}`` in dagster.yaml."""

    @classmethod
    def config_schema(cls) -> Mapping[str, Any]:
        return {}  # no settings of its own: every key of dagster.yaml is Dagster's

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, Any]:
        from mltrain_assets.core.dagster_private import InstanceRef

        return InstanceRef.config_defaults(base_dir)

    def create_run_for_job(self, *args: Any, **kwargs: Any):
        job_def = kwargs.get("job_def", args[0] if args else None)
        if kwargs.get("remote_job_origin") is None and job_def is not None and _ours(kwargs.get("job_code_origin")):
            from mltrain_assets.cli.demo import remote_job_origin

            kwargs["remote_job_origin"] = remote_job_origin(job_def.name)
        return super().create_run_for_job(*args, **kwargs)


def _ours(job_code_origin: Any) -> bool:
    pointer = getattr(getattr(job_code_origin, "repository_origin", None), "code_pointer", None)
    return getattr(pointer, "module", None) == DEFINITIONS_MODULE
