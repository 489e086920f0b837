"""Landing gates through Dagster: a day that has not landed, and a day whose schema is wrong."""

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import DagsterEventType, DagsterInstance
from mlflow.tracking import MlflowClient

from mltrain_assets.artifacts import filesystem, join_uri
from mltrain_assets.cli import demo
from mltrain_assets.landing import hour_uri
from mltrain_assets.simulate import simulate

DATE = "2026-02-02"


def _retries(run_id: str) -> int:
    """How many times the run's steps were put up for retry (bad data must fail once)."""
    records = DagsterInstance.get().get_records_for_run(run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY).records
    return len(records)


def test_day_without_success_marker_fails_naming_partition_and_rule(mltrain_home):
    outcome = demo.execute("ride_events_job", "ride_events", partition_key=DATE)
    assert not outcome.success
    assert f"ride_events {DATE}: rule landing_complete: no _SUCCESS marker" in outcome.error
    assert "0/24 hourly buckets present" in outcome.error
    assert _retries(outcome.run_id) == 0


def test_bad_schema_is_rejected_without_retry_and_nothing_downstream(mltrain_home):
    landing = f"file://{mltrain_home}/landing"
    simulate("rides", landing, DATE, DATE, volume=5_000)
    fs, path = filesystem(hour_uri(landing, "rides", DATE, 7))
    part = fs.ls(path, detail=False)[0]
    table = pq.read_table(part).rename_columns(
        [
            "ride_id",
            "city",
            "requested_at",
            "pickup_at",
            "dropoff_at",
            "pickup_zone",
            "dropoff_zone",
            "distance_km",
            "fare",
            "status",
            "temperature_c",
            "precipitation_mm",
        ]
    )
    table = table.set_column(table.schema.get_field_index("pickup_zone"), "pickup_zone", pa.array(["z"] * len(table)))
    pq.write_table(table, part)

    outcome = demo.execute("ride_events_job", "ride_events", partition_key=DATE)
    assert not outcome.success
    assert DATE in outcome.error and "schema" in outcome.error
    assert "fare" in outcome.error or "fare_usd" in outcome.error
    assert _retries(outcome.run_id) == 0
    # Nothing committed for the date: no reference, no version with a manifest.
    fs, refs = filesystem(join_uri(f"file://{mltrain_home}/storage", "_refs", "ride_events"))
    assert not fs.exists(refs)
    fs, root = filesystem(join_uri(f"file://{mltrain_home}/storage", "ride_events", DATE))
    assert not fs.exists(root) or not fs.glob(f"{root}/*/_MANIFEST.json")
    # The landed files are untouched: nothing is lost.
    assert pq.read_table(part).num_rows == len(table)
    assert MlflowClient().search_registered_models() == []
