"""The run-worker Job the K8sRunLauncher creates from helm-values/dagster.yaml, built by dagster-k8s itself.

Nothing here retypes how dagster-k8s builds a run pod. A real ``DagsterInstance`` is configured with the
run launcher the chart renders (templates/helpers/instance/_run-launcher.tpl, read by
``test_helm_pod_security._run_launcher_config``), and its ``K8sRunLauncher.launch_run`` is called for a run of
the code location, whose repository origin carries what the chart's code server records: the image
(DAGSTER_CURRENT_IMAGE) and the container context (DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT,
"dagsterUserDeployments.k8sContainerContext"). The launcher merges them (``K8sContainerContext.create_for_run``),
builds the Job (``construct_dagster_k8s_job``) and posts it with the kubernetes client to a local stand-in for
the API server, which records the JSON body: the object a cluster would receive, byte for byte.

The one change to the rendered launcher config: ``load_incluster_config`` false and a kubeconfig naming the
stand-in, because there is no cluster here.
"""

import contextlib
import copy
import json
import re
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kubernetes
import pytest
import yaml
from dagster import DagsterInstance
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import deserialize_value
from dagster_k8s.job import get_job_name_from_run_id

from mltrain_assets.resources.pod_security import violations
from mltrain_assets_tests.admission import admission_refusals
from mltrain_assets_tests.test_helm_pod_security import (
    NAMESPACE,
    _code_location_container_context,
    _image,
    _run_launcher_config,
    load_values,
)

RUN_ID = "5e1f0c2a-0000-4000-8000-000000000000"
JOB_NAME = "__ASSET_JOB"  # the job every asset materialization runs in
IMAGE_PYTHON = "/usr/local/bin/python"  # the Dockerfile's base image (python:3.11-slim)
CODE_POINTER = ModuleCodePointer("mltrain_assets.definitions", "defs", "/app")  # --module-name, WORKDIR /app
# One run storage for every launch in the process: creating a SQLite one costs more than the launch itself.
_STORAGE = tempfile.TemporaryDirectory(prefix="helm-run-job-")


class _ApiServer(BaseHTTPRequestHandler):
    """Answers a Job create as the API server does (201, the object back) and keeps what it was sent."""

    created: list[tuple[str, dict]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.created.append((self.path, body))
        reply = json.dumps({**body, "metadata": {**body["metadata"], "uid": "0"}}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:  # quiet
        pass


@contextlib.contextmanager
def _api_server(tmp: Path) -> Iterator[tuple[Path, list[tuple[str, dict]]]]:
    created: list[tuple[str, dict]] = []
    handler = type("Handler", (_ApiServer,), {"created": created})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp / "kubeconfig"
    cluster = {"server": f"http://127.0.0.1:{server.server_address[1]}"}
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "stand-in", "cluster": cluster}],
                "users": [{"name": "stand-in", "user": {"token": "stand-in"}}],
                "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "stand-in"}}],
                "current-context": "stand-in",
            }
        )
    )
    # The launcher loads the kubeconfig into the client's process-wide default: put it back afterwards.
    saved = kubernetes.client.Configuration.get_default_copy()
    try:
        yield kubeconfig, created
    finally:
        kubernetes.client.Configuration.set_default(saved)
        server.shutdown()
        server.server_close()
        thread.join()


def _run(deployment: dict, container_context: dict | None) -> DagsterRun:
    """A run of the code location as the webserver or daemon submits it, from what its code server records."""
    repository = RepositoryPythonOrigin(
        executable_path=IMAGE_PYTHON,
        code_pointer=CODE_POINTER,
        container_image=_image(deployment["image"]),  # DAGSTER_CURRENT_IMAGE
        entry_point=["dagster"],  # `dagster api grpc`'s default entry point
        container_context=container_context,
    )
    location = GrpcServerCodeLocationOrigin(
        host=deployment["name"], port=deployment["port"], location_name=deployment["name"]
    )
    return DagsterRun(
        job_name=JOB_NAME,
        run_id=RUN_ID,
        job_code_origin=JobPythonOrigin(JOB_NAME, repository),
        remote_job_origin=RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), JOB_NAME),
    )


