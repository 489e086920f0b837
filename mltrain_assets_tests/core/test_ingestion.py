"""Landing gates through Dagster: a day that has not landed, a day whose schema is wrong, an unreadable file,
and a range of days ingested in one run, each day with its own figures; the landing fingerprint covers content."""

import os

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import AssetKey, DagsterEventType, DagsterInstance
from mlflow.tracking import MlflowClient

from mltrain_assets.artifacts import filesystem, join_uri, read_manifest
from mltrain_assets.cli import demo
from mltrain_assets.core.ingestion import landing_fingerprint
from mltrain_assets.landing import day_status, hour_uri
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


def test_a_range_run_gives_each_day_its_own_figures_and_named_check_results(mltrain_home):
    days = ["2026-02-03", "2026-02-04", "2026-02-05"]
    landing = f"file://{mltrain_home}/landing"
    for day, volume in zip(days, (2_000, 3_000, 4_000), strict=True):
        simulate("rides", landing, day, day, volume=volume)
    outcome = demo.execute(
        "ride_events_job", "ride_events", partition_range=(days[0], days[-1]), assets=["ride_events"]
    )
    assert outcome.success, outcome.error

    instance = DagsterInstance.get()
    events = instance.get_records_for_run(outcome.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    by_day = {}
    for record in events:
        materialization = record.event_log_entry.dagster_event.step_materialization_data.materialization
        by_day[materialization.partition] = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    assert sorted(by_day) == days
    rows = [by_day[d]["rows"] for d in days]
    assert len(set(rows)) == 3 and rows == sorted(rows), f"each day its own rows, not the batch's sum: {rows}"
    for day in days:
        figures = by_day[day]
        assert figures["partition"] == day and figures["hours_present"] == 24
        assert figures["uri"].endswith(f"/ride_events/{day}/v={figures['version']}")
        assert figures["reused_committed_version"] is False
        assert {"duplicates_removed", "rows_rejected", "rejected_by_rule"} <= set(figures)
        # What landed content the version holds (the landing sensor compares a re-delivery with it).
        landed = landing_fingerprint(day_status(landing, "rides", day))
        assert (
            figures["landing_fingerprint"] == landed == read_manifest(figures["uri"])["summary"]["landing_fingerprint"]
        )
        assert figures["dates_in_run"] == 3 and figures["dates_ingested_now"] == 3
        assert figures["rows_in_run"] == sum(rows)
        # The IO manager still wrote one reference per day.
        assert (mltrain_home / "storage" / "_refs" / "ride_events" / f"{day}.json").exists()
    assert set(instance.get_materialized_partitions(AssetKey("ride_events"))) == set(days)

    # Passing checks name each day and its observed values.
    described = outcome.check_descriptions["ride_events:landed_complete"]
    for day in days:
        assert f"{day}: 24/24 hourly buckets, {by_day[day]['rows']:,} rows >= 1,000" in described
    assert all(outcome.checks.values())
    assert f"{days[0]}: schema ok, " in outcome.check_descriptions["ride_events:matches_contract"]

    # Run again: every day is found committed, and says so on its own materialization.
    again = demo.execute("ride_events_job", "ride_events", partition_range=(days[0], days[-1]), assets=["ride_events"])
    assert again.success and again.materializations["ride_events"]["reused_committed_version"] is True
    assert again.materializations["ride_events"]["dates_ingested_now"] == 0


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


def test_an_unreadable_landed_file_fails_once_naming_the_file(mltrain_home):
    landing = f"file://{mltrain_home}/landing"
    simulate("rides", landing, DATE, DATE, volume=5_000)
    fs, path = filesystem(hour_uri(landing, "rides", DATE, 7))
    fs.pipe_file(f"{path}/part-00000.parquet", b"<html>503 Service Unavailable</html>")

    outcome = demo.execute("ride_events_job", "ride_events", partition_key=DATE, assets=["ride_events"])
    assert not outcome.success
    assert f"rides {DATE}: rule readable_parquet: hour=07/part-00000.parquet is not a parquet file" in outcome.error, (
        outcome.error
    )
    assert _retries(outcome.run_id) == 0, "bad data fails once: no retry, no backoff"
    fs, root = filesystem(join_uri(f"file://{mltrain_home}/storage", "ride_events", DATE))
    assert not fs.exists(root) or not fs.glob(f"{root}/*/_MANIFEST.json")


def _plain_parquet(path, table):
    """A producer writing uncompressed parquet without dictionaries: fixing one value keeps the file's size."""
    pq.write_table(table, path, compression="none", use_dictionary=False)


def test_the_landing_fingerprint_covers_content_not_sizes(tmp_path):
    landing = f"file://{tmp_path}/landing"
    simulate("rides", landing, DATE, DATE, volume=2_000)
    part = f"{tmp_path}/landing/rides/date={DATE}/hour=12/part-00000.parquet"
    delivered = pq.read_table(part)
    _plain_parquet(part, delivered)
    first = day_status(landing, "rides", DATE)
    version = landing_fingerprint(first)

    # Rewritten byte for byte (a producer re-running its export): a new listing, the same version.
    _plain_parquet(part, delivered)
    again = day_status(landing, "rides", DATE)
    assert landing_fingerprint(again) == version

    # A corrected re-delivery: one value fixed, every file the same size, the same _SUCCESS: a new version.
    fares = delivered.column("fare_usd").to_pylist()
    fixed = delivered.set_column(
        delivered.schema.get_field_index("fare_usd"),
        delivered.schema.field("fare_usd"),
        pa.array([fares[0] + 1.0, *fares[1:]], pa.float64()),
    )
    _plain_parquet(part, fixed)
    corrected = day_status(landing, "rides", DATE)
    assert corrected["files"] == first["files"] and corrected["marker_sha256"] == first["marker_sha256"]
    assert landing_fingerprint(corrected) != version
    # Even with its modification time put back, the content still tells: the fingerprint reads the bytes.
    os.utime(part, ns=(os.stat(part).st_atime_ns, int(first["entries"]["hour=12/part-00000.parquet"]["mtime"] * 1e9)))
    assert landing_fingerprint(day_status(landing, "rides", DATE)) == landing_fingerprint(corrected)
