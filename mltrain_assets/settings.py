"""Embedded defaults for every setting, derived from ``MLTRAIN_HOME``.

Resources read settings through ``dagster.EnvVar``; ``apply_defaults`` fills in
the variables a user left unset so the same names work everywhere.

Why rules over environment strings rather than a pydantic-settings model: the environment is the
one source every reader shares (Dagster's ``EnvVar`` resolves at launch in the run worker, workload
processes and pods inherit it, Helm sets it), so the settings stay strings there and each rule
checks one variable's string, naming it and what it accepts; a typed model would be a second copy
to keep in step. Typed values are parsed where they are used (the ``Compute`` resources, ``pools``, ...).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_HOME = ".mltrain"
DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"
DEFAULT_DAGSTER_UI_URL = "http://127.0.0.1:3000"
# How often each landing sensor lists the landing zone (a listing per dataset per tick).
DEFAULT_LANDING_SENSOR_INTERVAL_S = 30


def mltrain_home() -> Path:
    return Path(os.environ.get("MLTRAIN_HOME", DEFAULT_HOME)).expanduser().resolve()


# With MLTRAIN_COMPUTE=k8s these have no embedded default: a laptop's file:// or sqlite:// in a pod would
# silently lose every artifact with the pod. Each must be set (production_problems says which and why).
PRODUCTION_REQUIRED = ("MLTRAIN_STORAGE_URI", "MLTRAIN_LANDING_URI", "MLFLOW_TRACKING_URI", "MLTRAIN_K8S_NAMESPACE")


def default_environment() -> dict[str, str]:
    defaults = _embedded_defaults()
    if os.environ.get("MLTRAIN_COMPUTE") == "k8s":
        for name in PRODUCTION_REQUIRED:
            defaults.pop(name)
    return defaults


def _embedded_defaults() -> dict[str, str]:
    home = mltrain_home()
    return {
        "MLTRAIN_HOME": str(home),
        "MLTRAIN_LANDING_URI": f"file://{home}/landing",
        "MLTRAIN_STORAGE_URI": f"file://{home}/storage",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow.db",
        "MLTRAIN_MLFLOW_ARTIFACTS_URI": f"file://{home}/mlartifacts",
        # Where a person opens the UIs: the links between Dagster and MLflow point there.
        "MLTRAIN_MLFLOW_UI_URL": DEFAULT_MLFLOW_UI_URL,
        "MLTRAIN_DAGSTER_UI_URL": DEFAULT_DAGSTER_UI_URL,
        "MLTRAIN_COMPUTE": "local",
        "MLTRAIN_SPARK_MASTER": "local[*]",
        "MLTRAIN_SPARK_S3A": "false",
        "MLTRAIN_SPARK_CONF": "{}",
        # local: `mltrain demo`/`mltrain dev` start a Spark Connect server on 127.0.0.1 (its master: MLTRAIN_SPARK_MASTER)
        # and point the workloads at it (sc://127.0.0.1:PORT); off: each Spark workload starts its own session.
        "MLTRAIN_SPARK_CONNECT": "off",
        "MLTRAIN_TRAIN_NODES": "1",
        "MLTRAIN_TRAIN_GPUS_PER_NODE": "0",
        "MLTRAIN_SQL_ENGINE": "spark",
        "MLTRAIN_ENGINE_PARITY": "true",
        "MLTRAIN_AUTOMATION_LOOKBACK_DAYS": "3",
        "MLTRAIN_LANDING_SENSOR_INTERVAL_S": str(DEFAULT_LANDING_SENSOR_INTERVAL_S),
        # Pools with a limit of their own, written into the instance by `mltrain init` (instance/pools.py).
        "MLTRAIN_POOL_LIMITS": '{"registry": 1}',
        # Empty: the run's own image (DAGSTER_CURRENT_IMAGE on the code server, the run's recorded image in its pod).
        "MLTRAIN_K8S_IMAGE": "",
        # CPU, memory, GPUs, scratch, /dev/shm and timeout per profile and step over the embedded table
        # (launch/workload_resources.py), e.g. {"training": {"memory": "128Gi"}}.
        "MLTRAIN_WORKLOAD_RESOURCES": "{}",
        "MLTRAIN_K8S_NAMESPACE": "mltrain",
        "MLTRAIN_K8S_SERVICE_ACCOUNT": "",
        # The Spark driver's account (k8s:// master: it creates its executor pods); empty: MLTRAIN_K8S_SERVICE_ACCOUNT.
        "MLTRAIN_K8S_SPARK_SERVICE_ACCOUNT": "",
        # What one node of each pool offers a pod ({pool: {cpu, memory, nvidia.com/gpu, ephemeral-storage}}):
        # `mltrain manifests` warns about a pod no node fits. Empty: not checked.
        "MLTRAIN_K8S_NODE_SIZES": "",
        "MLTRAIN_K8S_ENV_SECRET": "",
        "MLTRAIN_K8S_NODE_SELECTOR": "{}",
        "MLTRAIN_K8S_TRAINING_NODE_SELECTOR": "{}",
        "MLTRAIN_K8S_TRAINING_TOLERATIONS": "[]",
        # How long a workload pod may stay unschedulable (FailedScheduling) before its step fails; cover node autoscaling.
        "MLTRAIN_K8S_UNSCHEDULABLE_TIMEOUT_S": "300",
        # Alerts (core/alerts.py): empty webhook URL, no alerts; slack or json; delivery attempts per alert.
        "MLTRAIN_ALERT_WEBHOOK_URL": "",
        "MLTRAIN_ALERT_FORMAT": "slack",
        "MLTRAIN_ALERT_ATTEMPTS": "3",
        "DAGSTER_HOME": str(home / "dagster"),
        # Spark otherwise binds the machine's external address; keep traffic on loopback.
        "SPARK_LOCAL_IP": "127.0.0.1",
    }


def apply_defaults() -> dict[str, str]:
    """Set every unset setting to its embedded default; returns the effective values."""
    defaults = default_environment()
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    if tracking.startswith(("http://", "https://")):
        defaults["MLTRAIN_MLFLOW_UI_URL"] = tracking  # a tracking server serves its own UI
    for name, value in defaults.items():
        if not os.environ.get(name):
            os.environ[name] = value
    home = Path(os.environ["MLTRAIN_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    from mltrain_assets.relocate import adopt_moved_home

    moved = adopt_moved_home(home, os.environ.get("MLFLOW_TRACKING_URI", ""))
    if moved:
        print(
            f"mltrain: MLTRAIN_HOME moved from {moved['from']} to {moved['to']}: "
            f"{moved['mlflow_rows']} MLflow artifact locations now point into it",
            file=sys.stderr,
        )
    return {name: os.environ[name] for name in default_environment() if name in os.environ}


# ------------------------------------------------------------------ validation at load


class SettingsError(ValueError):
    """One or more settings have values mltrain cannot use; the message names each variable and what it accepts."""


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_SPARK_MASTER = re.compile(
    r"^(local(\[(\*|\d+)(,\d+)?\])?|spark://[^/\s:]+:\d+(,[^/\s:]+:\d+)*|k8s://https?://\S+|yarn|sc://\S+)$"
)


def _is_store(value: str) -> bool:
    return value.startswith("file:///") or bool(re.match(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$", value))


def _is_int(minimum: int) -> Callable[[str], bool]:
    return lambda value: value.strip().lstrip("-").isdigit() and int(value) >= minimum


def _is_json(kind: type, item: Callable[[Any], bool] = lambda _: True) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        try:
            parsed = json.loads(value or ("{}" if kind is dict else "[]"))
        except json.JSONDecodeError:
            return False
        items = parsed.items() if isinstance(parsed, dict) else parsed
        return isinstance(parsed, kind) and all(item(x) for x in items)

    return check


def _parses(value: str, parse: Callable[[str], object]) -> bool:
    """Whether ``parse`` accepts the value (raises no ``ValueError``)."""
    try:
        parse(value)
    except ValueError:
        return False
    return True


def _workload_resources_usable(value: str) -> bool:
    from mltrain_assets.launch.workload_resources import parse_overrides

    return _parses(value, parse_overrides)


def _node_sizes_usable(value: str) -> bool:
    if not value.strip():
        return True
    from mltrain_assets.launch.node_sizes import parse_node_sizes

    return _parses(value, parse_node_sizes)


def _registered_pipelines(value: str) -> bool:
    from mltrain_assets.registry import specs

    return _parses(value, lambda names: specs({"MLTRAIN_PIPELINES": names}))


def _is_date(value: str) -> bool:
    return _parses(value.strip(), dt.date.fromisoformat)


# Every setting's rule: (is the value usable?, what it accepts). Checked when the definitions load,
# so a typo fails the code location at once, naming the variable, not a step hours later.
SETTING_RULES: dict[str, tuple[Callable[[str], bool], str]] = {
    "MLTRAIN_LANDING_URI": (_is_store, "file:///absolute/path or s3://bucket[/prefix]"),
    "MLTRAIN_STORAGE_URI": (_is_store, "file:///absolute/path or s3://bucket[/prefix]"),
    "MLTRAIN_MLFLOW_ARTIFACTS_URI": (_is_store, "file:///absolute/path or s3://bucket[/prefix]"),
    "MLFLOW_TRACKING_URI": (
        lambda v: bool(
            re.match(r"^(sqlite:///\S+|https?://\S+|file:///\S+|(postgresql|mysql|mssql)(\+\w+)?://\S+)$", v)
        ),
        "sqlite:///path, http(s)://host[:port], file:///path or a database URL (postgresql://...)",
    ),
    "MLTRAIN_MLFLOW_UI_URL": (lambda v: bool(re.match(r"^https?://\S+$", v)), "http(s)://host[:port][/path]"),
    "MLTRAIN_DAGSTER_UI_URL": (lambda v: bool(re.match(r"^https?://\S+$", v)), "http(s)://host[:port][/path]"),
    "MLTRAIN_COMPUTE": (lambda v: v in ("local", "k8s", "k8s-local"), "local, k8s or k8s-local"),
    "MLTRAIN_SPARK_MASTER": (
        lambda v: bool(_SPARK_MASTER.match(v)),
        "local, local[N], local[*], spark://host:port, k8s://https://api:port, yarn or sc://host:port",
    ),
    "MLTRAIN_SPARK_S3A": (lambda v: v in ("true", "false"), "true or false"),
    "MLTRAIN_SPARK_CONNECT": (lambda v: v in ("off", "local"), "off or local"),
    "MLTRAIN_SPARK_CONF": (
        _is_json(dict, lambda kv: kv[0].startswith("spark.") and isinstance(kv[1], (str, int, float, bool))),
        'a JSON object of spark.* settings, e.g. {"spark.executor.memory": "4g"}',
    ),
    "MLTRAIN_TRAIN_NODES": (_is_int(1), "a whole number >= 1"),
    "MLTRAIN_TRAIN_GPUS_PER_NODE": (_is_int(0), "a whole number >= 0"),
    "MLTRAIN_SQL_ENGINE": (lambda v: v in ("spark", "duckdb"), "spark or duckdb"),
    "MLTRAIN_ENGINE_PARITY": (lambda v: v in ("true", "false"), "true or false"),
    "MLTRAIN_AUTOMATION_LOOKBACK_DAYS": (_is_int(1), "a whole number of days >= 1"),
    "MLTRAIN_LANDING_SENSOR_INTERVAL_S": (_is_int(1), "a whole number of seconds >= 1"),
    "MLTRAIN_POOL_LIMITS": (
        _is_json(dict, lambda kv: isinstance(kv[1], int) and not isinstance(kv[1], bool) and kv[1] >= 0),
        'a JSON object of pool: slots, e.g. {"registry": 1, "training": 1}',
    ),
    "MLTRAIN_K8S_IMAGE": (
        lambda v: not v or (bool(v.strip()) and " " not in v),
        "empty (the run's own image) or an image reference, e.g. registry/mltrain@sha256:...",
    ),
    "MLTRAIN_WORKLOAD_RESOURCES": (
        _workload_resources_usable,
        "a JSON object of profile (default, spark, training) or step -> {cpu, memory, gpus, ephemeral_storage, "
        'scratch, shm, timeout_s}, e.g. {"training": {"memory": "128Gi"}}',
    ),
    "MLTRAIN_K8S_NAMESPACE": (lambda v: bool(_DNS_LABEL.match(v)), "a Kubernetes namespace name (DNS label)"),
    "MLTRAIN_K8S_SERVICE_ACCOUNT": (
        lambda v: not v or bool(_DNS_SUBDOMAIN.match(v)),
        "empty (the namespace default) or a service account name",
    ),
    "MLTRAIN_K8S_ENV_SECRET": (lambda v: not v or bool(_DNS_SUBDOMAIN.match(v)), "empty or a Secret name"),
    "MLTRAIN_K8S_SPARK_SERVICE_ACCOUNT": (
        lambda v: not v or bool(_DNS_SUBDOMAIN.match(v)),
        "empty (MLTRAIN_K8S_SERVICE_ACCOUNT) or a service account name",
    ),
    "MLTRAIN_K8S_NODE_SIZES": (
        _node_sizes_usable,
        "empty or a JSON object of pool -> {cpu, memory, nvidia.com/gpu, ephemeral-storage}, e.g. "
        '{"gpu": {"cpu": "94", "memory": "1300Gi", "nvidia.com/gpu": "8", "ephemeral-storage": "80Gi"}}',
    ),
    "MLTRAIN_K8S_NODE_SELECTOR": (
        _is_json(dict, lambda kv: isinstance(kv[1], str)),
        'a JSON object of label: value, e.g. {"pool": "cpu"}',
    ),
    "MLTRAIN_K8S_TRAINING_NODE_SELECTOR": (
        _is_json(dict, lambda kv: isinstance(kv[1], str)),
        'a JSON object of label: value, e.g. {"nvidia.com/gpu.present": "true"}',
    ),
    "MLTRAIN_K8S_TRAINING_TOLERATIONS": (
        _is_json(list, lambda t: isinstance(t, dict)),
        'a JSON list of tolerations, e.g. [{"key": "nvidia.com/gpu", "operator": "Exists"}]',
    ),
    "MLTRAIN_K8S_UNSCHEDULABLE_TIMEOUT_S": (
        _is_int(0),
        "seconds, an integer >= 0 (0: fail at the first FailedScheduling)",
    ),
    "MLTRAIN_PIPELINES": (
        _registered_pipelines,
        "comma-separated pipelines: built-in names (demand, recsys) or importable modules holding "
        "`spec = PipelineSpec(...)`, e.g. my_company.churn.spec",
    ),
    "MLTRAIN_PARTITIONS_START": (_is_date, "a date, YYYY-MM-DD"),
    "MLTRAIN_GIT_URL": (
        lambda v: not v or bool(re.match(r"^https?://\S+$", v)),
        "empty or the repository's web URL, e.g. https://github.com/acme/mltrain",
    ),
    "MLTRAIN_ALERT_WEBHOOK_URL": (
        lambda v: not v or bool(re.match(r"^https?://[^/\s]+\S*$", v)),
        "empty (no alerts) or the webhook's http(s) URL, e.g. a Slack incoming webhook's",
    ),
    "MLTRAIN_ALERT_FORMAT": (lambda v: v in ("slack", "json"), "slack or json"),
    "MLTRAIN_ALERT_ATTEMPTS": (_is_int(1), "a whole number of delivery attempts >= 1"),
}


def all_setting_rules() -> dict[str, tuple[Callable[[str], bool], str]]:
    """The code location's rules and those the registered pipelines declare (``PipelineSpec.settings``)."""
    from mltrain_assets.registry import setting_rules

    try:
        return {**SETTING_RULES, **setting_rules()}
    except ValueError:  # a pipeline that cannot load: the MLTRAIN_PIPELINES rule names it
        return dict(SETTING_RULES)


