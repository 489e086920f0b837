"""Every pod the Dagster Helm chart creates from helm-values/dagster.yaml passes the Pod Security Standards
"restricted" profile (v1.30) and the project's read-only root filesystem rule
(mltrain_assets/resources/pod_security.py).

There is no ``helm`` binary here, so this does not render the chart: it builds each pod from the values the
way the official chart's templates do (dagster-io/dagster, helm/dagster), for every field the checks read:

- the code location, charts/dagster-user-deployments/templates/deployment-user.yaml: ``podSecurityContext``
  becomes the pod's securityContext, ``securityContext`` the container's; ``volumes``, ``volumeMounts``, and
  ``initContainers`` are copied as they are;
- the webserver, templates/deployment-webserver.yaml (helpers/_deployment-webserver.tpl), and the daemon,
  templates/deployment-daemon.yaml: the same two keys, plus the init containers ``check-db-ready`` and
  ``init-user-deployment-<name>``, which the chart gives the component's ``securityContext`` too;
- the webserver's command (``dagster-webserver -h 0.0.0.0 -p <service.port>``, helpers/_helpers.tpl), its
  containerPort "http", its probes as the values give them, and its Service (helpers/_service-webserver.tpl);
- the run pods: templates/helpers/instance/_run-launcher.tpl writes ``runLauncher.config.k8sRunLauncher``
  into the instance's run launcher config, and the code location's container context
  (``includeConfigInLaunchedRuns``; "dagsterUserDeployments.k8sContainerContext" in the subchart's
  helpers/_helpers.tpl) travels on the run's origin. From there nothing is retyped: a real K8sRunLauncher
  launches the run and the Job it posts is what is checked (test_helm_run_job.launched_run_jobs).

Every container's command, args and ports are also checked against what it may bind (``privileged_ports``):
a non-root container with all capabilities dropped cannot listen below 1024.

The chart's defaults for the keys these values leave unset (securityContext, volumes, extra containers)
are empty. Each object is also validated as a Kubernetes v1.30 object, and the checks must reach every
container listed in EXPECTED_CONTAINERS, so the test cannot pass on an empty pod list.
"""

import copy
import tempfile
from pathlib import Path

import pytest

from mltrain_assets.resources.pod_security import listening_ports, pod_specs, privileged_ports, violations

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "helm-values" / "dagster.yaml"
RELEASE, NAMESPACE = "dagster", "mltrain"  # helm upgrade --install dagster dagster/dagster -n mltrain
DAGSTER_HOME = "/opt/dagster/dagster_home"  # the chart's global.dagsterHome default
# The chart's postgresql.image (check-db-ready) and busybox.image (init-user-deployment-*): the tags do not
# matter to the checks, which read only the securityContext the chart gives these init containers.
POSTGRES_IMAGE = "docker.io/library/postgres:14.6"
BUSYBOX_IMAGE = "docker.io/library/busybox:1.28"
RUN_JOB = "dagster-run-5e1f0c2a-0000-4000-8000-000000000000"  # get_job_name_from_run_id(test_helm_run_job.RUN_ID)

# (object, container) pairs the checks must reach: the chart's pods and all their containers.
EXPECTED_CONTAINERS = {
    ("Deployment/dagster-dagster-user-deployments-mltrain-assets", "container dagster-user-deployments"),
    ("Deployment/dagster-webserver", "container dagster"),
    ("Deployment/dagster-webserver", "initContainer check-db-ready"),
    ("Deployment/dagster-webserver", "initContainer init-user-deployment-mltrain-assets"),
    ("Deployment/dagster-daemon", "container dagster"),
    ("Deployment/dagster-daemon", "initContainer check-db-ready"),
    ("Deployment/dagster-daemon", "initContainer init-user-deployment-mltrain-assets"),
    (f"Job/{RUN_JOB}", "container dagster"),
}


def load_values() -> dict:
    # A deep copy: YAML aliases (*container-security, ...) load as one shared object.
    return copy.deepcopy(yaml.safe_load(VALUES.read_text()))


def _image(image: dict) -> str:
    return f"{image['repository']}:{image['tag']}"  # "dagster.dagsterImage.name"


