"""The Pod Security Standards checker: a compliant pod passes; breaking any one control is reported,
naming the object, the container, the control and its level; wrappers (Job, Deployment, CronJob, ...)
are unwrapped, and objects without pods yield nothing."""

import copy
import json
import re
import subprocess
import sys

import kubernetes_validate
import pytest

from mltrain_assets.resources.pod_security import RULES, pod_specs, violations

CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
}

COMPLIANT = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "mltrain-x",
        "annotations": {"container.apparmor.security.beta.kubernetes.io/workload": "runtime/default"},
    },
    "spec": {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
        },
        "initContainers": [
            {"name": "init", "image": "busybox:1.36", "securityContext": copy.deepcopy(CONTAINER_SECURITY)}
        ],
        "containers": [
            {
                "name": "workload",
                "image": "registry.example.com/mltrain:0.1.0",
                "ports": [{"containerPort": 8080}],
                "securityContext": copy.deepcopy(CONTAINER_SECURITY),
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }
        ],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}},
            {"name": "config", "configMap": {"name": "mltrain"}},
            {"name": "creds", "secret": {"secretName": "mltrain-aws"}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
        ],
    },
}

MESSAGE = re.compile(r"^(?P<place>[^:]+): (?P<control>.+?) \((?P<level>baseline|restricted|project)\): ")


def _pod() -> dict:
    return copy.deepcopy(COMPLIANT)


def _spec(pod: dict) -> dict:
    return pod["spec"]


def _workload(pod: dict) -> dict:
    return pod["spec"]["containers"][0]


def _parent(pod: dict, path: str) -> tuple[dict, str]:
    """The dict holding ``path``'s last key; paths start at "spec", "workload" or "init" (the two containers)."""
    root, *keys = path.split(".")
    obj = {"spec": _spec(pod), "workload": _workload(pod), "init": _spec(pod)["initContainers"][0]}[root]
    for key in keys[:-1]:
        obj = obj.setdefault(key, {})
    return obj, keys[-1]


def _set(path: str, value):
    """A mutation setting ``path`` ("spec.hostNetwork", "workload.securityContext.privileged") to ``value``."""

    def mutate(pod: dict) -> None:
        obj, key = _parent(pod, path)
        obj[key] = copy.deepcopy(value)

    return mutate


def _drop(path: str):
    def mutate(pod: dict) -> None:
        obj, key = _parent(pod, path)
        del obj[key]

    return mutate


def _add_volume(volume: dict):
    return lambda pod: _spec(pod)["volumes"].append(copy.deepcopy(volume))


def _both(*mutations):
    def mutate(pod: dict) -> None:
        for mutation in mutations:
            mutation(pod)

    return mutate


def _add_container(field: str, container: dict):
    return lambda pod: _spec(pod).setdefault(field, []).append(container)


POD = "Pod/mltrain-x"
WORKLOAD = f"{POD} container workload"
SECCOMP_UNCONFINED = {"type": "Unconfined"}
RESTRICTED_CAPABILITIES = ("Capabilities", "restricted")
BASELINE_CAPABILITIES = ("Capabilities", "baseline")

