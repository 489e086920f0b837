"""``mltrain materialize --config FILE``: the run's launch config, checked before anything is launched.

The file (YAML, or JSON: a subset of it) holds Dagster's run config for assets, as the UI launchpad shows it:
``{"ops": {"<asset>": {"config": {"<hyperparameter>": value}}}}``. Every asset it names must be selected
and take launch config (a workload with hyperparameters), every field must be one of its hyperparameters,
of its type and within its declared range: otherwise a ``UsageError`` (exit 2) says which, and no run is
created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mltrain_assets.cli.errors import UsageError


def load_run_config(path: str, assets: list[str]) -> dict[str, Any]:
    """The run config in ``path`` for the selected ``assets``, checked (``UsageError`` naming the problem)."""
    from mltrain_assets.core.launch_config import check_config, tuned_workload
    from mltrain_assets.definitions import defs  # noqa: F401  (declares every asset's launch config)

    where = f"--config {path}"
    data = _read(path, where)
    if not isinstance(data, dict) or set(data) != {"ops"} or not isinstance(data["ops"], dict):
        raise UsageError(f'{where}: expected {{"ops": {{"<asset>": {{"config": {{...}}}}}}}} (Dagster\'s run config)')
    for asset, entry in data["ops"].items():
        if asset not in assets:
            raise UsageError(f"{where}: ops.{asset} is not a selected asset (--asset {','.join(assets)})")
        if not isinstance(entry, dict) or set(entry) != {"config"} or not isinstance(entry["config"], dict):
            raise UsageError(f'{where}: ops.{asset} must be {{"config": {{"<hyperparameter>": value, ...}}}}')
        workload = tuned_workload(asset)
        if workload is None:
            raise UsageError(f"{where}: {asset} takes no launch config (its workload declares no hyperparameters)")
        try:
            check_config(asset, workload, entry["config"])
        except ValueError as refused:
            raise UsageError(f"{where}: {refused}") from None
    return data


def _read(path: str, where: str) -> Any:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{where}: no such file")
    try:
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where}: neither JSON nor YAML ({str(exc).splitlines()[0]})") from None