def _deployment(name: str, component: str, spec: dict) -> dict:
    labels = {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": RELEASE, "component": component}
    spec = {key: value for key, value in spec.items() if value not in (None, [], {})}  # toYaml of empty: dropped
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def _user_deployments(vals: dict) -> list[dict]:
    """charts/dagster-user-deployments/templates/deployment-user.yaml, one Deployment per code location."""
    subchart = vals["dagster-user-deployments"]
    objects = []
    for deployment in subchart["deployments"] if subchart.get("enabled") else []:
        container = {
            "name": "dagster-user-deployments",  # $.Chart.Name
            "securityContext": deployment.get("securityContext") or {},
            "imagePullPolicy": deployment["image"]["pullPolicy"],
            "image": _image(deployment["image"]),
            "args": ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(deployment["port"])]
            + deployment["dagsterApiGrpcArgs"],
            "resources": deployment.get("resources") or {},
            # The chart's default readiness probe (no readinessProbe in the values): a client of the port.
            "readinessProbe": {
                "exec": {"command": ["dagster", "api", "grpc-health-check", "-p", str(deployment["port"])]},
                "periodSeconds": 20,
                "timeoutSeconds": 10,
                "successThreshold": 1,
                "failureThreshold": 15,
            },
            "volumeMounts": deployment.get("volumeMounts"),
        }
        spec = {
            "serviceAccountName": vals["global"]["serviceAccountName"],
            "securityContext": deployment.get("podSecurityContext") or {},
            "initContainers": deployment.get("initContainers"),
            "containers": [{k: v for k, v in container.items() if v is not None}],
            "nodeSelector": deployment.get("nodeSelector"),
            "tolerations": deployment.get("tolerations"),
            "volumes": deployment.get("volumes"),
        }
        name = f"{RELEASE}-dagster-user-deployments-{deployment['name']}"
        objects.append(_deployment(name, "user-deployments", spec))
    return objects


def _pg_isready(postgresql: dict) -> str:
    """helpers/_helpers.tpl, "dagster.postgresql.pgisready" (external PostgreSQL: postgresqlHost, quoted)."""
    host, port, user = postgresql["postgresqlHost"], postgresql["service"]["port"], postgresql["postgresqlUsername"]
    return f'until pg_isready -h "{host}" -p {port} -U {user}; do echo waiting for database; sleep 2; done;'


def _command(vals: dict, key: str) -> str:
    """helpers/_helpers.tpl, "dagster.webserver.dagsterWebserverCommand" and "dagster.dagsterDaemon.daemonCommand"."""
    workspace = " -w /dagster-workspace/workspace.yaml" if vals["dagster-user-deployments"].get("enabled") else ""
    if key == "dagsterDaemon":
        return f"dagster-daemon run{workspace}"
    values = vals[key]
    command = f"dagster-webserver -h 0.0.0.0 -p {values['service']['port']}{workspace}"
    for option, flag in (("dbStatementTimeout", "--db-statement-timeout"), ("dbPoolRecycle", "--db-pool-recycle")):
        command += f" {flag} {values[option]}" if values.get(option) else ""
    command += f" --path-prefix {values['pathPrefix']}" if values.get("pathPrefix") else ""
    return command + (f" --log-level {values['logLevel']}" if values.get("logLevel") else "")


def _webserver_service(vals: dict) -> dict:
    """helpers/_service-webserver.tpl: one port, named http, no targetPort (so the same port on the pod)."""
    service = vals["dagsterWebserver"]["service"]
    selector = {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": RELEASE}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"{RELEASE}-webserver", "namespace": NAMESPACE},
        "spec": {
            "type": service.get("type") or "ClusterIP",
            "ports": [{"port": service.get("port") or 80, "protocol": "TCP", "name": "http"}],
            "selector": {**selector, "component": "dagster-webserver"},
        },
    }