def settings_problems(env: Mapping[str, str] | None = None) -> list[str]:
    """Each set setting whose value its rule refuses, as ``NAME='value': expected ...``."""
    env = os.environ if env is None else env
    problems = []
    from mltrain_assets.registry import optional_empty_settings

    try:
        optional_empty = _OPTIONAL_EMPTY | optional_empty_settings()
    except ValueError:  # a pipeline that cannot load: the MLTRAIN_PIPELINES rule names it
        optional_empty = _OPTIONAL_EMPTY
    for name, (usable, accepted) in all_setting_rules().items():
        value = env.get(name)
        if value is None or (value == "" and name in optional_empty):
            continue
        if not usable(value):
            problems.append(f"{name}={value!r}: expected {accepted}")
    return problems


# Settings that may be set to the empty string (meaning "none" / "the default").
_OPTIONAL_EMPTY = frozenset(
    {
        "MLTRAIN_K8S_SERVICE_ACCOUNT",
        "MLTRAIN_K8S_ENV_SECRET",
        "MLTRAIN_K8S_IMAGE",
        "MLTRAIN_K8S_SPARK_SERVICE_ACCOUNT",
        "MLTRAIN_K8S_NODE_SIZES",
        "MLTRAIN_ALERT_WEBHOOK_URL",
    }
)


