"""Launching workloads, dagster-free: one ``Launcher`` protocol, and a launcher per place a workload runs.

- ``LocalProcess``: a supervised subprocess (``local``);
- ``KubernetesHere``: the rendered Pods / Indexed Job as local processes (``k8s-local``);
- ``KubernetesPod`` / ``IndexedJob``: the rendered objects submitted to a cluster (``k8s``);
- ``RenderOnly``: nothing launched, the objects returned (``mltrain manifests``).

Each compute resource of the control plane (``resources/deployments.py``, one per deployment, chosen
by ``MLTRAIN_COMPUTE``) supplies its launcher; ``mltrain reproduce`` uses ``LocalProcess`` too.
Importing this package imports no dagster and nothing heavy (the guard process imports it in a
bare interpreter): the Pipes channel of each deployment is its resource's (``Compute.pipes``).
"""

from mltrain_assets.launch.kubernetes import Cluster, IndexedJob, KubernetesPod, RenderOnly
from mltrain_assets.launch.local import KubernetesHere, LocalProcess, local_pods
from mltrain_assets.launch.metering import TreeUsage
from mltrain_assets.launch.protocol import Launch, Launcher, LaunchFailed, LaunchResult, PodCannotStart
from mltrain_assets.launch.supervisor import LaunchTimeout

__all__ = [
    "Cluster",
    "IndexedJob",
    "KubernetesHere",
    "KubernetesPod",
    "Launch",
    "LaunchFailed",
    "LaunchResult",
    "LaunchTimeout",
    "Launcher",
    "LocalProcess",
    "PodCannotStart",
    "RenderOnly",
    "TreeUsage",
    "local_pods",
]