def _control_plane(vals: dict, key: str, name: str, component: str) -> dict:
    """deployment-webserver.yaml / deployment-daemon.yaml: the component's pod, its init containers included."""
    values = vals[key]
    security = values.get("securityContext") or {}
    init_resources = values.get("initContainerResources") or {}
    user_deployments = vals["dagster-user-deployments"]
    init_containers = list(values.get("extraPrependedInitContainers") or [])
    if values.get("checkDbReadyInitContainer", True):
        init_containers.append(
            {
                "name": "check-db-ready",
                "image": POSTGRES_IMAGE,
                "command": ["sh", "-c", _pg_isready(vals["postgresql"])],
                "securityContext": security,
                "resources": init_resources,
            }
        )
    if user_deployments.get("enabled") and user_deployments.get("enableSubchart", True):
        for deployment in user_deployments["deployments"]:
            init_containers.append(
                {
                    "name": f"init-user-deployment-{deployment['name']}",
                    "image": BUSYBOX_IMAGE,
                    "command": ["sh", "-c", f"until nslookup {deployment['name']}; do sleep 2; done"],
                    "securityContext": security,
                    "resources": init_resources,
                }
            )
    mounts = [{"name": "dagster-instance", "mountPath": f"{DAGSTER_HOME}/dagster.yaml", "subPath": "dagster.yaml"}]
    volumes = [{"name": "dagster-instance", "configMap": {"name": f"{RELEASE}-instance"}}]
    if user_deployments.get("enabled"):
        mounts.append({"name": "dagster-workspace-yaml", "mountPath": "/dagster-workspace/"})
        volumes.append({"name": "dagster-workspace-yaml", "configMap": {"name": f"{RELEASE}-workspace-yaml"}})
    container = {
        "name": "dagster",  # .Chart.Name
        "securityContext": security,
        "imagePullPolicy": values["image"]["pullPolicy"],
        "image": _image(values["image"]),
        "command": ["/bin/bash", "-c", _command(vals, key)],
        "volumeMounts": mounts + list(values.get("volumeMounts") or []),
        "resources": values.get("resources") or {},
    }
    if key == "dagsterWebserver":
        container["ports"] = [{"name": "http", "containerPort": values["service"]["port"], "protocol": "TCP"}]
        for probe in ("readinessProbe", "livenessProbe"):
            if values.get(probe):
                container[probe] = values[probe]
        if (values.get("startupProbe") or {}).get("enabled"):
            container["startupProbe"] = {k: v for k, v in values["startupProbe"].items() if k != "enabled"}
    spec = {
        "serviceAccountName": vals["global"]["serviceAccountName"],
        "securityContext": values.get("podSecurityContext") or {},
        "initContainers": init_containers,
        "containers": [container, *(values.get("extraContainers") or [])],
        "nodeSelector": values.get("nodeSelector"),
        "tolerations": values.get("tolerations"),
        "volumes": volumes + list(values.get("volumes") or []),
    }
    return _deployment(name, component, spec)


def _run_launcher_config(vals: dict) -> dict:
    """templates/helpers/instance/_run-launcher.tpl, "dagsterYaml.runLauncher.k8s": the instance's config."""
    launcher = vals["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    run_k8s = k8s.get("runK8sConfig") or {}
    parts = ("containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata")
    snake = ("container_config", "pod_spec_config", "pod_template_spec_metadata", "job_spec_config", "job_metadata")
    config = {
        "load_incluster_config": k8s.get("loadInclusterConfig", True),
        "job_namespace": k8s.get("jobNamespace") or NAMESPACE,
        "service_account_name": vals["global"]["serviceAccountName"],
        "dagster_home": DAGSTER_HOME,
        "instance_config_map": f"{RELEASE}-instance",
        "postgres_password_secret": "dagster-postgresql-secret",
        "env_config_maps": [m["name"] for m in k8s.get("envConfigMaps") or [] if "name" in m],
        "env_secrets": [s["name"] for s in k8s.get("envSecrets") or [] if "name" in s],
        "env_vars": k8s.get("envVars"),
        "volume_mounts": k8s.get("volumeMounts"),
        "volumes": k8s.get("volumes"),
        "labels": k8s.get("labels"),
        "resources": k8s.get("resources"),
        "scheduler_name": k8s.get("schedulerName"),
        "security_context": k8s.get("securityContext"),
        "run_k8s_config": {s: run_k8s[p] for p, s in zip(parts, snake, strict=True) if run_k8s.get(p)},
    }
    return {key: value for key, value in config.items() if value not in (None, [], {})}


def _code_location_container_context(vals: dict, deployment: dict) -> dict:
    """charts/dagster-user-deployments/templates/helpers/_helpers.tpl, "dagsterUserDeployments.k8sContainerContext"."""
    k8s = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [f"{RELEASE}-dagster-user-deployments-{deployment['name']}-user-env"]
        + [m["name"] for m in deployment.get("envConfigMaps") or [] if "name" in m],
        "env_secrets": [s["name"] for s in deployment.get("envSecrets") or [] if "name" in s],
        "volume_mounts": deployment.get("volumeMounts"),
        "volumes": deployment.get("volumes"),
        "labels": deployment.get("labels"),
        "resources": deployment.get("resources"),
        "scheduler_name": deployment.get("schedulerName"),
        "namespace": NAMESPACE,
        "service_account_name": vals["global"]["serviceAccountName"],
        "env": deployment.get("env") if isinstance(deployment.get("env"), list) else None,
    }
    pod_spec_config = {
        "automount_service_account_token": True,
        "containers": deployment.get("sidecarContainers"),
        "init_containers": deployment.get("initContainers"),
    }
    k8s["run_k8s_config"] = {"pod_spec_config": {k: v for k, v in pod_spec_config.items() if v}}
    if deployment.get("annotations"):
        k8s["run_k8s_config"]["pod_template_spec_metadata"] = {"annotations": deployment["annotations"]}
    return {"k8s": {key: value for key, value in k8s.items() if value not in (None, [], {})}}


