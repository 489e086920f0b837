"""Gates over committed summaries: each failure names the asset, partition, rule and observed value; each pass
names the partition and what was observed."""

from dagster import AssetCheckSeverity

from mltrain_assets.core.gates import MATCHES_CONTRACT, Gate, landed_complete, metric_above, metric_below
from mltrain_assets.core.steps import check_results


def _summary(rows_by_hour: dict[int, int], **extra) -> dict:
    return {"rows_by_hour": {str(h): n for h, n in rows_by_hour.items()}, "rows": sum(rows_by_hour.values()), **extra}


def test_complete_day_passes():
    outcome = landed_complete(1000).evaluate("ride_events", {"2026-01-01": _summary(dict.fromkeys(range(24), 500))})
    assert outcome.name == "landed_complete"
    assert outcome.passed
    assert outcome.describe() == "2026-01-01: 24/24 hourly buckets, 12,000 rows >= 1,000"
    assert outcome.observed["2026-01-01"] == {
        "partition": "2026-01-01",
        "rows": 12000,
        "hours_present": 24,
        "min_rows": 1000,
    }


def test_missing_hours_are_named():
    hours = {h: 500 for h in range(24) if h not in (3, 4)}
    outcome = landed_complete(1000).evaluate("user_interactions", {"2026-01-02": _summary(hours)})
    assert not outcome.passed
    assert outcome.violations == [
        "user_interactions 2026-01-02: rule hourly_buckets_complete: missing hours [3, 4] (22/24 present)"
    ]
    assert outcome.observed["2026-01-02"]["hours_present"] == 22


def test_implausibly_thin_hour_and_row_floor():
    hours = dict.fromkeys(range(24), 40)
    hours[5] = 1
    outcome = landed_complete(5000).evaluate("ride_events", {"2026-01-03": _summary(hours)})
    text = outcome.describe()
    assert "ride_events 2026-01-03: rule plausible_hourly_counts: hours [5]" in text and "counts [1]" in text
    assert "ride_events 2026-01-03: rule min_rows_per_day: 921 rows < floor 5000" in text


def test_one_gate_over_several_partitions_names_each_failing_one():
    good, bad = _summary(dict.fromkeys(range(24), 500)), _summary({h: 500 for h in range(24) if h != 0})
    outcome = landed_complete(1000).evaluate("ride_events", {"2026-01-02": bad, "2026-01-01": good})
    assert outcome.violations == [
        "ride_events 2026-01-02: rule hourly_buckets_complete: missing hours [0] (23/24 present)"
    ]
    assert outcome.describe() == outcome.violations[0], "a failure keeps its violation text"
    assert list(outcome.observed) == ["2026-01-01", "2026-01-02"]
    assert outcome.findings["2026-01-02"] == "2026-01-02: 23/24 hourly buckets, 11,500 rows >= 1,000"


def test_a_passing_range_names_every_partition_with_its_values():
    days = {"2026-01-02": _summary(dict.fromkeys(range(24), 50)), "2026-01-01": _summary(dict.fromkeys(range(24), 500))}
    outcome = landed_complete(1000).evaluate("ride_events", days)
    assert outcome.describe() == (
        "2026-01-01: 24/24 hourly buckets, 12,000 rows >= 1,000; 2026-01-02: 24/24 hourly buckets, 1,200 rows >= 1,000"
    )


def test_contract_gate_reports_quarantine_and_schema():
    good = {"schema_ok": True, "rows_rejected": 3, "rejected_by_rule": {"known_city": 3}, "duplicates_removed": 7}
    outcome = MATCHES_CONTRACT.evaluate("ride_events", {"2026-01-01": good, "2026-01-02": {"schema_ok": False}})
    assert isinstance(MATCHES_CONTRACT, Gate) and outcome.name == "matches_contract"
    assert outcome.violations == ["ride_events 2026-01-02: rule schema: landed files do not match the schema"]
    assert outcome.observed["2026-01-01"]["rejected_by_rule"] == {"known_city": 3}
    assert outcome.observed["2026-01-01"]["duplicates_removed"] == 7
    assert outcome.findings["2026-01-01"] == (
        "2026-01-01: schema ok, 3 rows quarantined (known_city=3), 7 duplicates removed"
    )
    clean = MATCHES_CONTRACT.evaluate("ride_events", {"2026-01-03": {"schema_ok": True, "duplicates_removed": 1200}})
    assert clean.describe() == "2026-01-03: schema ok, 0 rows quarantined, 1,200 duplicates removed"


def test_metric_gates_name_the_observed_value():
    mape = metric_below("mape_below_threshold", "mape", 0.15, "held-out MAPE", context=("naive_mape",))
    passed = mape.evaluate("city_demand_model", {"nyc|2026-01-01": {"mape": 0.129, "naive_mape": 0.3}})
    assert passed.passed
    assert passed.describe() == "nyc|2026-01-01: MAPE 0.129 < 0.15 (naive_mape 0.3)"
    assert passed.observed["nyc|2026-01-01"] == {
        "partition": "nyc|2026-01-01",
        "mape": 0.129,
        "naive_mape": 0.3,
        "threshold": 0.15,
    }
    failed = mape.evaluate("city_demand_model", {"nyc|2026-01-01": {"mape": 0.21}})
    assert failed.violations == ["city_demand_model nyc|2026-01-01: rule mape < 0.15: observed mape=0.21"]
    missing = mape.evaluate("m", {"p": {}})
    assert missing.violations == ["m p: rule mape < 0.15: observed mape=None"], "a missing value fails"

    auc = metric_above("auc_above_threshold", "auc", 0.82, "held-out AUC")
    tie = auc.evaluate("recommender_model", {"2026-01-01": {"auc": 0.82}})
    assert tie.violations == ["recommender_model 2026-01-01: rule auc > 0.82: observed auc=0.82"], "strict"
    assert auc.evaluate("recommender_model", {"2026-01-01": {"auc": 0.9}}).describe() == "2026-01-01: AUC 0.9 > 0.82"


def test_check_results_name_partition_and_observed_values_passing_or_failing():
    """What the UI's check history shows: the partition and the value, not just "passed"."""
    mape = metric_below("mape_below_threshold", "mape", 0.15, "held-out MAPE", context=("naive_mape",))
    for value, passed in ((0.129, True), (0.21, False)):
        outcome = mape.evaluate("city_demand_model", {"nyc|2026-11-27": {"mape": value, "naive_mape": 0.3}})
        (result,) = check_results([outcome])
        assert result.passed is passed and result.severity == AssetCheckSeverity.ERROR
        assert "nyc|2026-11-27" in result.description and str(value) in result.description
        assert result.metadata["partition"].value == "nyc|2026-11-27"
        assert result.metadata["mape"].value == value and result.metadata["threshold"].value == 0.15