# (id, mutation, where the main violation is reported, every (control, level) reported)
BREAKS = [
    ("hostNetwork", _set("spec.hostNetwork", True), POD, {("Host Namespaces", "baseline")}),
    ("hostPID", _set("spec.hostPID", True), POD, {("Host Namespaces", "baseline")}),
    ("hostIPC", _set("spec.hostIPC", True), POD, {("Host Namespaces", "baseline")}),
    (
        "hostProcess",
        _set("workload.securityContext.windowsOptions", {"hostProcess": True}),
        WORKLOAD,
        {("HostProcess", "baseline")},
    ),
    (
        "privileged",
        _set("workload.securityContext.privileged", True),
        WORKLOAD,
        {("Privileged Containers", "baseline")},
    ),
    (
        "add SYS_ADMIN",
        _set("workload.securityContext.capabilities.add", ["SYS_ADMIN"]),
        WORKLOAD,
        {BASELINE_CAPABILITIES, RESTRICTED_CAPABILITIES},
    ),
    # NET_RAW is not in the PSS baseline list (it is in Docker's default set): both levels refuse it.
    (
        "add NET_RAW",
        _set("workload.securityContext.capabilities.add", ["NET_RAW"]),
        WORKLOAD,
        {BASELINE_CAPABILITIES, RESTRICTED_CAPABILITIES},
    ),
    (
        "add CHOWN (restricted only)",
        _set("workload.securityContext.capabilities.add", ["CHOWN"]),
        WORKLOAD,
        {RESTRICTED_CAPABILITIES},
    ),
    (
        "hostPath volume",
        _add_volume({"name": "host", "hostPath": {"path": "/var/run"}}),
        POD,
        {("HostPath Volumes", "baseline"), ("Volume Types", "restricted")},
    ),
    (
        "hostPort",
        _set("workload.ports", [{"containerPort": 8080, "hostPort": 8080}]),
        WORKLOAD,
        {("Host Ports", "baseline")},
    ),
    (
        "appArmorProfile Unconfined",
        _set("workload.securityContext.appArmorProfile", {"type": "Unconfined"}),
        WORKLOAD,
        {("AppArmor", "baseline")},
    ),
    (
        "AppArmor annotation unconfined",
        lambda pod: pod["metadata"]["annotations"].update(
            {"container.apparmor.security.beta.kubernetes.io/workload": "unconfined"}
        ),
        POD,
        {("AppArmor", "baseline")},
    ),
    (
        "SELinux type spc_t",
        _set("workload.securityContext.seLinuxOptions", {"type": "spc_t"}),
        WORKLOAD,
        {("SELinux", "baseline")},
    ),
    (
        "SELinux user",
        _set("spec.securityContext.seLinuxOptions", {"user": "system_u"}),
        POD,
        {("SELinux", "baseline")},
    ),
    (
        "procMount Unmasked",
        _set("workload.securityContext.procMount", "Unmasked"),
        WORKLOAD,
        {("/proc Mount Type", "baseline")},
    ),
    (
        "seccomp Unconfined (container)",
        _set("workload.securityContext.seccompProfile", SECCOMP_UNCONFINED),
        WORKLOAD,
        {("Seccomp", "baseline"), ("Seccomp", "restricted")},
    ),
    (
        "seccomp Unconfined (pod)",
        _set("spec.securityContext.seccompProfile", SECCOMP_UNCONFINED),
        POD,
        {("Seccomp", "baseline"), ("Seccomp", "restricted")},
    ),
    (
        "unsafe sysctl",
        _set("spec.securityContext.sysctls", [{"name": "kernel.msgmax", "value": "65536"}]),
        POD,
        {("Sysctls", "baseline")},
    ),
    (
        "nfs volume",
        _add_volume({"name": "shared", "nfs": {"server": "nfs.example.com", "path": "/data"}}),
        POD,
        {("Volume Types", "restricted")},
    ),
    (
        "allowPrivilegeEscalation missing",
        _drop("workload.securityContext.allowPrivilegeEscalation"),
        WORKLOAD,
        {("Privilege Escalation", "restricted")},
    ),
    (
        "allowPrivilegeEscalation true",
        _set("workload.securityContext.allowPrivilegeEscalation", True),
        WORKLOAD,
        {("Privilege Escalation", "restricted")},
    ),
    (
        "runAsNonRoot missing at both levels",
        _drop("spec.securityContext.runAsNonRoot"),
        WORKLOAD,
        {("Running as Non-root", "restricted")},
    ),
    (
        "runAsNonRoot false on a container",
        _set("workload.securityContext.runAsNonRoot", False),
        WORKLOAD,
        {("Running as Non-root", "restricted")},
    ),
    (
        "runAsNonRoot false on the pod",
        _both(
            _set("spec.securityContext.runAsNonRoot", False),
            _set("workload.securityContext.runAsNonRoot", True),
            _set("init.securityContext.runAsNonRoot", True),
        ),
        POD,
        {("Running as Non-root", "restricted")},
    ),
    (
        "runAsUser 0 (container)",
        _set("workload.securityContext.runAsUser", 0),
        WORKLOAD,
        {("Running as Non-root user", "restricted")},
    ),
    ("runAsUser 0 (pod)", _set("spec.securityContext.runAsUser", 0), POD, {("Running as Non-root user", "restricted")}),
    (
        "seccompProfile missing at both levels",
        _drop("spec.securityContext.seccompProfile"),
        WORKLOAD,
        {("Seccomp", "restricted")},
    ),
    (
        "capabilities drop missing ALL",
        _set("workload.securityContext.capabilities", {"drop": ["NET_RAW"]}),
        WORKLOAD,
        {RESTRICTED_CAPABILITIES},
    ),
    (
        "capabilities missing",
        _drop("workload.securityContext.capabilities"),
        WORKLOAD,
        {RESTRICTED_CAPABILITIES},
    ),
    (
        "readOnlyRootFilesystem missing",
        _drop("workload.securityContext.readOnlyRootFilesystem"),
        WORKLOAD,
        {("Read-only Root Filesystem", "project")},
    ),
    (
        "readOnlyRootFilesystem false",
        _set("workload.securityContext.readOnlyRootFilesystem", False),
        WORKLOAD,
        {("Read-only Root Filesystem", "project")},
    ),
    (
        "initContainer without securityContext",
        _drop("init.securityContext"),
        f"{POD} initContainer init",
        {("Privilege Escalation", "restricted"), RESTRICTED_CAPABILITIES, ("Read-only Root Filesystem", "project")},
    ),
    (
        "ephemeralContainer without securityContext",
        _add_container("ephemeralContainers", {"name": "debug", "image": "busybox:1.36"}),
        f"{POD} ephemeralContainer debug",
        {("Privilege Escalation", "restricted"), RESTRICTED_CAPABILITIES, ("Read-only Root Filesystem", "project")},
    ),
]


