"""The one Spark configuration every Spark workload receives, shown in the Dagster UI.

It has the ``spark_config`` shape of dagster-pyspark's ``LazyPySparkResource`` but is plain
configuration: no session ever starts in the control plane, so it does not subclass that
resource, whose module imports pyspark (~0.15 s in every run and step process). Workloads get
it as ``SparkSettings`` inside their params and build their session with
``workloads/common/spark.py``.
"""

from __future__ import annotations

import json
from typing import Any

from dagster import ConfigurableResource

from mltrain_assets.workloads.common.spark import SparkSettings

TRUE = ("1", "true", "yes")


class SparkConfig(ConfigurableResource):
    """Master, ``spark.*`` conf, s3a and driver host for every Spark workload (local, cluster or k8s://)."""

    spark_config: dict[str, Any] = {}
    master: str = "local[*]"  # MLTRAIN_SPARK_MASTER: local[*], spark://host:7077, k8s://https://...
    conf_json: str = "{}"  # MLTRAIN_SPARK_CONF: a JSON object of extra spark.* settings (wins over spark_config)
    s3a: str = "false"  # MLTRAIN_SPARK_S3A: "true" where the cluster has hadoop-aws (s3:// read as s3a://)
    # With a k8s:// master the driver runs in the workload pod; executors reach it at the pod IP (downward API).
    driver_host_from_pod_ip: bool = True

    def conf(self) -> dict[str, str]:
        try:
            extra = json.loads(self.conf_json or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"MLTRAIN_SPARK_CONF is not a JSON object: {exc}") from None
        if not isinstance(extra, dict):
            raise ValueError(f"MLTRAIN_SPARK_CONF must be a JSON object of spark.* settings, got {extra!r}")
        return {str(k): str(v) for k, v in {**self.spark_config, **extra}.items()}

    def settings(self, driver_host: str = "") -> SparkSettings:
        return SparkSettings(
            master=self.master,
            conf=self.conf(),
            s3a=self.s3a.strip().lower() in TRUE,
            driver_host=driver_host,
        )

    @property
    def runs_driver_in_pod(self) -> bool:
        return self.master.startswith("k8s://") and self.driver_host_from_pod_ip
