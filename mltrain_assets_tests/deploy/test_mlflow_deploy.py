"""The MLflow tracking server's manifests (deploy/mlflow/): valid, restricted, credential-free, and runnable.

The static tests check every object as the API server and Pod Security admission would (kubernetes-validate
1.30 strict, mltrain_assets/resources/pod_security.py) and scan it for credentials. The service test runs the
Deployment container's exact command, through the image's entry point, with the Secret's values replaced by
test ones: PostgreSQL (two fresh databases on the local server), S3 (moto on 127.0.0.1) and the basic-auth
app; only the listen address and port differ (127.0.0.1 and a free port instead of 0.0.0.0:5000).
"""

import configparser
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import psycopg2
import pytest
import requests
import yaml

from mltrain_assets.loopback import free_port
from mltrain_assets.resources.pod_security import pod_specs, violations
from mltrain_assets_tests.services.conftest import service_missing
from mltrain_assets_tests.test_no_secrets import CREDENTIAL

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "deploy" / "mlflow"
ENTRYPOINT = REPO / "deploy" / "docker" / "entrypoint.sh"
# A URI whose user-info carries a password: scheme://user:password@host.
URI_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@")
# Env names whose value is a credential (or a URI that may carry one): only ever a Secret reference.
SECRET_ENV = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|STORE_URI|DATABASE_URI|DATABASE_URL")
PG = {
    "host": os.environ.get("MLTRAIN_PG_HOST", "127.0.0.1"),
    "port": os.environ.get("MLTRAIN_PG_PORT", "5432"),
    "user": os.environ.get("MLTRAIN_PG_USER", "mltrain"),
    "password": os.environ.get("MLTRAIN_PG_PASSWORD", "mltrain"),
}


def load_objects() -> list[dict]:
    objects = [obj for path in sorted(MANIFESTS.glob("*.yaml")) for obj in yaml.safe_load_all(path.read_text()) if obj]
    assert objects, f"no objects in {MANIFESTS}"
    return objects