def _parsed(found: list[str]) -> list[dict]:
    parsed = [MESSAGE.match(line) for line in found]
    assert all(parsed), found
    return [match.groupdict() for match in parsed]


def test_a_compliant_pod_passes():
    kubernetes_validate.validate(COMPLIANT, "1.30", strict=True)
    assert violations(COMPLIANT) == []


@pytest.mark.parametrize(("mutation", "where", "controls"), [case[1:] for case in BREAKS], ids=[c[0] for c in BREAKS])
def test_breaking_one_control_is_reported(mutation, where, controls):
    pod = _pod()
    mutation(pod)
    found = violations(pod)
    parsed = _parsed(found)
    assert {(p["control"], p["level"]) for p in parsed} == controls, found
    for control, level in controls:
        assert any(line.startswith(f"{where}: {control} ({level}): ") for line in found), found
    assert all(" is " in line and ", must be " in line for line in found), found


def test_messages_name_the_field_and_the_value():
    pod = _pod()
    del _workload(pod)["securityContext"]["allowPrivilegeEscalation"]
    _workload(pod)["securityContext"]["privileged"] = True
    assert violations(pod) == [
        f"{WORKLOAD}: Privileged Containers (baseline): securityContext.privileged is true, must be unset or false",
        f"{WORKLOAD}: Privilege Escalation (restricted): securityContext.allowPrivilegeEscalation is unset, must be false",
    ]
    pod = _pod()
    _spec(pod)["volumes"].append({"name": "shared", "nfs": {"server": "nfs", "path": "/"}})
    (line,) = violations(pod)
    assert line.startswith(
        f"{POD}: Volume Types (restricted): spec.volumes[5] (shared) is of type nfs, must be one of configMap, csi, "
    )


def test_every_container_of_every_kind_is_checked():
    pod = _pod()
    for field in ("initContainers", "ephemeralContainers"):
        _spec(pod).setdefault(field, []).append({"name": f"bare-{field}", "image": "busybox:1.36"})
    _spec(pod)["containers"].append({"name": "bare-sidecar", "image": "busybox:1.36"})
    places = {MESSAGE.match(line)["place"] for line in violations(pod)}
    assert places == {
        f"{POD} initContainer bare-initContainers",
        f"{POD} ephemeralContainer bare-ephemeralContainers",
        f"{POD} container bare-sidecar",
    }


def test_container_level_settings_satisfy_the_pod_or_container_rules():
    pod = _pod()
    del _spec(pod)["securityContext"]["runAsNonRoot"]
    del _spec(pod)["securityContext"]["seccompProfile"]
    for container in (_workload(pod), _spec(pod)["initContainers"][0]):
        container["securityContext"].update(
            runAsNonRoot=True, seccompProfile={"type": "Localhost", "localhostProfile": "p.json"}
        )
    assert violations(pod) == []
    # ... but only if every container sets them.
    del _spec(pod)["initContainers"][0]["securityContext"]["seccompProfile"]
    (line,) = violations(pod)
    assert line.startswith(
        f"{POD} initContainer init: Seccomp (restricted): securityContext.seccompProfile.type is unset"
    )


