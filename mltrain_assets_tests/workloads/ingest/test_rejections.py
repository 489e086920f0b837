"""The rejection catalogue: every way a landed day can be malformed fails once, named, and commits nothing.

Each case mutates a small clean day (a few thousand rows; rides from 2 cities) of each landing
dataset and asserts the rejection names the dataset, the partition, the rule and, where one file
is to blame, that file, and that no version was committed (no ``_MANIFEST.json``).
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mltrain_assets.artifacts import MANIFEST_NAME, normalize_uri, read_manifest
from mltrain_assets.pipelines.demand.simulate import write_rides_day
from mltrain_assets.pipelines.recsys.simulate import write_interactions_day
from mltrain_assets.registry import landing_dataset
from mltrain_assets.schemas import DatasetSpec
from mltrain_assets.workloads.common.runtime import DataRejected
from mltrain_assets.workloads.ingest.workload import ingest_day

DATE = "2026-03-10"
PART = "part-00000.parquet"
# Per dataset: a double column (mistyped, dropped, or set out of range) and the row rule that range breaks.
VALUE_COLUMN = {"rides": ("fare_usd", "non_negative_fare"), "interactions": ("dwell_seconds", "non_negative_dwell")}


@pytest.fixture(scope="module")
def clean_days(tmp_path_factory) -> Path:
    """One clean landed day of each dataset (rides: 2 cities, ~3.6k rows; interactions: ~10k events)."""
    root = tmp_path_factory.mktemp("clean_landing")
    write_rides_day(normalize_uri(str(root)), DATE, 10_000, cities=["nyc", "sf"])
    write_interactions_day(normalize_uri(str(root)), DATE, 10_000, n_users=300, n_items=60)
    return root


# ------------------------------------------------------------------ mutations of one landed day folder


def _part(day: Path, hour: int) -> Path:
    return day / f"hour={hour:02d}" / PART


def _rewrite(path: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    pq.write_table(change(pq.read_table(path)), path)


def _set(table: pa.Table, column: str, rows: int, value) -> pa.Table:
    """``table`` with ``column`` set to ``value`` (``None``: null) on its first ``rows`` rows."""
    index = table.schema.get_field_index(column)
    field = table.schema.field(index)
    values = table.column(column).to_pylist()
    values[:rows] = [value] * rows if not callable(value) else [value(v) for v in values[:rows]]
    if any(v is None for v in values):
        field = field.with_nullable(True)
    return table.set_column(index, field, pa.array(values, field.type))


def _cast(table: pa.Table, column: str, to: pa.DataType) -> pa.Table:
    index = table.schema.get_field_index(column)
    return table.set_column(index, pa.field(column, to), pc.cast(table.column(column), to))


def _half_of_hours(hours, column: str, value) -> Callable[[Path, DatasetSpec], None]:
    def mutate(day: Path, spec: DatasetSpec) -> None:
        for hour in hours:
            _rewrite(_part(day, hour), lambda t: _set(t, column_of(column, spec), t.num_rows // 2, value))

    return mutate


def column_of(column: str, spec: DatasetSpec) -> str:
    """``"<id>"``, ``"<time>"`` and ``"<value>"`` name the dataset's own columns."""
    return {"<id>": spec.id_column, "<time>": spec.time_column, "<value>": VALUE_COLUMN[spec.name][0]}.get(
        column, column
    )


def _not_parquet(day, spec):
    _part(day, 7).write_bytes(b"id,time\n1,2026-03-10\n" * 20)


