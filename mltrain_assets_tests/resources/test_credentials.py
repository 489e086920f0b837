"""No credential-shaped value in anything rendered or shipped; only the Spark driver's account may create pods."""

from pathlib import Path

import pytest
import yaml

from mltrain_assets.resources.credentials import credential_findings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("obj", "found"),
    [
        ({"args": ["--uri", "postgresql://u:hunter2@db/x"]}, "args[1]: a URI with a password"),
        ({"args": ['{"mlflow": {"tracking_uri": "http://u:pw@mlflow:5000"}}']}, "(JSON) mlflow.tracking_uri: a URI"),
        ({"env": [{"name": "DB_PASSWORD", "value": "hunter2"}]}, "env[0].value: a literal value for 'DB_PASSWORD'"),
        ({"postgresqlPassword": "hunter2"}, "postgresqlPassword: a literal value for 'postgresqlPassword'"),
        ({"conf": {"spark.hadoop.fs.s3a.secret.key": "x"}}, "literal value for 'spark.hadoop.fs.s3a.secret.key'"),
        (
            {"env": [{"name": "K", "value": "AKIA" + "IOSFODNN7EXAMPLE"}]},
            "an AWS access key id",
        ),  # split: test_no_secrets
        ({"value": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}, "an AWS secret access key"),
    ],
)
def test_each_kind_of_credential_is_found(obj, found):
    findings = credential_findings({"kind": "Pod", "metadata": {"name": "p"}, **obj})
    assert len(findings) == 1 and found in findings[0] and findings[0].startswith("Pod/p ")
    assert "hunter2" not in findings[0] and "EXAMPLE" not in findings[0]  # named, never shown


@pytest.mark.parametrize(
    "obj",
    [
        {"postgresqlPassword": ""},  # empty: comes from a Secret
        {
            "envFrom": [{"secretRef": {"name": "mltrain-aws"}}],
            "env": [{"name": "MLTRAIN_K8S_ENV_SECRET", "value": "x"}],
        },
        {"automountServiceAccountToken": False},
        {
            "image": "registry.example.com/mltrain@sha256:" + "a" * 64,
            "commit": "0123456789abcdef0123456789abcdef01234567",
        },
        {"uri": "https://mlflow.example.com", "db": "postgresql://mlflow@db:5432/mlflow"},
    ],
)
def test_references_and_ordinary_values_are_not_credentials(obj):
    assert credential_findings(obj) == []


def test_the_helm_values_and_everything_in_deploy_carry_no_credential():
    files = [*sorted((ROOT / "helm-values").rglob("*.yaml")), *sorted((ROOT / "deploy").rglob("*.yaml"))]
    files.append(ROOT / "dagster.yaml")
    assert len(files) >= 4
    for path in files:
        for document in yaml.safe_load_all(path.read_text()):
            assert credential_findings(document, str(path.relative_to(ROOT))) == []


def test_only_the_spark_drivers_account_may_create_pods_and_only_in_its_namespace():
    documents = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "rbac.yaml").read_text()))
    assert not [d for d in documents if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Role"}
    creates_pods = {
        name
        for name, role in roles.items()
        for rule in role["rules"]
        if "pods" in rule["resources"] and "create" in rule["verbs"]
    }
    bound = {
        (subject["name"], d["roleRef"]["name"])
        for d in documents
        if d["kind"] == "RoleBinding"
        for subject in d["subjects"]
    }
    accounts_creating_pods = {account for account, role in bound if role in creates_pods}
    # The control plane (run pods) submits workload pods; of the workloads, the Spark driver alone.
    assert accounts_creating_pods == {"mltrain", "mltrain-spark-driver"}
    assert all(d["metadata"]["namespace"] == "mltrain" for d in documents)
    workloads = next(
        d for d in documents if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "mltrain-workloads"
    )
    assert workloads["automountServiceAccountToken"] is False
    assert not [role for account, role in bound if account == "mltrain-workloads"]  # no rights at all
