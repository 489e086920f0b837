"""Nothing outlives its run: workload objects whose run ended, or no longer exists, are deleted.

Every workload object carries its Dagster run id (label ``dagster/run-id``, the key dagster-k8s
puts on run pods) and ``app.kubernetes.io/part-of=mltrain``. The launchers delete what they
created when a launch ends, but a run worker killed with SIGKILL (OOM, a lost node, ``kill -9``)
deletes nothing. On a cluster the owner reference to the run pod covers the run pod's deletion;
until then, and on k8s-local always, this reaper does: :func:`reap` looks each object's run up in
the instance and deletes those of a run that is finished or absent. ``mltrain heal`` runs it after
failing the runs whose worker died, and the sensor :data:`workload_reaper` every few minutes.

Two backends behind :class:`ObjectBackend`: :class:`ClusterObjects` (the Kubernetes API: Pods, Jobs
and Services by label selector, Jobs deleted with Background propagation so their pods go too) and
:class:`LocalObjects` (k8s-local's records, ``launch/local_objects.py``: their processes are killed).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dagster import DagsterInstance, DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from mltrain_assets.launch import local_objects
from mltrain_assets.launch.protocol import PART_OF, RUN_ID_LABEL

SELECTOR = ",".join(f"{k}={v}" for k, v in PART_OF.items())
REAP_INTERVAL_S = 300


@dataclass(frozen=True)
class WorkloadObject:
    """One object (or, on k8s-local, one launch's objects) and the run it belongs to."""

    kind: str
    name: str
    namespace: str
    run_id: str
    handle: Any = field(default=None, compare=False, repr=False)  # what the backend needs to delete it
    label: str = ""  # how to name it, where kind and name do not say it all

    def describe(self) -> str:
        return self.label or f"{self.kind} {self.namespace}/{self.name}"


class ObjectBackend(Protocol):
    @property
    def where(self) -> str:
        """Where its objects are: "namespace mltrain", "k8s-local"."""

    def objects(self) -> list[WorkloadObject]: ...

    def delete(self, obj: WorkloadObject) -> str:
        """Delete it; returns what was done beyond the deletion ("" for nothing more)."""


@dataclass
class Reaped:
    obj: WorkloadObject
    why: str
    done: str = ""

    def line(self, dry_run: bool = False) -> str:
        verb = "would delete" if dry_run else "deleted"
        done = f" ({self.done})" if self.done else ""
        return f"{self.obj.run_id}: {verb} {self.obj.describe()}{done}: {self.why}"


def reap(
    instance: DagsterInstance,
    backends: list[ObjectBackend],
    *,
    dry_run: bool = False,
    say: Callable[[str], None] | None = None,
) -> list[Reaped]:
    """Delete each object of ``backends`` whose run is finished or absent; a line per object to ``say``."""
    reaped = []
    for backend in backends:
        for obj in backend.objects():
            if not obj.run_id:
                continue  # not launched by a run (or by an older version): not ours to judge
            run = instance.get_run_by_id(obj.run_id)
            if run is None:
                why = "its run no longer exists"
            elif run.is_finished:
                why = f"its run ended ({run.status.value})"
            else:
                continue
            item = Reaped(obj, why)
            if not dry_run:
                item.done = backend.delete(obj)
            reaped.append(item)
            if say:
                say(item.line(dry_run))
    return reaped


# ------------------------------------------------------------------ the backends


@dataclass
class ClusterObjects:
    """Pods, Jobs and Services labelled ``app.kubernetes.io/part-of=mltrain`` in one namespace."""

    core_api: Any  # kubernetes.client.CoreV1Api
    batch_api: Any  # kubernetes.client.BatchV1Api
    namespace: str

    @property
    def where(self) -> str:
        return f"namespace {self.namespace}"

    def objects(self) -> list[WorkloadObject]:
        found = []
        lists = (
            ("Job", self.batch_api.list_namespaced_job),
            ("Service", self.core_api.list_namespaced_service),
            ("Pod", self.core_api.list_namespaced_pod),
        )
        for kind, list_objects in lists:
            for item in list_objects(self.namespace, label_selector=SELECTOR).items:
                meta = item.metadata
                if kind == "Pod" and any(ref.kind == "Job" for ref in meta.owner_references or []):
                    continue  # a Job's pod goes with its Job (Background propagation)
                run_id = (meta.labels or {}).get(RUN_ID_LABEL, "")
                found.append(WorkloadObject(kind, meta.name, meta.namespace or self.namespace, run_id))
        return found

    def delete(self, obj: WorkloadObject) -> str:
        from kubernetes.client import V1DeleteOptions
        from kubernetes.client.exceptions import ApiException

        try:
            if obj.kind == "Job":
                # batch/v1 orphans a Job's pods unless told otherwise (DeleteOptions in the body, as kubectl sends it).
                background = V1DeleteOptions(propagation_policy="Background")
                self.batch_api.delete_namespaced_job(obj.name, obj.namespace, body=background)
                return "and its pods"
            if obj.kind == "Service":
                self.core_api.delete_namespaced_service(obj.name, obj.namespace)
            else:
                self.core_api.delete_namespaced_pod(obj.name, obj.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return "already gone"
        return ""


@dataclass
class LocalObjects:
    """k8s-local's records: each launch's objects, deleted by killing its processes and the record."""

    where: str = "k8s-local"

    def objects(self) -> list[WorkloadObject]:
        return [
            WorkloadObject(
                "launch", record.name, "", record.run_id, handle=record, label=f"k8s-local {', '.join(record.kinds())}"
            )
            for record in local_objects.records()
        ]

    def delete(self, obj: WorkloadObject) -> str:
        record: local_objects.LocalRecord = obj.handle
        groups = record.kill()
        record.remove()
        if not groups:
            return "no process left"
        return "killed process group" + ("s " if len(groups) > 1 else " ") + ", ".join(map(str, groups))


def backends_from_settings(env: dict[str, str] | None = None) -> tuple[list[ObjectBackend], list[str]]:
    """The backends this deployment has, and why any could not be reached (the cluster's API)."""
    env = dict(os.environ) if env is None else env
    backends: list[ObjectBackend] = [LocalObjects()]
    problems = []
    if env.get("MLTRAIN_COMPUTE") == "k8s":
        try:
            import kubernetes

            from mltrain_assets.launch.kubernetes import load_kube_config

            load_kube_config()
            backends.append(
                ClusterObjects(
                    kubernetes.client.CoreV1Api(),
                    kubernetes.client.BatchV1Api(),
                    env.get("MLTRAIN_K8S_NAMESPACE") or "mltrain",
                )
            )
        except Exception as exc:  # no kubeconfig, no in-cluster account: say so, reap the rest
            problems.append(f"the cluster's workload objects were not checked: {type(exc).__name__}: {exc}")
    return backends, problems


@sensor(minimum_interval_seconds=REAP_INTERVAL_S, default_status=DefaultSensorStatus.RUNNING)
def workload_reaper(context: SensorEvaluationContext):
    """Every few minutes: delete the workload objects (pods, jobs, services, k8s-local processes) of ended runs."""
    backends, problems = backends_from_settings()
    lines: list[str] = []
    reap(context.instance, backends, say=lines.append)
    for line in [*lines, *problems]:
        context.log.info(line)
    return SkipReason(("; ".join(lines + problems) or "no workload object of an ended run")[:1000])