def _run_jobs(vals: dict) -> list[dict]:
    """The Job K8sRunLauncher posts for a run of each code location: launched by dagster-k8s itself
    (test_helm_run_job.launched_run_jobs) against a local stand-in for the API server."""
    from mltrain_assets_tests.test_helm_run_job import launched_run_jobs  # imports this module: here, not at the top

    with tempfile.TemporaryDirectory() as tmp:
        return launched_run_jobs(vals, Path(tmp))


def chart_objects(vals: dict) -> list[dict]:
    objects = _user_deployments(vals)
    objects.append(_control_plane(vals, "dagsterWebserver", f"{RELEASE}-webserver", "dagster-webserver"))
    objects.append(_webserver_service(vals))
    if vals["dagsterDaemon"].get("enabled", True):
        objects.append(_control_plane(vals, "dagsterDaemon", f"{RELEASE}-daemon", "dagster-daemon"))
    return objects + _run_jobs(vals)


def _containers_reached(objects: list[dict]) -> set[tuple[str, str]]:
    return {
        (label, f"{field[:-1]} {container['name']}")
        for obj in objects
        for label, spec in pod_specs(obj)
        for field in ("containers", "initContainers", "ephemeralContainers")
        for container in spec.get(field) or []
    }


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return chart_objects(load_values())


def test_every_pod_the_chart_creates_passes_restricted(objects):
    assert _containers_reached(objects) == EXPECTED_CONTAINERS
    for obj in objects:
        assert violations(obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"


def test_the_built_objects_are_valid_kubernetes(objects):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30", strict=True)
        for label, spec in pod_specs(obj):
            names = [volume["name"] for volume in spec.get("volumes") or []]
            assert len(names) == len(set(names)), f"{label}: duplicate volumes {names}"
            for container in spec["containers"] + (spec.get("initContainers") or []):
                mounts = {mount["name"] for mount in container.get("volumeMounts") or []}
                assert mounts <= set(names), f"{label} {container['name']}: mounts {mounts - set(names)}"


def test_the_run_pod_carries_the_launcher_and_code_location_settings(objects):
    (job,) = [obj for obj in objects if obj["kind"] == "Job"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The code location's volumes reach its runs too (includeConfigInLaunchedRuns): /tmp and the instance for `mltrain init`.
    assert [volume["name"] for volume in pod["volumes"]] == ["tmp", "mltrain-instance"]
    assert {"secretRef": {"name": "mltrain-aws"}} in container["envFrom"]  # the code location's context arrived
    assert container["image"].startswith("registry.example.com/mltrain:")


def _set(path: str, value):
    def mutate(vals: dict) -> None:
        *keys, last = path.split(".")
        node = vals
        for key in keys:
            node = node[int(key)] if key.isdigit() else node[key]
        node[last] = value

    return mutate


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (
            _set("dagster-user-deployments.deployments.0.podSecurityContext", {"runAsUser": 0}),
            "Deployment/dagster-dagster-user-deployments-mltrain-assets: Running as Non-root user (restricted)",
        ),
        (
            _set("dagster-user-deployments.deployments.0.volumes", [{"name": "tmp", "hostPath": {"path": "/tmp"}}]),
            "Deployment/dagster-dagster-user-deployments-mltrain-assets: HostPath Volumes (baseline)",
        ),
        (
            _set("dagsterWebserver.securityContext", {"readOnlyRootFilesystem": True}),
            "Deployment/dagster-webserver initContainer check-db-ready: Privilege Escalation (restricted)",
        ),
        (
            _set("dagsterDaemon.securityContext", {}),
            "Deployment/dagster-daemon initContainer init-user-deployment-mltrain-assets: "
            "Read-only Root Filesystem (project)",
        ),
        (
            _set("dagsterDaemon.podSecurityContext", {"seccompProfile": {"type": "Unconfined"}}),
            "Deployment/dagster-daemon: Seccomp (baseline)",
        ),
        (
            _set(
                "runLauncher.config.k8sRunLauncher.runK8sConfig.podSpecConfig.securityContext", {"runAsNonRoot": False}
            ),
            f"Job/{RUN_JOB}: Running as Non-root (restricted)",
        ),
        (
            _set(
                "runLauncher.config.k8sRunLauncher.runK8sConfig.containerConfig.securityContext.capabilities",
                {"add": ["SYS_ADMIN"]},
            ),
            f"Job/{RUN_JOB} container dagster: Capabilities (baseline)",
        ),
    ],
    ids=[
        "code location pod",
        "code location volume",
        "webserver init",
        "daemon init",
        "daemon pod",
        "run pod",
        "run container",
    ],
)
def test_the_mirror_follows_the_values(mutation, expected):
    """Each value the pods are built from reaches them: breaking it in the values breaks the pod."""
    vals = load_values()
    mutation(vals)
    found = [line for obj in chart_objects(vals) for line in violations(obj)]
    assert any(line.startswith(expected) for line in found), found


