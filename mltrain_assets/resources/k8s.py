"""The Kubernetes objects one workload launch submits, rendered in one place.

The ``k8s`` backend submits them, ``mltrain manifests`` prints them, and the ``k8s-local``
backend executes them on this machine. A workload is one Pod (through ``PipesK8sClient``,
built with its own ``build_pod_body``), or, for a distributed workload over several nodes, a
headless Service plus an Indexed Job whose pods rendezvous at index 0.

Plain dicts in the API's own (camelCase) shape, not ``kubernetes.client`` models: every reader
here wants that shape (kubernetes-validate checks it against the OpenAPI schema, the Pod Security
rules walk it, ``mltrain manifests`` prints it as YAML, dagster-k8s's ``build_pod_body`` returns
it, the client's ``create_namespaced_*`` accept it), and models would be converted back with
``ApiClient.sanitize_for_serialization`` at each of those steps.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any

from mltrain_assets.launch.protocol import PART_OF

# The container Spark builds each executor on (spark.kubernetes.executor.podTemplateContainerName).
from mltrain_assets.workloads.common.spark import EXECUTOR_CONTAINER

CONTAINER = "workload"
SCRATCH = "/tmp"
# The name Spark gives its first local-dir volume (LocalDirsFeatureStep); a template volume by it is reused.
SPARK_LOCAL_DIR_VOLUME = "spark-local-dir-1"
SHM = "/dev/shm"
# Crashes of one node's pod retried in place before the Job (and the step) fails.
BACKOFF_LIMIT_PER_INDEX = 2
# Pod Security "restricted" (resources/pod_security.py checks it), plus a read-only root file system:
# every pod we create, and every Spark executor, runs this way.
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class PodTemplate:
    """Everything but the command and names: image, resources, placement, identity, secrets."""

    image: str
    namespace: str
    image_pull_policy: str = "IfNotPresent"
    requests: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    service_account: str = ""
    env_secret: str = ""  # a Secret whose keys become env vars (credentials): a reference, never a value
    env: dict[str, str] = field(default_factory=dict)  # plain settings the workload environment needs
    field_env: dict[str, str] = field(default_factory=dict)  # env var -> pod field (downward API), e.g. status.podIP
    resource_env: dict[str, str] = field(default_factory=dict)  # env var -> own resource (downward API), requests.cpu
    scratch_size: str = ""  # sizeLimit of the /tmp emptyDir (evicted past it, not filling the node's disk)
    shm_size: str = ""  # a memory-backed /dev/shm of this size (NCCL, DataLoader workers); "" none
    deadline_s: int = 3600
    labels: dict[str, str] = field(default_factory=dict)
    # The run pod that launched this (downward API in the run pod: MLTRAIN_RUN_POD_NAME/UID): the objects are
    # owned by it, so deleting the run pod (its Job's TTL, kubectl) garbage-collects them.
    owner_pod: str = ""
    owner_uid: str = ""
    # Whether the pod talks to the Kubernetes API (a Spark driver with a k8s:// master creates its executors);
    # every other pod gets no service-account token.
    api_access: bool = False


def container_spec(template: PodTemplate, name: str = CONTAINER) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "imagePullPolicy": template.image_pull_policy,
        "resources": {"requests": dict(template.requests), "limits": dict(template.limits)},
        "securityContext": copy.deepcopy(CONTAINER_SECURITY),
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}]
        + ([{"name": "shm", "mountPath": SHM}] if template.shm_size else []),
        "env": [
            *(
                {"name": env, "valueFrom": {"fieldRef": {"fieldPath": path}}}
                for env, path in template.field_env.items()
            ),
            # Divisor 1: whole cores, rounded up (Kubernetes' rule for resourceFieldRef).
            *(
                {"name": env, "valueFrom": {"resourceFieldRef": {"resource": resource, "divisor": "1"}}}
                for env, resource in template.resource_env.items()
            ),
        ],
    }
    if template.env_secret:
        container["envFrom"] = [{"secretRef": {"name": template.env_secret}}]
    return container


def pod_spec(template: PodTemplate, *, args: list[str] | None = None, restart_policy: str = "Never") -> dict[str, Any]:
    """The pod spec; ``args`` is the workload command, run by the image's entry point (tini reaps and forwards signals)."""
    container = container_spec(template)
    if args:
        container["args"] = list(args)
    spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "activeDeadlineSeconds": int(template.deadline_s),
        "securityContext": dict(POD_SECURITY),
        "automountServiceAccountToken": template.api_access,
        "volumes": volumes(template),
        "containers": [container],
    }
    if template.node_selector:
        spec["nodeSelector"] = dict(template.node_selector)
    if template.tolerations:
        spec["tolerations"] = copy.deepcopy(template.tolerations)
    if template.service_account:
        spec["serviceAccountName"] = template.service_account
    return spec