@pytest.mark.parametrize(
    "mutation",
    [
        _set("workload.securityContext.capabilities.add", ["NET_BIND_SERVICE"]),
        _set("workload.securityContext.seccompProfile", {"type": "RuntimeDefault"}),
        _set("workload.securityContext.runAsNonRoot", True),
        _set("workload.securityContext.runAsUser", 1000),
        _set("workload.securityContext.appArmorProfile", {"type": "RuntimeDefault"}),
        _set("workload.securityContext.seLinuxOptions", {"type": "container_t", "level": "s0:c123,c456"}),
        _set("workload.securityContext.procMount", "Default"),
        _set("workload.ports", [{"containerPort": 8080, "hostPort": 0}]),
        _set("spec.hostNetwork", False),
        _set("spec.securityContext.sysctls", [{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}]),
        _add_volume(
            {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}}}
        ),
        _add_volume({"name": "csi", "csi": {"driver": "secrets-store.csi.k8s.io"}}),
        _add_volume({"name": "labels", "downwardAPI": {"items": []}}),
    ],
)
def test_allowed_values_pass(mutation):
    pod = _pod()
    mutation(pod)
    assert violations(pod) == []


def test_windows_pods_are_exempt_from_the_linux_only_controls():
    pod = _pod()
    _spec(pod)["os"] = {"name": "windows"}
    del _spec(pod)["securityContext"]["seccompProfile"]
    for container in (_workload(pod), _spec(pod)["initContainers"][0]):
        container["securityContext"] = {"readOnlyRootFilesystem": True}
    assert violations(pod) == []


WRAPPERS = {
    "Job": lambda spec: {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": spec}}},
    "Deployment": lambda spec: {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": spec}}},
    "StatefulSet": lambda spec: {"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"template": {"spec": spec}}},
    "DaemonSet": lambda spec: {"apiVersion": "apps/v1", "kind": "DaemonSet", "spec": {"template": {"spec": spec}}},
    "ReplicaSet": lambda spec: {"apiVersion": "apps/v1", "kind": "ReplicaSet", "spec": {"template": {"spec": spec}}},
    "CronJob": lambda spec: {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {"spec": spec}}}},
    },
    "PodTemplate": lambda spec: {"apiVersion": "v1", "kind": "PodTemplate", "template": {"spec": spec}},
}


@pytest.mark.parametrize("kind", list(WRAPPERS))
def test_workloads_are_unwrapped(kind):
    obj = WRAPPERS[kind](copy.deepcopy(COMPLIANT["spec"]))
    obj["metadata"] = {"name": "wrapped"}
    ((label, spec),) = pod_specs(obj)
    assert label == f"{kind}/wrapped" and spec["containers"][0]["name"] == "workload"
    assert violations(obj) == []
    spec["hostNetwork"] = True
    assert violations(obj) == [
        f"{kind}/wrapped: Host Namespaces (baseline): spec.hostNetwork is true, must be unset or false"
    ]


def test_a_list_is_checked_item_by_item():
    bad = _pod()
    bad["metadata"]["name"] = "bad"
    _workload(bad)["securityContext"]["privileged"] = True
    objects = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [_pod(), bad, {"kind": "Service", "metadata": {"name": "s"}}],
    }
    assert [label for label, _ in pod_specs(objects)] == ["Pod/mltrain-x", "Pod/bad"]
    assert [line.split(":")[0] for line in violations(objects)] == ["Pod/bad container workload"]


@pytest.mark.parametrize(
    "obj",
    [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"clusterIP": "None"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "empty"}, "spec": {}},
    ],
    ids=["Service", "ConfigMap", "Job without a template"],
)
def test_objects_without_pods_yield_nothing(obj):
    assert pod_specs(obj) == [] and violations(obj) == []


def test_the_rule_table_covers_every_control():
    rows = {(rule.control, rule.level) for rule in RULES}
    assert len(rows) == len(RULES) == 18
    baseline = {
        "HostProcess",
        "Host Namespaces",
        "Privileged Containers",
        "Capabilities",
        "HostPath Volumes",
        "Host Ports",
        "AppArmor",
        "SELinux",
        "/proc Mount Type",
        "Seccomp",
        "Sysctls",
    }
    restricted = {
        "Volume Types",
        "Privilege Escalation",
        "Running as Non-root",
        "Running as Non-root user",
        "Seccomp",
        "Capabilities",
    }
    assert rows == {(c, "baseline") for c in baseline} | {(c, "restricted") for c in restricted} | {
        ("Read-only Root Filesystem", "project")
    }
    assert all(rule.requirement and callable(rule.check) for rule in RULES)


def test_the_module_imports_only_the_standard_library():
    script = "import json, sys; import mltrain_assets.resources.pod_security; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    modules = set(json.loads(result.stdout))
    assert not {"dagster", "yaml", "kubernetes", "pydantic"} & modules
    assert {m for m in modules if m.startswith("mltrain_assets")} == {
        "mltrain_assets",
        "mltrain_assets.resources",
        "mltrain_assets.resources.pod_security",
    }
