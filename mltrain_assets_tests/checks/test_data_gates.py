"""Gate rules over ingestion summaries: each failure names the partition, the rule and the value."""

from mltrain_assets.checks.data_gates import landed_complete, matches_contract
from mltrain_assets.checks.metric_gates import metric_above, metric_below


def _summary(rows_by_hour: dict[int, int], **extra) -> dict:
    return {"rows_by_hour": {str(h): n for h, n in rows_by_hour.items()}, "rows": sum(rows_by_hour.values()), **extra}


def test_complete_day_passes():
    outcome = landed_complete("ride_events", {"2026-01-01": _summary(dict.fromkeys(range(24), 500))}, 1000)
    assert outcome.passed and outcome.describe() == "passed"
    assert outcome.observed["2026-01-01"] == {"rows": 12000, "hours_present": 24}


def test_missing_hours_are_named():
    hours = {h: 500 for h in range(24) if h not in (3, 4)}
    outcome = landed_complete("user_interactions", {"2026-01-02": _summary(hours)}, 1000)
    assert not outcome.passed
    assert outcome.violations == [
        "user_interactions 2026-01-02: rule hourly_buckets_complete: missing hours [3, 4] (22/24 present)"
    ]


def test_implausibly_thin_hour_and_row_floor():
    hours = dict.fromkeys(range(24), 40)
    hours[5] = 1
    outcome = landed_complete("ride_events", {"2026-01-03": _summary(hours)}, 5000)
    text = outcome.describe()
    assert "rule plausible_hourly_counts: hours [5]" in text and "counts [1]" in text
    assert "rule min_rows_per_day: 921 rows < floor 5000" in text


def test_contract_gate_reports_quarantine_and_schema():
    good = {"schema_ok": True, "rows_rejected": 3, "rejected_by_rule": {"known_city": 3}, "duplicates_removed": 7}
    outcome = matches_contract("ride_events", {"2026-01-01": good, "2026-01-02": {"schema_ok": False}})
    assert outcome.violations == ["ride_events 2026-01-02: rule schema: landed files do not match the schema"]
    assert outcome.observed["2026-01-01"]["rejected_by_rule"] == {"known_city": 3}


def test_metric_gates_name_the_observed_value():
    assert metric_below("city_demand_model", "nyc|2026-01-01", "mape", 0.08, 0.15).passed
    failed = metric_below("city_demand_model", "nyc|2026-01-01", "mape", 0.21, 0.15)
    assert failed.violations == ["city_demand_model nyc|2026-01-01: rule mape < 0.15: observed mape=0.21"]
    assert not metric_below("m", "p", "mape", None, 0.15).passed
    assert not metric_above("recommender_model", "2026-01-01", "auc", 0.82, 0.82).passed, "the gate is strict"
    assert metric_above("recommender_model", "2026-01-01", "auc", 0.9, 0.82).passed