def volumes(template: PodTemplate) -> list[dict[str, Any]]:
    scratch: dict[str, Any] = {"sizeLimit": template.scratch_size} if template.scratch_size else {}
    shm = (
        [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": template.shm_size}}] if template.shm_size else []
    )
    return [{"name": "scratch", "emptyDir": scratch}, *shm]


def executor_pod_template(template: PodTemplate) -> dict[str, Any]:
    """The pod Spark builds each executor on (``spark.kubernetes.executor.podTemplateFile``).

    Spark keeps what the template sets and adds its own: the image, command (``executor``, run by the
    image's entry point), cpu/memory from ``spark.executor.*``, env, its local-dir volume and the
    owner reference to the driver pod. So executors get the workload pods' security context, secret
    references, service account, placement and bounded scratch.
    """
    container = container_spec(template, name=EXECUTOR_CONTAINER)
    container["image"] = template.image
    container["env"] = []  # Spark adds its own (SPARK_LOCAL_DIRS on its spark-local-dir emptyDir, the driver URL, ...)
    spec = pod_spec(template, restart_policy="Never")
    spec.pop("activeDeadlineSeconds")  # executors live as long as their driver, which has the deadline
    spec["automountServiceAccountToken"] = False  # only the driver talks to the Kubernetes API
    spec["containers"] = [container]
    # Spark adds a volume spark-local-dir-1 at each SPARK_LOCAL_DIRS entry (the image's /tmp) unless the template
    # mounts one by that name: under any other name the pod mounts /tmp twice and the API server refuses it.
    for mount in container["volumeMounts"]:
        if mount["name"] == "scratch":
            mount["name"] = SPARK_LOCAL_DIR_VOLUME
    for volume in spec["volumes"]:
        if volume["name"] == "scratch":
            volume["name"] = SPARK_LOCAL_DIR_VOLUME
    # The image's WORKDIR is on the read-only root: executors fetch files and jars into their working directory.
    container["workingDir"] = SCRATCH
    # No owner reference here: Spark makes each executor owned by its driver pod (which the run pod owns).
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {**PART_OF, **template.labels}}, "spec": spec}


