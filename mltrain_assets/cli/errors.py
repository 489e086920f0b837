"""A user's mistake at the command line: one line on stderr, exit code 2, nothing written.

Raise ``UsageError`` (or call a validator below) BEFORE any work starts; ``mltrain_assets.cli.main`` prints
``mltrain <command>: <message>`` and exits 2. Anything else that escapes a command is a bug and keeps its traceback.
"""

from __future__ import annotations

import datetime as dt
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mltrain_assets.registry import KeySetting

USAGE_EXIT_CODE = 2


class UsageError(Exception):
    """A value the user gave (a flag, an argument, a setting) that cannot work.

    The message is the one line the user reads, without the ``mltrain <command>:`` prefix (the entry point adds
    it): it names the bad value and what would be valid.
    """

    exit_code = USAGE_EXIT_CODE

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # one line, whatever the caller built

    @property
    def message(self) -> str:
        return str(self.args[0])


def one_of(valid: Iterable[str], limit: int = 12) -> str:
    """``a, b or c`` (the first ``limit`` of them, then how many more)."""
    names = [str(v) for v in valid]
    if not names:
        return "(none)"
    shown = names[:limit]
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return (", ".join(shown[:-1]) + " or " + shown[-1] if len(shown) > 1 else shown[0]) + more


def parse_date(value: str, flag: str = "--date") -> str:
    """``YYYY-MM-DD`` as given, or a ``UsageError`` naming the flag and the value."""
    try:
        return dt.date.fromisoformat(str(value).strip()).isoformat()
    except ValueError:
        raise UsageError(f"{flag} {value!r} is not a date: expected YYYY-MM-DD, e.g. 2026-11-27") from None


def check_date_order(start: str, end: str, start_flag: str = "--start", end_flag: str = "--end") -> None:
    if start > end:
        raise UsageError(
            f"{start_flag} {start} is after {end_flag} {end}: expected {start_flag} on or before {end_flag}"
        )


def partitions_start() -> str:
    """The first daily partition (``MLTRAIN_PARTITIONS_START``), read without importing Dagster."""
    from mltrain_assets.core.partitions import PARTITIONS_START_ENV, DEFAULT_PARTITIONS_START  # noqa: I001

    value = os.environ.get(PARTITIONS_START_ENV, "").strip() or DEFAULT_PARTITIONS_START
    return parse_date(value, PARTITIONS_START_ENV)


def latest_partition() -> str:
    """The last daily partition: yesterday, UTC (today is not a partition key yet)."""
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


def check_partition_date(date: str, flag: str = "--date", reads_from: str | None = None) -> str:
    """A date inside the daily partitions (``MLTRAIN_PARTITIONS_START`` to yesterday, UTC).

    ``reads_from``: the first day the work for ``date`` reads (a trailing window); it must be a partition too.
    """
    date = parse_date(date, flag)
    start, last = partitions_start(), latest_partition()
    reach = dt.date.fromisoformat(date) - dt.date.fromisoformat(reads_from or date)
    earliest = (dt.date.fromisoformat(start) + reach).isoformat()
    if date < earliest:
        reads = f" reads the days from {reads_from}, which is" if reads_from and reads_from < date else " is"
        raise UsageError(
            f"{flag} {date}{reads} before the first partition {start}: expected a date from {earliest} to {last}, "
            f"or set MLTRAIN_PARTITIONS_START={reads_from or date} (or earlier) for every process"
        )
    if date > last:
        raise UsageError(
            f"{flag} {date} is not a partition yet: expected a date from {earliest} to {last} "
            "(daily partitions end at yesterday, UTC)"
        )
    return date


def check_choice(value: str, valid: Sequence[str], what: str) -> str:
    """``value`` if it is one of ``valid``, else a ``UsageError`` naming it and the valid ones."""
    if value not in valid:
        raise UsageError(f"unknown {what} {value!r}: expected {one_of(valid)}")
    return value


def configured_keys(keys: KeySetting) -> list[str]:
    """The keys a deployment configures (e.g. ``MLTRAIN_CITIES``), or a ``UsageError`` naming the setting."""
    from mltrain_assets.registry import configured_keys as parse

    try:
        return parse(keys)
    except ValueError as refused:
        raise UsageError(str(refused)) from None


def check_keys_value(value: str | None, keys: KeySetting, flag: str) -> list[str] | None:
    """A comma-separated subset of the configured keys (``None`` stays ``None``: all of them)."""
    if value is None:
        return None
    chosen = [key.strip() for key in value.split(",") if key.strip()]
    configured = configured_keys(keys)
    if not chosen:
        raise UsageError(
            f"{flag} {value!r} names no {keys.what}: expected a comma-separated subset of {one_of(configured)}"
        )
    for key in chosen:
        check_choice(key, configured, f"{keys.what} ({flag})")
    return chosen


def check_positive(value: float | int | None, flag: str, minimum: float = 1) -> None:
    if value is not None and value < minimum:
        raise UsageError(f"{flag} {value} is too small: expected a number >= {minimum:g}")


def check_reachable(url: str, flag: str = "--url", timeout_s: float = 3.0) -> str:
    """A URL that answers HTTP (any status); a ``UsageError`` when nothing listens there."""
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"{flag} {url!r} is not an http(s) URL: expected e.g. http://127.0.0.1:3000")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        pass  # something answers: the request that follows says what it thinks
    except (urllib.error.URLError, OSError, ValueError) as failed:
        reason = getattr(failed, "reason", failed)
        raise UsageError(
            f"{flag} {url}: nothing answers there ({reason}): start the Dagster webserver (`mltrain dev`) "
            f"or pass the --url it serves on"
        ) from None
    return url.rstrip("/")


def check_settings() -> dict[str, str]:
    """The effective settings (defaults applied), or a ``UsageError`` naming each unusable one."""
    from mltrain_assets.settings import SettingsError, apply_defaults, validate_settings

    try:
        validate_settings()  # before the defaults: nothing is created for settings that cannot work
        env = apply_defaults()
        validate_settings()
    except SettingsError as refused:
        raise UsageError(str(refused)) from None
    return env
