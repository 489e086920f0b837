"""The feature job on a standalone Spark cluster (master + worker on 127.0.0.1): the production path."""

from pathlib import Path

import pyspark
import pytest

from mltrain_assets.artifacts import read_manifest, read_table, version_uri
from mltrain_assets.cli.sparkcluster import LocalSparkCluster
from mltrain_assets.pipelines.demand.workloads.features import build_features
from mltrain_assets.workloads.common.spark import SparkSettings
from mltrain_assets_tests.services.conftest import aggregated_window

pytestmark = pytest.mark.services
DATE = "2026-05-20"
SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"


@pytest.fixture
def spark_cluster(tmp_path):
    """``spark-class`` Master and Worker on 127.0.0.1 (pip's pyspark has no start-*.sh), stopped afterwards."""
    with LocalSparkCluster(tmp_path, cores=2, memory="2g", timeout_s=60) as url:
        yield url


def test_features_on_the_cluster_equal_the_local_engine(mltrain_home, spark_cluster):
    storage = f"file://{mltrain_home}/storage"
    aggregates = aggregated_window(f"file://{mltrain_home}/landing", storage, DATE, volume=8_000)
    on_cluster = version_uri(storage, "city_demand_features", DATE, "cluster")
    local = version_uri(storage, "city_demand_features", DATE, "duckdb")
    summary = build_features(aggregates, DATE, on_cluster, engine="spark", spark=SparkSettings(master=spark_cluster))
    # The comparison below is the parity check: a local Spark re-checking DuckDB would only repeat the cluster's work.
    build_features(aggregates, DATE, local, engine="duckdb", check_parity_on_other_engine=False)
    assert summary["engine"] == "spark" and read_manifest(on_cluster)["rows"] == read_manifest(local)["rows"]
    a = read_table(on_cluster, "features.parquet").to_pandas().sort_values(["city", "ts"]).reset_index(drop=True)
    b = read_table(local, "features.parquet").to_pandas().sort_values(["city", "ts"]).reset_index(drop=True)
    assert list(a.columns) == list(b.columns) and len(a.columns) > 150
    numeric = a.select_dtypes("number").columns
    assert ((a[numeric] - b[numeric]).abs().fillna(0) < 1e-6).all().all()
