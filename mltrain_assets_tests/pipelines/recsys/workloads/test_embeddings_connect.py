"""ALS embeddings through a Spark Connect server (``sc://``): pyspark.ml's ALS on Connect fits the classic session's factors."""

from __future__ import annotations

import numpy as np
import pytest

from mltrain_assets.artifacts import read_manifest, read_table
from mltrain_assets.cli.sparkconnect import LocalSparkConnectServer
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.contract import ITEM_FACTORS_FILE, USER_FACTORS_FILE
from mltrain_assets.pipelines.recsys.params import EmbeddingsParams
from mltrain_assets.workloads.common.spark import SparkSettings
from mltrain_assets_tests.pipelines.recsys.workloads._world import DATE, commit_day

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory):
    with LocalSparkConnectServer(tmp_path_factory.mktemp("spark-connect"), master="local[2]", memory="1g") as url:
        yield url


def _factors(uri: str, file: str, key: str) -> tuple[list, np.ndarray]:
    frame = read_table(uri, file).to_pandas().sort_values(key)
    return frame[key].tolist(), np.stack(frame["factors"].to_numpy())


def test_als_on_a_connect_server_fits_the_factors_a_classic_session_fits(recsys_world, connect_server):
    out = recsys_world.uri("interaction_embeddings", DATE, "v=connect")
    days = tuple(commit_day(recsys_world.root, d) for d in contract.EMBEDDINGS_WINDOW.dates(DATE))
    result = recsys_world.run(
        EmbeddingsParams(date=DATE, interactions_uris=days, spark=SparkSettings(master=connect_server), out_uri=out)
    )
    assert result.returncode == 0, result.stderr[-3000:]

    assert read_manifest(out)["summary"]["users"] == read_manifest(recsys_world.embeddings_uri)["summary"]["users"]
    for file, key in ((USER_FACTORS_FILE, "user_id"), (ITEM_FACTORS_FILE, "item_id")):
        classic_ids, classic = _factors(recsys_world.embeddings_uri, file, key)
        connect_ids, connect = _factors(out, file, key)
        assert connect_ids == classic_ids
        # The same ALS (seed, blocks, iterations) on the same local[2] engine: the same factors, to float noise.
        np.testing.assert_allclose(connect, classic, rtol=1e-4, atol=1e-5)