def find(objects: list[dict], kind: str, name: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def server_container(objects: list[dict]) -> dict:
    (container,) = find(objects, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    return container


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def write_config_maps(objects: list[dict], root: Path) -> dict[str, Path]:
    """The server's ConfigMap volumes written under ``root`` as the kubelet mounts them: ``{mountPath: folder}``."""
    pod = find(objects, "Deployment", "mlflow")["spec"]["template"]["spec"]
    mounted = {}
    for mount in server_container(objects)["volumeMounts"]:
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        if "configMap" in volume:
            folder = root / mount["mountPath"].lstrip("/")
            folder.mkdir(parents=True)
            for key, text in find(objects, "ConfigMap", volume["configMap"]["name"])["data"].items():
                (folder / key).write_text(text)
            mounted[mount["mountPath"]] = folder
    return mounted


def local_path(value: str, mounted: dict[str, Path]) -> str:
    """A path in the pod, as the file written by ``write_config_maps``; other values unchanged."""
    for path, folder in mounted.items():
        if value.startswith(path + "/"):
            return str(folder) + value.removeprefix(path)
    return value


def strings(value, where: str = ""):
    """Every string in a loaded object, with its path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, f"{where}[{index}]")
    elif isinstance(value, str):
        yield where, value


def credential_findings(obj: dict) -> list[str]:
    """Credential-shaped literals in one object: secrets, passwords in URIs, secret env given a literal value."""
    found = [
        f"{where}: {text[:60]}"
        for where, text in strings(obj)
        for line in text.splitlines()
        if CREDENTIAL.search(line) or URI_WITH_PASSWORD.search(line)
    ]
    for label, spec in pod_specs(obj):
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            for env in container.get("env", []):
                if SECRET_ENV.search(env["name"]) and "secretKeyRef" not in (env.get("valueFrom") or {}):
                    found.append(f"{label} {container['name']}: env {env['name']} is not a Secret reference")
            if any(
                arg.startswith(("--backend-store-uri", "--registry-store-uri")) for arg in container.get("args", [])
            ):
                found.append(f"{label} {container['name']}: a store URI on the command line")
    return found


def test_every_object_is_a_valid_kubernetes_object_and_the_pod_is_restricted():
    objects = load_objects()
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30", strict=True)
        assert violations(obj) == [], "Pod Security restricted + read-only root"
        assert obj["metadata"]["namespace"] == "mltrain"
    pods = [spec for obj in objects for _, spec in pod_specs(obj)]
    assert len(pods) == 1, "the checks reached the server's pod"
    (pod,) = pods
    assert pod["automountServiceAccountToken"] is False
    assert find(objects, "ServiceAccount", pod["serviceAccountName"])["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False, "the Service would inject MLFLOW_PORT=tcp://..."
    container = server_container(objects)
    assert container["securityContext"]["runAsUser"] == pod["securityContext"]["runAsUser"] == 10001
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "a writable /tmp under a read-only root"


def test_the_service_is_where_the_workloads_look_and_the_server_listens_unprivileged():
    objects = load_objects()
    container = server_container(objects)
    (port,) = container["ports"]
    args = container["args"]
    assert args[:2] == ["mlflow", "server"] and "command" not in container, "the image's entry point runs it"
    assert int(option(args, "--port")) == port["containerPort"] >= 1024, "no port below 1024 without capabilities"
    assert option(args, "--host") == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": port["name"]}
    service = find(objects, "Service", "mlflow")
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    pod_labels = find(objects, "Deployment", "mlflow")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    url = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    values = yaml.safe_load((REPO / "helm-values" / "dagster.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    env = {e["name"]: e.get("value") for e in deployment["env"]}
    assert env["MLFLOW_TRACKING_URI"] == f"{url}:{service_port['port']}"
    allowed = option(args, "--allowed-hosts").split(",")
    assert f"{urlsplit(url).hostname}:{service_port['port']}" in allowed, "the workloads' Host header is accepted"
    assert option(args, "--workers") == "1" and option(args, "--app-name") == "basic-auth"
    assert "--serve-artifacts" in args and option(args, "--artifacts-destination").startswith("s3://")
    literal = {e["name"]: e.get("value") for e in container["env"]}
    assert literal["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_mlflow_reads_the_shipped_auth_config_with_the_admin_from_the_environment(tmp_path, monkeypatch):
    from mlflow.server.auth.config import read_auth_config
    from mlflow.server.auth.permissions import _validate_permission

    objects = load_objects()
    env = {e["name"]: e for e in server_container(objects)["env"]}
    path = local_path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"], write_config_maps(objects, tmp_path))
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", path)
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "from-the-secret")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "from-the-" + "secret-too")
    config = read_auth_config()
    _validate_permission(config.default_permission)
    assert config.default_permission != "MANAGE"
    assert (config.admin_username, config.admin_password) == ("from-the-secret", "from-the-" + "secret-too")
    database = urlsplit(config.database_uri)
    assert database.scheme == "postgresql+psycopg2" and database.password is None, "the password is PGPASSWORD"
    assert config.authorization_function == "mlflow.server.auth:authenticate_request_basic_auth"
    assert config.auth_cache_ttl_seconds > 0
    assert "secretKeyRef" in env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]


def test_no_object_holds_a_credential():
    objects = load_objects()
    assert [finding for obj in objects for finding in credential_findings(obj)] == []
    container = server_container(objects)
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    for name in ("MLFLOW_BACKEND_STORE_URI", "PGPASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "AWS_SECRET_ACCESS_KEY"):
        assert name in secret_refs, f"{name} comes from a Secret"


@pytest.mark.parametrize(
    "plant",
    ["ini", "env", "arg"],
)
def test_the_scan_finds_a_planted_credential(plant):
    objects = load_objects()
    # Assembled at run time so this file holds no credential-shaped line of its own.
    uri = "postgresql+psycopg2://mlflow:" + "s3cr3t-pass" + "@db.example:5432/mlflow"
    if plant == "ini":
        target = find(objects, "ConfigMap", "mlflow-basic-auth")
        ini = target["data"]["basic_auth.ini"]
        target["data"]["basic_auth.ini"] = re.sub(r"(?m)^database_uri = .*$", f"database_uri = {uri}", ini)
    else:
        target = find(objects, "Deployment", "mlflow")
        container = target["spec"]["template"]["spec"]["containers"][0]
        if plant == "env":
            container["env"] = [
                {"name": "MLFLOW_AUTH_ADMIN_PASSWORD", "value": "not-from-a-secret"} if e["name"] == "PGPASSWORD" else e
                for e in container["env"]
            ]
        else:
            container["args"] = [*container["args"], "--backend-store-uri", uri]
    assert credential_findings(target)


# The running server -------------------------------------------------------------------------------------------


@pytest.fixture
def postgres_databases():
    """Two fresh databases on the running PostgreSQL (tracking + registry, and basic-auth users), dropped after."""
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG)
    except psycopg2.OperationalError as exc:
        service_missing(f"PostgreSQL not reachable at {PG['host']}:{PG['port']} ({exc}); .ci/run starts it")
    admin.autocommit = True
    names = (f"mlflow_deploy_{os.getpid()}", f"mlflow_deploy_auth_{os.getpid()}")
    with admin.cursor() as cur:
        for name in names:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            cur.execute(f"CREATE DATABASE {name}")
    yield names
    with admin.cursor() as cur:
        for name in names:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


ADMIN = ("mlflow-admin", "admin-" + "test-password-0")  # test values of the Secret's admin-username/-password


@pytest.fixture
def mlflow_deployed(tmp_path, postgres_databases, s3_endpoint):
    """The Deployment's container running here: ``(url, artifacts bucket, its S3 client)``."""
    import boto3

    tracking_db, auth_db = postgres_databases
    objects = load_objects()
    container = server_container(objects)
    mounted = write_config_maps(objects, tmp_path)

    # The auth database: the ConfigMap's URI (no password: PGPASSWORD) moved to the local server.
    ini_path = local_path(next(e["value"] for e in container["env"] if e["name"] == "MLFLOW_AUTH_CONFIG_PATH"), mounted)
    ini = configparser.ConfigParser()
    ini.read(ini_path)
    shipped = urlsplit(ini["mlflow"]["database_uri"])
    assert shipped.password is None and shipped.scheme == "postgresql+psycopg2"
    server = f"{shipped.scheme}://{PG['user']}@{PG['host']}:{PG['port']}"
    ini["mlflow"]["database_uri"] = f"{server}/{auth_db}"
    with open(ini_path, "w") as out:
        ini.write(out)

    secrets = {  # the Secret's keys, test values (the URI without a password, as the manifest's header shows)
        ("mlflow-server", "backend-store-uri"): f"{server}/{tracking_db}",
        ("mlflow-server", "postgres-password"): PG["password"],
        ("mlflow-server", "admin-username"): ADMIN[0],
        ("mlflow-server", "admin-password"): ADMIN[1],
        ("mlflow-server", "flask-secret-key"): "flask-key-for-this-test",
        ("mltrain-aws", "AWS_ACCESS_KEY_ID"): "testing",
        ("mltrain-aws", "AWS_SECRET_ACCESS_KEY"): "testing",
    }
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}  # the image: HOME=/tmp
    for item in container["env"]:
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[(ref["name"], ref["key"])]
        else:
            env[item["name"]] = local_path(item["value"], mounted)
    env["MLFLOW_S3_ENDPOINT_URL"] = s3_endpoint  # the one addition: S3 is moto here

    destination = urlsplit(option(container["args"], "--artifacts-destination"))
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=destination.netloc)

    port = free_port()
    args = list(container["args"])
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    log = tmp_path / "mlflow-server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", str(ENTRYPOINT), *args],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the CLI and its uvicorn worker stop together
        )
    url = f"http://127.0.0.1:{port}"
    probe = container["readinessProbe"]["httpGet"]["path"]
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{url}{probe}", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert process.poll() is None, f"mlflow server exited {process.returncode}: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"mlflow server not healthy after 90 s: {log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url, destination, s3
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.mark.services
def test_the_deployed_command_serves_registration_and_promotion_to_users_only(mlflow_deployed, tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client
    from mlflow.tracking import MlflowClient

    from mltrain_assets.resources.tracking import ModelRegistry

    url, destination, s3 = mlflow_deployed
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, timeout=10).status_code == 401, "no credentials: refused"
    assert requests.get(search, auth=(ADMIN[0], "wrong-password-0"), timeout=10).status_code == 401
    assert requests.get(search, auth=ADMIN, timeout=10).status_code == 200
    evil = requests.get(search, auth=ADMIN, headers={"Host": "mlflow.evil.example"}, timeout=10)
    assert evil.status_code == 403, "a Host header outside --allowed-hosts is refused"

    # The admin creates the workloads' user and a person's; clients take credentials from the environment.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
    auth = get_app_client("basic-auth", tracking_uri=url)
    auth.create_user("mltrain-workloads", "workloads-" + "password-0")
    auth.create_user("analyst", "analyst-" + "password-00")

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "mltrain-workloads")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "workloads-" + "password-0")
    client = MlflowClient(url)
    run = client.create_run(client.create_experiment("demand-forecast"))
    (tmp_path / "model.txt").write_text("weights")
    client.log_artifact(run.info.run_id, str(tmp_path / "model.txt"), "model")
    client.set_terminated(run.info.run_id)
    stored = [o["Key"] for o in s3.list_objects_v2(Bucket=destination.netloc).get("Contents", [])]
    prefix = destination.path.strip("/")
    assert f"{prefix}/1/{run.info.run_id}/artifacts/model/model.txt" in stored, "proxied to the S3 destination"

    registry = ModelRegistry(tracking_uri=url)
    registered = registry.register(
        "demand-forecast-nyc", f"runs:/{run.info.run_id}/model", run.info.run_id, "lineage-deploy", {"a": "b"}
    )
    assert registered.created and registered.version == "1"
    registry.compare_and_set_alias("demand-forecast-nyc", "staging", None, registered.version)
    assert MlflowClient(url).get_model_version_by_alias("demand-forecast-nyc", "staging").version == "1"

    # Another user reads (default_permission READ) but cannot move the workloads' alias.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "analyst")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "analyst-" + "password-00")
    assert MlflowClient(url).get_model_version_by_alias("demand-forecast-nyc", "staging").version == "1"
    with pytest.raises(MlflowException) as refused:
        MlflowClient(url).set_registered_model_alias("demand-forecast-nyc", "staging", "1")
    assert refused.value.error_code == "PERMISSION_DENIED"
