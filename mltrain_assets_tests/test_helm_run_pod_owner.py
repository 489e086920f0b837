"""The run pod dagster-k8s builds from helm-values knows its own name and uid: the workload objects it creates are owned by it."""

from mltrain_assets.resources.k8s import PodTemplate, render_pod
from mltrain_assets_tests.test_helm_pod_security import load_values
from mltrain_assets_tests.test_helm_run_job import launched_run_jobs


def test_the_run_pod_gets_its_name_and_uid_from_the_downward_api(tmp_path, monkeypatch):
    (job,) = launched_run_jobs(load_values(), tmp_path)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLTRAIN_RUN_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["MLTRAIN_RUN_POD_UID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.uid"}}
    # dagster-k8s labels its run pods with the run id under the key our workload objects use too.
    assert job["spec"]["template"]["metadata"]["labels"]["dagster/run-id"]
    # What a workload pod rendered in that run pod then carries.
    template = PodTemplate(image="i", namespace="mltrain", owner_pod="dagster-run-x-abcde", owner_uid="0b7c3a4e")
    pod = render_pod(template, name="w", command=["python"], env={})
    assert pod["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": "dagster-run-x-abcde",
            "uid": "0b7c3a4e",
            "controller": False,
            "blockOwnerDeletion": False,
        }
    ]
