"""``mltrain materialize``: an asset selection for one partition (or a range, one run), launched like a UI launch.

The run is created with the code location's origin and executed in this process (``cli/demo.py``'s ``execute``).
"""

from __future__ import annotations

import os

from dagster import (
    AssetKey,
    AssetSelection,
    BackfillPolicy,
    DagsterInvalidSubsetError,
    DagsterUnknownPartitionError,
    partition_loading_context,
)

from mltrain_assets.cli.demo import RunOutcome, ensure_instance, execute, init_pools
from mltrain_assets.core.partitions import PARTITIONS_START_DATE


def materialize(
    assets: list[str],
    *,
    partition: str | None = None,
    partition_range: tuple[str, str] | None = None,
    run_config: dict | None = None,  # the assets' launch config (`--config`), checked by cli/run_config.py
) -> RunOutcome:
    """Materialize an asset selection for one partition (or a range, one run) with the code location's origin.

    What ``mltrain materialize`` runs: like ``dagster asset materialize`` (Dagster's own API, the
    same implicit asset job, executed in this process), but needing no ``-m`` in the project
    folder and recording the run under the ``mltrain_assets`` location, so the UI can re-execute it.
    """
    from mltrain_assets.definitions import defs

    repository = defs.get_repository_def()
    try:
        keys = AssetSelection.from_coercible(assets).resolve(repository.asset_graph)
    except DagsterInvalidSubsetError:
        known = sorted(key.to_user_string() for key in repository.asset_graph.get_all_asset_keys())
        raise ValueError(f"unknown asset in {', '.join(assets)}; the assets are: {', '.join(known)}") from None
    job = repository.get_implicit_job_def_for_assets(keys)
    if job is None:
        raise ValueError(f"{', '.join(assets)}: the selected assets do not share one partitions definition")
    names = sorted(key.to_user_string() for key in keys)
    partitioned = [name for name in names if repository.asset_graph.get(AssetKey.from_user_string(name)).partitions_def]
    if partitioned and not (partition or partition_range):
        raise ValueError(f"{', '.join(partitioned)} are partitioned: give --partition or --partition-range")
    if not partitioned and (partition or partition_range):
        raise ValueError(f"{', '.join(names)} have no partitions: drop --partition/--partition-range")
    if partition_range:
        not_single_run = [
            name
            for name in names
            if repository.asset_graph.get(AssetKey.from_user_string(name)).backfill_policy
            != BackfillPolicy.single_run()
        ]
        if not_single_run:
            raise ValueError(
                f"{', '.join(not_single_run)} cannot run a partition range in one run (no single-run backfill "
                "policy): use `mltrain backfill` or one --partition at a time"
            )
    instance = ensure_instance()
    init_pools(instance)
    with partition_loading_context(dynamic_partitions_store=instance) as context:
        for key in [partition] if partition else list(partition_range or ()):
            try:
                job.validate_partition_key(key, selected_asset_keys=keys, context=context)
            except DagsterUnknownPartitionError:
                partitions_def = repository.asset_graph.get(AssetKey.from_user_string(partitioned[0])).partitions_def
                assert partitions_def is not None  # one of the partitioned assets
                raise ValueError(
                    f"{key} is not a partition of {', '.join(names)} (the latest is "
                    f"{partitions_def.get_last_partition_key()}; days run from {PARTITIONS_START_DATE} "
                    f"($MLTRAIN_PARTITIONS_START) to yesterday, UTC)"
                ) from None
    label = f"{','.join(names)} {partition or '...'.join(partition_range or ())}".strip()
    return execute(
        job.name,
        label,
        partition_key=partition,
        partition_range=partition_range,
        assets=names,
        launched_by="mltrain materialize",
        run_config=run_config,
    )


def print_outcome(outcome: RunOutcome) -> None:
    """What ``mltrain materialize`` prints: the run, each asset's figures, each check's verdict."""
    ui = os.environ.get("MLTRAIN_DAGSTER_UI_URL", "http://127.0.0.1:3000").rstrip("/")
    status = "ok" if outcome.success else "FAILED"
    print(f"{outcome.label}: {status} in {outcome.seconds:.1f}s; run {outcome.run_id} ({ui}/runs/{outcome.run_id})")
    for asset, metadata in outcome.materializations.items():
        shown = {k: metadata[k] for k in ("partition", "rows", "version", "reused_committed_version") if k in metadata}
        print(f"  {asset}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    for name, passed in outcome.checks.items():
        print(f"  check {name}: {'passed' if passed else 'FAILED'}: {outcome.check_descriptions.get(name, '')}")
    if outcome.error:
        print(f"  error: {outcome.error}")