def _truncated(day, spec):
    data = _part(day, 7).read_bytes()
    _part(day, 7).write_bytes(data[: len(data) // 2])


def _corrupt_page(day, spec):
    """Valid footer, garbled compressed page: only decoding the data finds it."""
    path = _part(day, 7)
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(0)
    start = (chunk.dictionary_page_offset or chunk.data_page_offset) + 24
    data = bytearray(path.read_bytes())
    data[start : start + 48] = b"\xab" * 48
    path.write_bytes(bytes(data))


def _zero_bytes(day, spec):
    _part(day, 7).write_bytes(b"")


def _wrong_type(day, spec):
    _rewrite(_part(day, 7), lambda t: _cast(t, column_of("<value>", spec), pa.string()))


def _missing_column(day, spec):
    _rewrite(_part(day, 7), lambda t: t.drop_columns([column_of("<value>", spec)]))


def _extra_column(day, spec):
    _rewrite(_part(day, 7), lambda t: t.append_column("surge", pa.array([1.0] * t.num_rows)))


def _mixed_schemas(day, spec):
    """The afternoon's files come from another writer: event time in nanoseconds."""
    for hour in range(12, 24):
        _rewrite(_part(day, hour), lambda t: _cast(t, spec.time_column, pa.timestamp("ns", tz="UTC")))


def _null_ids(day, spec):
    _rewrite(_part(day, 5), lambda t: _set(t, spec.id_column, 3, None))


def _null_times(day, spec):
    _rewrite(_part(day, 9), lambda t: _set(t, spec.time_column, 2, None))


def _doubled(day, spec):
    """A replayed delivery: every file holds its rows twice."""
    for hour in range(24):
        _rewrite(_part(day, hour), lambda t: pa.concat_tables([t, t]))


def _no_rows(day, spec):
    for hour in range(24):
        _rewrite(_part(day, hour), lambda t: t.slice(0, 0))


def _hours_missing(day, spec):
    for hour in (3, 4):
        shutil.rmtree(day / f"hour={hour:02d}")


def _thin_hour(day, spec):
    _rewrite(_part(day, 5), lambda t: t.slice(0, 1))


def _few_rows(day, spec):
    for hour in range(24):
        _rewrite(_part(day, hour), lambda t: t.slice(0, 10))


def _marker_only(day, spec):
    for hour in range(24):
        shutil.rmtree(day / f"hour={hour:02d}")


def _outside_hour_folder(day, spec):
    _part(day, 7).rename(day / PART)


def _malformed_hour_folder(day, spec):
    (day / "hour=07").rename(day / "hour=7")


def _not_a_parquet_name(day, spec):
    (day / "hour=07" / "part-00001.csv").write_text("id,time\n")


def _no_marker(day, spec):
    (day / "_SUCCESS").unlink()


NEXT_DAY = dt.timedelta(days=1)
NEXT_DAY_DATE = (dt.date.fromisoformat(DATE) + NEXT_DAY).isoformat()


@dataclass(frozen=True)
class Case:
    kind: str
    rule: str  # "<value rule>": the dataset's own range rule
    mutate: Callable[[Path, DatasetSpec], None]
    expect: tuple[str, ...]  # fragments of the message; "<id>", "<time>", "<value>" are the dataset's columns


CASES = [
    Case("not parquet", "readable_parquet", _not_parquet, (f"hour=07/{PART} is not a parquet file",)),
    Case("truncated", "readable_parquet", _truncated, (f"hour=07/{PART} is truncated",)),
    Case("corrupt page", "readable_parquet", _corrupt_page, (f"hour=07/{PART} cannot be decoded",)),
    Case("zero bytes", "non_empty_file", _zero_bytes, (f"hour=07/{PART} is empty (0 bytes)",)),
    Case(
        "wrong type", "schema", _wrong_type, (f"hour=07/{PART}: mistyped columns [<value>: string (expected double)]",)
    ),
    Case("missing column", "schema", _missing_column, (f"hour=07/{PART}: missing columns ['<value>']",)),
    Case("extra column", "schema", _extra_column, (f"hour=07/{PART}: extra columns ['surge']",)),
    Case(
        "mixed schemas across hours",
        "schema",
        _mixed_schemas,
        (
            f"hour=12/{PART}: mistyped columns [<time>: timestamp[ns, tz=UTC] (expected timestamp[us, tz=UTC])]",
            "12 of 24 files differ from the contract; 12 match it",
        ),
    ),
    Case("null ids", "key_not_null", _null_ids, ("<id> is null in 0.", "of rows (3 of ", f"hour=05/{PART} (3)")),
    Case("null event times", "key_not_null", _null_times, ("<time> is null in 0.", f"hour=09/{PART} (2)")),
    Case(
        "out-of-range values",
        "<value rule>",
        _half_of_hours((16, 17, 18), "<value>", -1.0),
        ("<value> = -1.0 in ", "more than the 1% allowed", "most in hour=1", PART),
    ),
    Case(
        "timestamps outside the day",
        "event_time_in_date",
        _half_of_hours((16, 17, 18), "<time>", lambda ts: ts + NEXT_DAY),
        (f"<time> = {NEXT_DAY_DATE} ", "more than the 1% allowed", "most in hour=1"),
    ),
    Case(
        "duplicate keys", "duplicate_keys", _doubled, ("repeat the <id> of an earlier row", "more than the 5% allowed")
    ),
    Case("empty day", "non_empty_day", _no_rows, ("24 part files hold 0 rows",)),
    Case("missing hours", "hourly_buckets_complete", _hours_missing, ("missing hours [3, 4] (22/24 present)",)),
    Case(
        "implausible hourly count", "plausible_hourly_counts", _thin_hour, ("hours [5] have fewer than", "counts [1]")
    ),
    Case("too few rows", "min_rows_per_day", _few_rows, ("rows < floor 1000",)),
    Case("_SUCCESS without data", "files_present", _marker_only, ("a _SUCCESS marker but no part files under",)),
    Case("part file outside hour folders", "layout", _outside_hour_folder, (f"{PART}: not in an hour=HH folder",)),
    Case(
        "malformed hour folder",
        "layout",
        _malformed_hour_folder,
        (f"hour=7/{PART}: malformed hour folder 'hour=7' (expected hour=00 .. hour=23)",),
    ),
    Case("not a parquet file name", "layout", _not_a_parquet_name, ("hour=07/part-00001.csv: not a .parquet file",)),
    Case(
        "no _SUCCESS marker",
        "landing_complete",
        _no_marker,
        ("no _SUCCESS marker at", "(24/24 hourly buckets present)"),
    ),
]


@pytest.mark.parametrize("dataset", ["rides", "interactions"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.kind.replace(" ", "_"))
def test_a_malformed_day_is_rejected_naming_dataset_partition_file_and_rule(case, dataset, clean_days, tmp_path):
    spec = landing_dataset(dataset)
    day = tmp_path / "landing" / dataset / f"date={DATE}"
    shutil.copytree(clean_days / dataset / f"date={DATE}", day)
    case.mutate(day, spec)
    out = tmp_path / "out" / "v=test"

    with pytest.raises(DataRejected) as rejected:
        ingest_day(normalize_uri(str(tmp_path / "landing")), dataset, DATE, normalize_uri(str(out)))

    message = str(rejected.value)
    rule = VALUE_COLUMN[dataset][1] if case.rule == "<value rule>" else case.rule
    assert message.startswith(f"{dataset} {DATE}: rule {rule}: "), message
    for fragment in case.expect:
        fragment = fragment.replace("<id>", spec.id_column).replace("<time>", spec.time_column)
        assert fragment.replace("<value>", VALUE_COLUMN[dataset][0]) in message, message
    assert read_manifest(normalize_uri(str(out))) is None
    assert not list((tmp_path / "out").rglob(MANIFEST_NAME)), "a rejected day commits nothing"


def test_the_clean_days_are_accepted(clean_days, tmp_path):
    """The catalogue's starting point is a valid day of each dataset (else every case proves nothing)."""
    for dataset in ("rides", "interactions"):
        summary = ingest_day(normalize_uri(str(clean_days)), dataset, DATE, normalize_uri(str(tmp_path / dataset)))
        assert summary["rows"] > 3_000 and summary["hours_present"] == list(range(24))
        assert 0 < summary["duplicates_removed"] < 0.05 * summary["rows_landed"], "a few repeats are dropped"


# Cases whose error arises while reading the rows: on S3 the day is read once into a temp table, not a view.
S3_CASES = [c for c in CASES if c.kind in ("corrupt page", "mixed schemas across hours", "null ids", "duplicate keys")]


@pytest.mark.parametrize("case", S3_CASES, ids=lambda c: c.kind.replace(" ", "_"))
def test_a_malformed_day_on_s3_is_rejected_as_on_local_disk(case, clean_days, tmp_path, s3_endpoint):
    from mltrain_assets.artifacts import filesystem

    spec = landing_dataset("rides")
    day = tmp_path / "landing" / "rides" / f"date={DATE}"
    shutil.copytree(clean_days / "rides" / f"date={DATE}", day)
    case.mutate(day, spec)
    landing = f"s3://mltrain/{tmp_path.name}/landing"
    fs, path = filesystem(f"{landing}/rides/date={DATE}")
    fs.put(f"{day}/", path, recursive=True)
    out = f"s3://mltrain/{tmp_path.name}/out/v=test"

    with pytest.raises(DataRejected) as rejected:
        ingest_day(landing, "rides", DATE, out)

    message = str(rejected.value)
    assert message.startswith(f"rides {DATE}: rule {case.rule}: "), message
    for fragment in case.expect:
        assert fragment.replace("<id>", spec.id_column).replace("<time>", spec.time_column) in message, message
    assert read_manifest(out) is None, "a rejected day commits nothing"


# Every row rule of both contracts, broken in half the rows of three hours (more than the 1% a day may
# quarantine): (dataset, rule, column set, value set, what the rejection says of the column and its values).
MIDNIGHT = dt.datetime.fromisoformat(f"{DATE}T00:00:00+00:00")
ROW_RULE_CASES = [
    ("rides", "ride_id_present", "ride_id", "", "ride_id = '' in "),
    ("rides", "known_city", "city", "atlantis", "city = 'atlantis' in "),
    ("rides", "valid_status", "status", "lost", "status = 'lost' in "),
    ("rides", "non_negative_fare", "fare_usd", -1.0, "fare_usd = -1.0 in "),
    ("rides", "non_negative_distance", "distance_km", -2.5, "distance_km = -2.5 in "),
    ("rides", "non_negative_precipitation", "precipitation_mm", -0.5, "precipitation_mm = -0.5 in "),
    ("rides", "dropoff_after_pickup", "dropoff_at", MIDNIGHT, f"(dropoff_at, pickup_at) = ({DATE} 00:00:00+00:00, "),
    ("rides", "event_time_in_date", "requested_at", lambda ts: ts + NEXT_DAY, f"requested_at = {NEXT_DAY_DATE} "),
    ("rides", "required_not_null", "temperature_c", None, "temperature_c is null in "),
    ("interactions", "event_id_present", "event_id", "", "event_id = '' in "),
    ("interactions", "valid_label", "clicked", 7, "clicked = 7 in "),
    ("interactions", "known_device", "device", "tv", "device = 'tv' in "),
    ("interactions", "non_negative_position", "position", -3, "position = -3 in "),
    ("interactions", "non_negative_dwell", "dwell_seconds", -1.0, "dwell_seconds = -1.0 in "),
    ("interactions", "event_time_in_date", "event_at", lambda ts: ts + NEXT_DAY, f"event_at = {NEXT_DAY_DATE} "),
    ("interactions", "required_not_null", "user_id", None, "user_id is null in "),
]


def test_the_catalogue_breaks_every_row_rule_of_both_contracts():
    from mltrain_assets.workloads.ingest.checks import EVENT_TIME_RULE, NOT_NULL_RULE

    for dataset in ("rides", "interactions"):
        rules = {*landing_dataset(dataset).row_rules, EVENT_TIME_RULE, NOT_NULL_RULE}
        assert rules == {rule for name, rule, *_ in ROW_RULE_CASES if name == dataset}


@pytest.mark.parametrize(
    ("dataset", "rule", "column", "value", "says"),
    ROW_RULE_CASES,
    ids=[f"{case[0]}-{case[1]}" for case in ROW_RULE_CASES],
)
def test_a_row_rule_rejection_names_the_column_and_its_offending_values(
    dataset, rule, column, value, says, clean_days, tmp_path
):
    spec = landing_dataset(dataset)
    day = tmp_path / "landing" / dataset / f"date={DATE}"
    shutil.copytree(clean_days / dataset / f"date={DATE}", day)
    _half_of_hours((16, 17, 18), column, value)(day, spec)

    with pytest.raises(DataRejected) as rejected:
        ingest_day(normalize_uri(str(tmp_path / "landing")), dataset, DATE, normalize_uri(str(tmp_path / "out")))

    message = str(rejected.value)
    assert message.startswith(f"{dataset} {DATE}: rule {rule}: {says}"), message
    assert "of rows (" in message and "more than the 1% allowed" in message, message
