"""Trailing windows of daily partitions, written once (dagster-free).

A ``Window`` is ``days`` consecutive dates ending ``end_offset`` days after the partition
date. Assets derive their partition mappings from it, workloads their expected inputs,
and the demo, backfill and CLI the landing days a date needs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt


def shift(date: str, days: int) -> str:
    return (dt.date.fromisoformat(date) + dt.timedelta(days=days)).isoformat()


def date_range(start: str, end: str) -> list[str]:
    """Every date from ``start`` to ``end``, both included."""
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [(first + dt.timedelta(days=k)).isoformat() for k in range((last - first).days + 1)]


@dataclasses.dataclass(frozen=True)
class Window:
    """``days`` dates ending at ``date + end_offset`` (``end_offset=-1``: the days before the date)."""

    days: int
    end_offset: int = 0

    @property
    def start_offset(self) -> int:
        return self.end_offset - self.days + 1

    def dates(self, date: str) -> list[str]:
        """The window's dates for partition ``date``, oldest first."""
        return date_range(shift(date, self.start_offset), shift(date, self.end_offset))

    def first(self, date: str) -> str:
        return shift(date, self.start_offset)