def launched_run_jobs(vals: dict, tmp: Path) -> list[dict]:
    """The Job K8sRunLauncher.launch_run posts to the API server for a run of each code location."""
    from dagster._core.launcher import LaunchRunContext

    subchart = vals["dagster-user-deployments"]
    jobs = []
    with _api_server(tmp) as (kubeconfig, created):
        launcher = {**_run_launcher_config(vals), "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
        home = tmp / "dagster_home"
        home.mkdir(exist_ok=True)
        instance_config = {
            "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher},
            "storage": {"sqlite": {"base_dir": _STORAGE.name}},
            "telemetry": {"enabled": False},
        }
        (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
        with DagsterInstance.from_config(str(home)) as instance:
            for deployment in subchart["deployments"] if subchart.get("enabled") else []:
                include = (deployment.get("includeConfigInLaunchedRuns") or {"enabled": True})["enabled"]
                context = _code_location_container_context(vals, deployment) if include else None
                run = instance.add_run(_run(deployment, context))
                try:  # the storage is shared by every launch: leave no run behind
                    instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
                finally:
                    instance.delete_run(run.run_id)
                ((path, job),) = created
                created.clear()
                namespace = re.fullmatch(r"/apis/batch/v1/namespaces/([^/]+)/jobs", path)[1]
                jobs.append({**job, "metadata": {**job["metadata"], "namespace": namespace}})
    return jobs


@pytest.fixture(scope="module")
def run_job(tmp_path_factory) -> dict:
    (job,) = launched_run_jobs(load_values(), tmp_path_factory.mktemp("run-job"))
    return job


def test_the_launcher_posts_one_job_to_the_release_namespace(run_job):
    assert run_job["kind"] == "Job" and run_job["apiVersion"] == "batch/v1"
    assert run_job["metadata"]["name"] == get_job_name_from_run_id(RUN_ID)
    assert run_job["metadata"]["namespace"] == NAMESPACE
    labels = run_job["spec"]["template"]["metadata"]["labels"]
    assert labels["dagster/run-id"] == RUN_ID and labels["dagster/code-location"] == "mltrain-assets"


def test_the_run_job_is_admitted_as_a_kubernetes_1_30_object(run_job):
    """Schema (kubernetes-validate 1.30, strict), the pod-spec rules beyond it, and Pod Security restricted."""
    assert admission_refusals(run_job, "1.30") == []


def test_the_run_pod_passes_pod_security_restricted_with_a_read_only_root(run_job):
    assert violations(run_job) == []
    pod = run_job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])  # the one writable path


def test_the_run_pod_runs_this_run_through_the_image_entrypoint(run_job):
    """No ``command``: the image's ENTRYPOINT (tini, then mltrain-entrypoint, which passes it through) runs
    ``dagster api execute_run`` for this run of this code location, in the code location's image."""
    (container,) = run_job["spec"]["template"]["spec"]["containers"]
    assert "command" not in container
    assert container["image"] == _image(load_values()["dagster-user-deployments"]["deployments"][0]["image"])
    entry, api, verb, payload = container["args"]
    assert [entry, api, verb] == ["dagster", "api", "execute_run"]
    args = deserialize_value(payload, ExecuteRunArgs)
    assert args.run_id == RUN_ID
    assert args.job_origin.repository_origin.code_pointer == CODE_POINTER
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["DAGSTER_RUN_JOB_NAME"] == JOB_NAME  # what settings read to tell a run pod from the code server
    assert env["DAGSTER_HOME"] == "/opt/dagster/dagster_home"
    assert {"secretRef": {"name": "mltrain-aws"}} in container["envFrom"]


def test_a_broken_launcher_value_reaches_the_posted_job(tmp_path):
    """The values are what the Job is built from: a root run pod in the values is a root run pod posted."""
    vals = copy.deepcopy(load_values())
    vals["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]["securityContext"] = {
        "runAsUser": 0
    }
    vals["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]["securityContext"][
        "readOnlyRootFilesystem"
    ] = False
    (job,) = launched_run_jobs(vals, tmp_path)
    found = violations(job)
    assert any("Running as Non-root user (restricted)" in line for line in found), found
    assert any("Read-only Root Filesystem (project)" in line for line in found), found
