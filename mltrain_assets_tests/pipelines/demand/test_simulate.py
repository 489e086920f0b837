"""The rides simulator: the landing contract, determinism, realistic properties."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mltrain_assets.artifacts import normalize_uri
from mltrain_assets.landing import day_status
from mltrain_assets.pipelines.demand import simulate as rides
from mltrain_assets.pipelines.demand.contract import CITIES, RIDES_SCHEMA
from mltrain_assets.pipelines.demand.simulate import simulate_rides_day, write_rides_day
from mltrain_assets.pipelines.demand.simulate_world import expected_hourly_demand

DATES = ["2026-03-09", "2026-03-10", "2026-03-11"]
VOLUME = 20_000


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_day_follows_the_landing_contract(tmp_path):
    landing = normalize_uri(str(tmp_path))
    summary = write_rides_day(landing, DATES[0], VOLUME)

    status = day_status(landing, "rides", DATES[0])
    assert status["success"] and status["hours"] == list(range(24))
    assert sorted(status["files"]) == [f"hour={h:02d}/part-00000.parquet" for h in range(24)]
    day = tmp_path / "rides" / f"date={DATES[0]}"
    rows = 0
    for hour in range(24):
        part = pq.read_table(day / f"hour={hour:02d}" / "part-00000.parquet")
        assert part.schema.equals(RIDES_SCHEMA), part.schema
        if part.num_rows:
            hours = pc.hour(part.column("requested_at")).to_pylist()
            assert set(hours) == {hour}
        rows += part.num_rows
    marker = json.loads((day / "_SUCCESS").read_text())
    assert marker["rows"] == rows == summary["rows"]
    assert marker["date"] == DATES[0] and len(marker["sha256"]) == 64
    assert set(summary["rows_by_city"]) == set(CITIES)
    assert sum(summary["rows_by_city"].values()) == rows


def test_success_marker_is_written_last(tmp_path, monkeypatch):
    written: list[str] = []

    class RecordingFileSystem:
        """Delegates to the real filesystem, recording every whole-file write."""

        def __init__(self, fs):
            self._fs = fs

        def __getattr__(self, name):
            return getattr(self._fs, name)

        def pipe_file(self, path, data, *args, **kwargs):
            written.append(path)
            return self._fs.pipe_file(path, data, *args, **kwargs)

    real_filesystem = rides.filesystem

    def recording_filesystem(uri):
        fs, path = real_filesystem(uri)
        return RecordingFileSystem(fs), path

    monkeypatch.setattr(rides, "filesystem", recording_filesystem)
    write_rides_day(normalize_uri(str(tmp_path)), DATES[0], 5_000)
    assert len(written) == 25
    assert written[-1].endswith(f"date={DATES[0]}/_SUCCESS")
    assert all(p.endswith("part-00000.parquet") for p in written[:-1])


def test_generating_a_day_twice_gives_identical_bytes(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    write_rides_day(normalize_uri(str(first)), DATES[1], VOLUME, seed=7)
    write_rides_day(normalize_uri(str(second)), DATES[1], VOLUME, seed=7)
    assert _files(first) == _files(second)
    other_seed = tmp_path / "c"
    write_rides_day(normalize_uri(str(other_seed)), DATES[1], VOLUME, seed=8)
    assert _files(other_seed) != _files(first)


def test_dates_generated_out_of_order_are_the_same(tmp_path):
    in_order, shuffled = tmp_path / "in_order", tmp_path / "shuffled"
    for date in DATES:
        write_rides_day(normalize_uri(str(in_order)), date, VOLUME)
    for date in reversed(DATES):
        write_rides_day(normalize_uri(str(shuffled)), date, VOLUME)
    assert _files(in_order) == _files(shuffled)


def test_a_city_does_not_depend_on_which_other_cities_are_generated():
    everyone = simulate_rides_day(DATES[0], VOLUME)
    alone = simulate_rides_day(DATES[0], VOLUME, cities=["boston"])
    boston = everyone.filter(pc.equal(everyone.column("city"), "boston"))
    assert boston.num_rows == alone.num_rows > 0
    assert boston.equals(alone)


def test_duplicates_cancellations_and_city_sizes_are_realistic():
    table = simulate_rides_day(DATES[0], 100_000)
    ids = table.column("ride_id")
    duplicates = table.num_rows - pc.count_distinct(ids).as_py()
    assert 0.001 < duplicates / table.num_rows < 0.004
    # A redelivered event repeats the whole event, not only its id.
    frame = table.to_pandas()
    repeated = frame[frame.duplicated("ride_id", keep=False)]
    assert len(repeated.drop_duplicates()) == duplicates
    cancelled = frame.status.eq("cancelled").mean()
    assert 0.02 < cancelled < 0.05
    assert frame.loc[frame.status.eq("cancelled"), "fare_usd"].eq(0).all()
    assert frame.loc[frame.status.eq("cancelled"), "dropoff_at"].isna().all()
    completed = frame[frame.status.eq("completed")]
    assert (completed.dropoff_at >= completed.pickup_at).all() and (completed.pickup_at >= completed.requested_at).all()
    sizes = frame.city.value_counts()
    assert sizes.idxmax() == "nyc" and sizes.idxmin() == "austin"
    assert 70_000 < table.num_rows < 140_000


def test_demand_has_weekday_and_weekend_shapes_and_rain_raises_it():
    weekday, saturday = "2026-03-10", "2026-03-14"  # a Tuesday and a Saturday
    tuesday_profile = expected_hourly_demand(weekday, "chicago")
    saturday_profile = expected_hourly_demand(saturday, "chicago")
    # Chicago is UTC-6: the morning commute (8:00 local) is 14:00 UTC; the small hours after a night
    # out are 06:00-10:00 UTC.
    assert tuesday_profile[14] > 1.5 * saturday_profile[14]
    assert saturday_profile[6] > 2 * tuesday_profile[6]

    # Over a year, storm hours have more demand than dry hours of the same weekday profile.
    days = [f"2026-{m:02d}-{d:02d}" for m in range(1, 13) for d in (3, 10, 17, 24)]
    wet, dry = [], []
    for date in days:
        conditions = rides.city_hour_conditions(date, "seattle")
        ratio = conditions["multiplier"] / conditions["shape"]
        (wet if conditions["storm"].all() else dry).append(np.median(ratio))
    assert wet and dry and np.mean(wet) > 1.04 * np.mean(dry)


@pytest.mark.parametrize("bad", [["paris"], ["nyc", "atlantis"]])
def test_unknown_cities_are_refused(bad):
    with pytest.raises(ValueError, match="unknown cities"):
        simulate_rides_day(DATES[0], 1_000, cities=bad)
