"""The training window as an MLflow dataset: the record ``from_pandas`` of the whole window would log, read from its head."""

from __future__ import annotations

import warnings

import mlflow
import pandas as pd
import pyarrow as pa

from mltrain_assets.artifacts import ArtifactWriter, normalize_uri
from mltrain_assets.pipelines.recsys.simulate import simulate_day
from mltrain_assets.pipelines.recsys.workloads.train.data import EVENT_COLUMNS
from mltrain_assets.pipelines.recsys.workloads.train.tracking import window_dataset
from mltrain_assets.workloads.ingest.params import EVENTS_FILE


def test_a_window_dataset_logs_what_from_pandas_of_the_whole_window_logs(tmp_path):
    uris, days = [], []
    for date in ("2026-03-01", "2026-03-02"):  # 2 x ~8k rows: longer than the 10k rows MLflow digests
        day, _ = simulate_day(date, events_per_day=8_000, n_users=300, n_items=40)
        uri = normalize_uri(str(tmp_path / date / "v=test"))
        writer = ArtifactWriter(uri, producer="tests", code_version="test")
        writer.write_table(EVENTS_FILE, day)
        writer.commit()
        uris.append(uri)
        days.append(day.select(EVENT_COLUMNS))
    whole: pd.DataFrame = pa.concat_tables(days).to_pandas()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = mlflow.data.from_pandas(whole, source=uris[-1], targets="clicked", name="window").to_dict()
        logged = window_dataset(uris, uris[-1], "window").to_dict()
    assert logged == expected
    assert '"num_rows": 16016' in logged["profile"]