def combination_problems(env: Mapping[str, str] | None = None) -> list[str]:
    """Settings each usable alone that cannot work together, naming every variable involved."""
    env = os.environ if env is None else env
    defaults = default_environment()
    value = lambda name: env.get(name) or defaults.get(name, "")  # noqa: E731
    problems = []
    if value("MLTRAIN_SPARK_CONNECT") == "local" and not value("MLTRAIN_SPARK_MASTER").startswith("local"):
        problems.append(
            f"MLTRAIN_SPARK_CONNECT=local starts a Spark Connect server whose master is MLTRAIN_SPARK_MASTER: expected "
            f"local or local[N], not {value('MLTRAIN_SPARK_MASTER')!r} (to use a running server, set "
            "MLTRAIN_SPARK_MASTER=sc://host:port and MLTRAIN_SPARK_CONNECT=off)"
        )
    spark_reads_s3 = value("MLTRAIN_SPARK_S3A") == "true"
    if value("MLTRAIN_STORAGE_URI").startswith("s3://") and not spark_reads_s3:
        if value("MLTRAIN_SQL_ENGINE") == "spark":
            problems.append(
                "MLTRAIN_SQL_ENGINE=spark with MLTRAIN_STORAGE_URI on s3:// needs MLTRAIN_SPARK_S3A=true "
                "(a Spark with hadoop-aws); or set MLTRAIN_SQL_ENGINE=duckdb"
            )
        elif value("MLTRAIN_ENGINE_PARITY") == "true":
            problems.append(
                "MLTRAIN_ENGINE_PARITY=true re-checks DuckDB's SQL on Spark, which reads MLTRAIN_STORAGE_URI on s3:// "
                "only with MLTRAIN_SPARK_S3A=true (a Spark with hadoop-aws); or set MLTRAIN_ENGINE_PARITY=false"
            )
    return problems


