"""Hyperparameters as launch config: a workload asset's typed Dagster ``Config``, and what it shows of its code version.

A workload's ``hyperparameter()`` fields become the fields of its asset's config (types, defaults and
descriptions from the dataclass), so the UI launchpad shows and edits them and ``mltrain materialize
--config`` passes them. The run applies them to the step's params before planning its version: a tuned
value is a new version, no config is today's. Ranges (``ge``/``gt``/``le``/``lt``) are not part of the
schema Dagster checks before a run: the params check them (``check_hyperparameters``), here at the step's
start, before anything is launched, failing the step without retries; the CLI checks them before it
submits a run (``check_config``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

import pydantic
from dagster import Config, Failure

from mltrain_assets.workloads.common.params import WorkloadParams, bounds_text, hyperparameters, range_problem

CODE_VERSION_SOURCE = "code_version_source"  # the asset's metadata: `explicit override` or `derived (...)`
# Asset name -> the workload its launch config tunes: what `mltrain materialize --config` checks against.
_TUNED: dict[str, type[WorkloadParams]] = {}


def config_class(asset_name: str, workload: type[WorkloadParams]) -> type[Config] | None:
    """The asset's launch config (a Dagster ``Config``) from ``workload``'s hyperparameters; None without any."""
    fields = hyperparameters(workload)
    if not fields:
        return None
    hints = typing.get_type_hints(workload)
    model_fields: dict[str, Any] = {
        f.name: (hints[f.name], pydantic.Field(default=f.default, description=_describe(f))) for f in fields
    }
    model = pydantic.create_model(f"{asset_name}_config", __base__=Config, **model_fields)
    model.__doc__ = f"Hyperparameters of {asset_name} ({workload.__name__}): a tuned value plans a new version."
    _TUNED[asset_name] = workload
    return model


def tuned_workload(asset_name: str) -> type[WorkloadParams] | None:
    """The workload whose hyperparameters are ``asset_name``'s launch config (None: it takes none)."""
    return _TUNED.get(asset_name)


def _describe(field: dataclasses.Field) -> str:
    bounds = bounds_text(field)
    return f"{field.metadata['help']} (default {field.default!r}{f'; {bounds}' if bounds else ''})"


def tuned(asset_name: str, params: WorkloadParams, config: Config | None) -> WorkloadParams:
    """``params`` with the launch config's hyperparameters; a value out of range fails the step, no retry."""
    if config is None:
        return params
    try:
        return dataclasses.replace(params, **config.model_dump())
    except ValueError as exc:
        raise Failure(description=f"{asset_name}: launch config refused: {exc}", allow_retries=False) from None


def check_config(asset_name: str, workload: type[WorkloadParams], values: Mapping[str, Any]) -> None:
    """Refuse launch config ``values`` for ``asset_name`` before any run: unknown fields, wrong types, ranges.

    Raises ``ValueError`` naming the asset, the field and the value.
    """
    fields = {f.name: f for f in hyperparameters(workload)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none: it takes no launch config"
        raise ValueError(f"{asset_name}: unknown config field(s) {unknown}; its hyperparameters: {known}")
    model = config_class(asset_name, workload)
    try:
        checked = model(**values).model_dump() if model is not None else {}
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise ValueError(f"{asset_name}: config {field}={error.get('input')!r} refused: {error['msg']}") from None
    for name, value in checked.items():
        if problem := range_problem(fields[name], value):
            raise ValueError(f"{asset_name}: config {name}={value!r} {problem}")


def code_version_metadata(workload: type[WorkloadParams]) -> dict[str, str]:
    """What the catalog shows of the asset's code version: derived from the source (and what it hashed) or explicit."""
    return {CODE_VERSION_SOURCE: workload.code_version_source()}