def spark_executor_object(pod: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The executor template as a ``PodTemplate`` object, for ``mltrain manifests`` to show and validate.

    Not submitted: the driver reads the same pod from its params and hands it to Spark.
    """
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {
            "name": "mltrain-spark-executor",
            "namespace": namespace,
            "annotations": {"mltrain/submitted": "no: the Spark driver reads it from its params (podTemplateFile)"},
        },
        "template": {"metadata": pod["metadata"], "spec": pod["spec"]},
    }


def pod_meta(template: PodTemplate) -> dict[str, Any]:
    return {"labels": {**PART_OF, **template.labels}, **owner_meta(template)}


def owner_meta(template: PodTemplate) -> dict[str, Any]:
    """``ownerReferences`` to the run pod that launched the objects, when it is known (both name and uid)."""
    if not (template.owner_pod and template.owner_uid):
        return {}
    # Not a controller (the Job controls its pods), and deleting the run pod never waits for ours.
    owner = {"apiVersion": "v1", "kind": "Pod", "name": template.owner_pod, "uid": template.owner_uid}
    return {"ownerReferences": [{**owner, "controller": False, "blockOwnerDeletion": False}]}


def render_pod(template: PodTemplate, *, name: str, command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """The Pod exactly as ``PipesK8sClient.run`` builds it (same ``build_pod_body``, same inputs)."""
    # The Kubernetes client costs ~0.4 s to import: only rendering a Pod pays for it, not loading the definitions.
    import kubernetes
    from dagster_k8s.pipes import build_pod_body

    pod = build_pod_body(
        pod_name=name,
        image=template.image,
        command=None,  # the workload command goes in args: the image's entry point (tini) stays process 1
        env_vars={**template.env, **env},
        base_pod_meta=pod_meta(template),
        base_pod_spec=pod_spec(template, args=command),
    )
    body = kubernetes.client.ApiClient().sanitize_for_serialization(pod)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        **body,
        "metadata": {**body["metadata"], "namespace": template.namespace},
    }


def render_indexed_job(
    template: PodTemplate,
    *,
    name: str,
    nodes: int,
    command: list[str],
    env: dict[str, str],
    port: int,
) -> list[dict[str, Any]]:
    """A headless Service and an Indexed Job of ``nodes`` pods; pod ``i`` is ``{name}-{i}.{name}``.

    Every pod runs the same command; it learns its node rank from ``JOB_COMPLETION_INDEX`` and
    reaches the rendezvous at pod 0 through the Service's DNS. A pod the cluster evicted or
    preempted (``DisruptionTarget``) is not the work's failure: its index gets a new pod, not counted
    against any limit, and training resumes from its checkpoint. A crashed pod is retried in place
    (``backoffLimitPerIndex``), then fails the Job (``maxFailedIndexes: 0``) and the step; a data
    rejection or an unavailable service (the workload's reported exit codes) fails the Job at once.
    """
    labels = {**PART_OF, **template.labels, "mltrain/job": name}
    spec = pod_spec(template, args=command)
    spec["subdomain"] = name  # with the headless Service: stable DNS per index for the rendezvous
    container = spec["containers"][0]
    container["image"] = template.image
    container["env"] += [{"name": k, "value": v} for k, v in {**template.env, **env}.items()]
    container["ports"] = [{"name": "rendezvous", "containerPort": port}]
    service_spec = {
        "clusterIP": "None",
        "selector": {"mltrain/job": name},
        "ports": [{"name": "rendezvous", "port": port, "targetPort": port}],
        "publishNotReadyAddresses": True,  # rendezvous happens before any pod is "ready"
    }
    job_spec = {
        "completionMode": "Indexed",
        "completions": nodes,
        "parallelism": nodes,
        "backoffLimitPerIndex": BACKOFF_LIMIT_PER_INDEX,
        "maxFailedIndexes": 0,
        "podReplacementPolicy": "Failed",  # a replacement starts once the old pod is gone: one hostname, one pod
        "podFailurePolicy": pod_failure_policy(),
        "activeDeadlineSeconds": int(template.deadline_s),
        "ttlSecondsAfterFinished": 3600,
        "template": {"metadata": {"labels": labels}, "spec": spec},
    }
    metadata = {"name": name, "namespace": template.namespace, "labels": labels, **owner_meta(template)}
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": service_spec},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec},
    ]


def pod_failure_policy() -> dict[str, Any]:
    """The Indexed Job's ``podFailurePolicy`` (rules apply in order; it needs ``restartPolicy: Never``)."""
    # runtime pulls in dagster_pipes and the artifact store (~0.1 s): only rendering a Job pays for it.
    from mltrain_assets.workloads.common.runtime import EXIT_DATA_REJECTED, EXIT_SERVICE_UNAVAILABLE

    return {
        "rules": [
            # Evicted, preempted, drained or its node lost: the Job starts another pod for the index.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            # Reported and final: the same input, or a service its client already retried, gives the same result.
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": [EXIT_DATA_REJECTED, EXIT_SERVICE_UNAVAILABLE],
                },
            },
        ]
    }


def rendezvous_endpoint(name: str, port: int) -> str:
    """Pod 0 of the Indexed Job, by its stable DNS name under the headless Service."""
    return f"{name}-0.{name}:{port}"


def object_name(run_id: str, step: str, partition: str) -> str:
    """A DNS-1123 name, unique per run and step (63 characters at most)."""
    digest = hashlib.sha256(f"{run_id}/{step}/{partition}".encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "-" for c in f"mltrain-{step}".lower()).strip("-")[:40].rstrip("-")
    return f"{stem}-{digest}"


def to_yaml(objects: list[dict[str, Any]]) -> str:
    import yaml

    class Plain(yaml.SafeDumper):
        def ignore_aliases(self, data):  # repeated label maps stay written out, as kubectl shows them
            return True

    return "".join("---\n" + yaml.dump(o, Dumper=Plain, sort_keys=False) for o in objects)
