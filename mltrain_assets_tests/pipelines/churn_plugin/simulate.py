"""Synthetic account events: churn falls with the minutes spent, by ``signal`` (0: no signal at all)."""

import json
import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mltrain_assets.sdk import filesystem, hour_uri, success_uri

from .contract import ACCOUNT_EVENTS


def write_account_events_day(landing_uri: str, date: str, rows_per_day: int = 2_400, signal: float = 1.0) -> dict:
    rng = np.random.default_rng(int(date.replace("-", "")))
    per_hour = rows_per_day // 24
    for hour in range(24):
        minutes = rng.exponential(20.0, per_hour)
        churn_probability = 1 / (1 + np.exp(-(signal * (1.5 - minutes / 10))))
        start = np.datetime64(f"{date}T{hour:02d}:00:00", "us")
        part = pa.table(
            {
                "event_id": [f"{date}-{hour:02d}-{i}" for i in range(per_hour)],
                "account_id": rng.integers(0, 500, per_hour),
                "event_at": pa.array(start + rng.integers(0, 3_600_000_000, per_hour), pa.timestamp("us", "UTC")),
                "minutes": minutes,
                "plan": rng.choice(["free", "pro"], per_hour),
                "churned": (rng.random(per_hour) < churn_probability).astype(np.int8),
            },
            schema=ACCOUNT_EVENTS.schema,
        )
        fs, path = filesystem(posixpath.join(hour_uri(landing_uri, ACCOUNT_EVENTS.name, date, hour), "part-0.parquet"))
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with fs.open(path, "wb") as handle:
            pq.write_table(part, handle)
    fs, path = filesystem(success_uri(landing_uri, ACCOUNT_EVENTS.name, date))
    fs.pipe_file(path, json.dumps({"date": date, "rows": per_hour * 24}).encode())
    return {"date": date, "rows": per_hour * 24}
