"""Synthetic landing data: deterministic per date, with learnable signal."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator


def date_range(start: str, end: str) -> Iterator[str]:
    day, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    if last < day:
        raise ValueError(f"--end {end} is before --start {start}")
    while day <= last:
        yield day.isoformat()
        day += dt.timedelta(days=1)


def simulate(
    dataset: str,
    landing_uri: str,
    start: str,
    end: str,
    *,
    volume: int | None = None,
    cities: list[str] | None = None,
    users: int | None = None,
    items: int | None = None,
    skip_landed: bool = False,
    progress: Callable[[str, dict], None] | None = None,
) -> list[dict]:
    """Write every day from ``start`` to ``end`` (inclusive) of ``dataset`` into the landing zone.

    ``volume`` is rows per day; ``users`` and ``items`` size the interactions world (``None``: the defaults).
    """
    from mltrain_assets.landing import day_status

    if dataset != "interactions" and (users is not None or items is not None):
        raise ValueError(f"users/items size the interactions world; dataset {dataset!r} has neither")
    for name, value in (("users", users), ("items", items)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a positive number, got {value}")
    if dataset == "rides":
        from mltrain_assets.simulate.rides import write_rides_day as write_day

        kwargs = {"rides_per_day": volume} if volume else {}
        if cities:
            kwargs["cities"] = cities
    elif dataset == "interactions":
        from mltrain_assets.simulate.interactions import write_interactions_day as write_day

        sizes = {"events_per_day": volume or None, "n_users": users, "n_items": items}
        kwargs = {name: value for name, value in sizes.items() if value is not None}
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected 'rides' or 'interactions'")
    summaries = []
    for date in date_range(start, end):
        if skip_landed and day_status(landing_uri, dataset, date)["success"]:
            summary = {"date": date, "skipped": "already landed"}
        else:
            summary = {"date": date, **write_day(landing_uri, date, **kwargs)}
        summaries.append(summary)
        if progress:
            progress(date, summary)
    return summaries
