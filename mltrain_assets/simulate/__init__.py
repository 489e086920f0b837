"""Synthetic landing data: deterministic per date, with learnable signal.

Which simulator writes a dataset, and the options it takes, come from the pipelines' specs
(``registry.PipelineSpec.landing_datasets``); this module only drives them over a date range.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from typing import Any


def date_range(start: str, end: str) -> Iterator[str]:
    day, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    if last < day:
        raise ValueError(f"--end {end} is before --start {start}")
    while day <= last:
        yield day.isoformat()
        day += dt.timedelta(days=1)


def option_name(flag: str) -> str:
    """``--cities`` -> ``cities``: how an option is named in Python and on the parsed CLI arguments."""
    return flag.lstrip("-").replace("-", "_")


def simulator_kwargs(dataset: str, volume: int | None, options: dict[str, Any]) -> dict[str, Any]:
    """The simulator's keyword arguments for these options (``None`` values: its defaults); refuses an option it lacks."""
    from mltrain_assets.registry import simulator

    sim = simulator(dataset)
    by_name = {option_name(option.flag): option for option in sim.options}
    given = {name: value for name, value in options.items() if value is not None}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        raise ValueError(
            f"option(s) {unknown} do not apply to dataset {dataset!r}; its options: {sorted(by_name) or 'none'}"
        )
    kwargs = {sim.volume_kwarg: volume} if volume else {}
    for name, value in given.items():
        option = by_name[name]
        try:
            if isinstance(value, str):
                value = option.parse(value)
            elif isinstance(value, int) and not isinstance(value, bool):
                option.parse(str(value))  # the CLI's rule holds for a value given in Python too
        except ValueError as refused:
            raise ValueError(f"{name} {refused}") from None
        kwargs[option.kwarg] = value
    return kwargs


def simulate_landings(
    pipeline: Any, start: str, end: str, landing_uri: str, volumes: Mapping[str, int | None], say: Callable[[str], None]
) -> None:
    """Every landing dataset of ``pipeline`` (``core.pipeline.Pipeline``) over the days ``start..end`` need (each
    dataset's own window), its configured keys only; days already landed are kept. ``volumes``: by dataset."""
    for landing in pipeline.landings:
        first = landing.window.first(start)
        say(f"simulating {landing.dataset} {first}..{end} into {landing_uri} (days already landed are kept)")
        option = landing.simulator.keys_option
        keys = {option: pipeline.keys()} if option and pipeline.keys else {}
        simulate(
            landing.dataset, landing_uri, first, end, volume=volumes.get(landing.dataset), skip_landed=True, **keys
        )


def simulate(
    dataset: str,
    landing_uri: str,
    start: str,
    end: str | None = None,
    *,
    skip_landed: bool = False,
    volume: int | None = None,
    progress: Callable[[str, dict], None] | None = None,
    **options: Any,
) -> list[dict]:
    """Write every day from ``start`` to ``end`` (inclusive; default: ``start`` alone) of ``dataset`` into the landing zone.

    ``volume`` is rows per day; ``options`` are the dataset's simulator options by name (e.g.
    ``cities=["nyc"]`` for rides, ``users=300`` for interactions; ``None``: the simulator's default).
    """
    from mltrain_assets.landing import day_status
    from mltrain_assets.registry import simulator

    kwargs = simulator_kwargs(dataset, volume, options)
    write_day = simulator(dataset).load()
    summaries = []
    for date in date_range(start, end or start):
        if skip_landed and day_status(landing_uri, dataset, date)["success"]:
            summary = {"date": date, "skipped": "already landed"}
        else:
            summary = {"date": date, **write_day(landing_uri, date, **kwargs)}
        summaries.append(summary)
        if progress:
            progress(date, summary)
    return summaries