def production_problems(env: Mapping[str, str] | None = None) -> list[str]:
    """With ``MLTRAIN_COMPUTE=k8s``: every production setting missing or pointing at one machine's disk, named."""
    env = os.environ if env is None else env
    if env.get("MLTRAIN_COMPUTE") != "k8s":
        return []
    needs = {
        "MLTRAIN_STORAGE_URI": "s3://bucket/prefix, shared by every pod",
        "MLTRAIN_LANDING_URI": "s3://bucket/prefix where producers land raw days",
        "MLFLOW_TRACKING_URI": "http(s)://your-tracking-server or a database URL",
        "MLTRAIN_K8S_NAMESPACE": "the namespace of the workload pods",
    }
    problems = [
        f"{name} is required with MLTRAIN_COMPUTE=k8s (no laptop default in production): set it to {what}"
        for name, what in needs.items()
        if not env.get(name)
    ]
    for name in ("MLTRAIN_STORAGE_URI", "MLTRAIN_LANDING_URI"):
        if env.get(name, "").startswith("file://"):
            problems.append(
                f"{name}={env[name]!r} with MLTRAIN_COMPUTE=k8s: each pod has its own file system, so another pod "
                "would never see it; use s3://bucket/prefix"
            )
    if env.get("MLFLOW_TRACKING_URI", "").startswith(("sqlite:", "file:")):
        problems.append(
            f"MLFLOW_TRACKING_URI={env['MLFLOW_TRACKING_URI']!r} with MLTRAIN_COMPUTE=k8s: a store inside a pod is lost "
            "with it; use http(s)://your-tracking-server or a database URL"
        )
    # A run pod (DAGSTER_RUN_JOB_NAME, set by the K8sRunLauncher) takes the image its run recorded.
    if not any(env.get(name) for name in ("MLTRAIN_K8S_IMAGE", "DAGSTER_CURRENT_IMAGE", "DAGSTER_RUN_JOB_NAME")):
        problems.append(
            "MLTRAIN_K8S_IMAGE is required with MLTRAIN_COMPUTE=k8s unless the code location runs from its image "
            "(the Helm chart sets DAGSTER_CURRENT_IMAGE): set it to registry/mltrain@sha256:<digest>"
        )
    return problems


def validate_settings(env: Mapping[str, str] | None = None) -> None:
    """Refuse unusable settings, all of them at once, naming each variable and the values it accepts."""
    problems = settings_problems(env) + production_problems(env)
    problems = problems or combination_problems(env)
    if problems:
        raise SettingsError("mltrain settings are not usable: " + "; ".join(problems))