def _webserver(objects: list[dict]) -> dict:
    (deployment,) = [
        obj for obj in objects if obj["metadata"]["name"] == f"{RELEASE}-webserver" and obj["kind"] != "Service"
    ]
    return deployment


def test_no_chart_pod_listens_on_a_privileged_port(objects):
    """Every container's command, args and declared ports, against what it may bind (item: non-root start)."""
    for obj in objects:
        assert privileged_ports(obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"
    # What the check read: the webserver's and the code server's listening ports (not an empty scan).
    ports = {
        (label, container["name"], port)
        for obj in objects
        for label, spec in pod_specs(obj)
        for container in spec["containers"]
        for _, port in listening_ports(container)
    }
    assert ("Deployment/dagster-webserver", "dagster", 8080) in ports
    assert ("Deployment/dagster-dagster-user-deployments-mltrain-assets", "dagster-user-deployments", 3030) in ports


def test_the_webserver_probes_and_service_follow_its_port(objects):
    (container,) = _webserver(objects)["spec"]["template"]["spec"]["containers"]
    listening = {port for where, port in listening_ports(container) if where.startswith("command")}
    assert listening == {8080}, container["command"]
    assert [port["containerPort"] for port in container["ports"]] == [8080]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in (8080, "http"), probe
    vals = load_values()
    startup = vals["dagsterWebserver"]["startupProbe"]
    assert startup["httpGet"]["port"] == 8080  # off, but right if switched on
    (service,) = [obj for obj in objects if obj["kind"] == "Service"]  # validated with the others below
    (port,) = service["spec"]["ports"]
    assert port.get("targetPort", port["port"]) == 8080


def test_the_chart_default_port_is_refused():
    """The chart's default (service.port 80) under these security contexts: the webserver could not bind."""
    vals = load_values()
    vals["dagsterWebserver"]["service"]["port"] = 80
    found = privileged_ports(_webserver(chart_objects(vals)))
    assert found == [
        "Deployment/dagster-webserver container dagster: Privileged Port (project): ports[0].containerPort is 80, "
        "must be 1024 or above, or the container must add NET_BIND_SERVICE",
        "Deployment/dagster-webserver container dagster: Privileged Port (project): command -p 80 is 80, "
        "must be 1024 or above, or the container must add NET_BIND_SERVICE",
    ]


@pytest.mark.parametrize(
    ("container", "sysctls", "refused"),
    [
        ({"args": ["dagster", "api", "grpc", "--port", "443"]}, [], ["command --port 443 is 443"]),
        ({"args": ["server", "--port=80"]}, [], ["command --port=80 is 80"]),
        ({"command": ["sh", "-c", "exec app -p $PORT"]}, [], ["command -p $PORT is not a port number"]),
        (
            {"ports": [{"containerPort": 80}], "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}},
            [],
            [],
        ),
        ({"ports": [{"containerPort": 80}]}, [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}], []),
        ({"args": ["server", "-p", "8080"]}, [], []),
    ],
    ids=["--port N", "--port=N", "not a literal", "NET_BIND_SERVICE", "sysctl lowers the start", "unprivileged"],
)
def test_privileged_ports_reads_commands_capabilities_and_sysctls(container, sysctls, refused):
    pod = {
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"securityContext": {"sysctls": sysctls}, "containers": [{"name": "c", "image": "x", **container}]},
    }
    found = privileged_ports(pod)
    assert len(found) == len(refused), found
    for line, expected in zip(found, refused, strict=True):
        assert line.startswith("Pod/p container c: Privileged Port (project): ") and expected in line, line
