"""Where versioned artifacts live, and the IO manager that persists only their references.

The IO manager is also where gates are enforced for every consumer: it refuses to load a
reference whose producing step recorded failed gates, a trailing window with missing
partitions, and a reference built from an input version that is no longer the input's current
one (a re-landed day whose aggregates were not rebuilt yet), so no asset body has to remember
any of these checks.
"""

from __future__ import annotations

from typing import Any

from dagster import (
    ConfigurableIOManagerFactory,
    ConfigurableResource,
    Failure,
    InputContext,
    MultiPartitionKey,
    OutputContext,
    UPathIOManager,
)
from upath import UPath

from mltrain_assets.artifacts import (
    ArtifactRef,
    join_uri,
    quarantine_reason,
    read_manifest,
    storage_options_for,
    version_uri,
)

GATE_FAILURES = "gate_failures"
# The input references a version was built from (asset, partition, version): checked on every load.
BUILT_FROM = "built_from"

# Input metadata marking a trailing window: the IO manager loads it as {date: ref} and requires all of it.
WINDOW_INPUT = "mltrain/window"


def partition_path(partition_key: str | MultiPartitionKey) -> str:
    """The storage path segment for a partition: ``2026-11-27``, or ``nyc/2026-11-27`` for date x city.

    Dimensions are ordered by name, the layout Dagster's ``UPathIOManager`` uses for the refs too.
    """
    if isinstance(partition_key, MultiPartitionKey):
        return "/".join(key for _, key in sorted(partition_key.keys_by_dimension.items()))
    return str(partition_key)


class ArtifactStorage(ConfigurableResource):
    """The durable store for every asset's versioned outputs (``file://`` or ``s3://``)."""

    base_uri: str
    landing_uri: str

    def version_uri(self, asset_key: str, partition_key: Any, version: str) -> str:
        return version_uri(self.base_uri, asset_key, partition_path(partition_key), version)

    def committed_manifest(self, uri: str) -> dict | None:
        return read_manifest(uri)


class ArtifactRefIOManager(UPathIOManager):
    """Persists ``ArtifactRef`` JSON (never the data) under ``{base}/_refs/{asset}/{partition}.json``.

    A reference stores its version's location relative to the storage root, so a copied or moved
    store (another ``MLTRAIN_HOME``, a bucket migrated to another name) keeps resolving.

    A single-run backfill over a range of partitions returns ``{partition_key: ref}``;
    each ref is written to its own partition's path.
    """

    extension = ".json"

    def __init__(self, base_path: UPath, storage_root: str):
        super().__init__(base_path=base_path)
        self.storage_root = storage_root

    def dump_to_path(self, context: OutputContext, obj: ArtifactRef, path: UPath) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(obj.relative_to(self.storage_root).to_json())

    def load_from_path(self, context: InputContext | None, path: UPath) -> ArtifactRef:  # None: _current_ref
        return ArtifactRef.from_json(path.read_text()).resolved(self.storage_root)

    def load_input(self, context: InputContext) -> ArtifactRef | dict[str, ArtifactRef]:
        upstream = context.asset_key.to_user_string()
        consumer = (
            f"{context.op_def.name} {context.partition_key}" if context.has_partition_key else context.op_def.name
        )
        try:
            loaded = super().load_input(context)
        except FileNotFoundError as missing:
            # Waiting or retrying cannot make an unmaterialized input appear: fail once, clearly.
            partition = (
                context.asset_partition_key
                if context.has_asset_partitions and len(context.asset_partition_keys) == 1
                else ""
            )
            raise Failure(
                description=f"{consumer}: input {upstream} {partition} is not materialized ({missing})",
                allow_retries=False,
            ) from None
        is_window = bool((context.definition_metadata or {}).get(WINDOW_INPUT))
        if not is_window:
            refs = [loaded] if isinstance(loaded, ArtifactRef) else list(loaded.values())
            _refuse_failed_gates(consumer, refs)
            self._refuse_stale(consumer, refs)
            _refuse_uncommitted(consumer, refs)
            return loaded
        expected = [str(k) for k in context.asset_partition_keys]
        by_key = loaded if isinstance(loaded, dict) else {expected[0]: loaded}
        absent = [k for k in expected if k not in by_key]
        if absent:
            raise Failure(
                description=(
                    f"{consumer} needs {upstream} for {expected[0]}..{expected[-1]}; {len(absent)} partition(s) "
                    f"are not materialized: {absent[:10]}{' ...' if len(absent) > 10 else ''}"
                ),
                allow_retries=False,
            )
        window = {k: by_key[k] for k in expected}
        _refuse_failed_gates(consumer, list(window.values()))
        self._refuse_stale(consumer, list(window.values()))
        _refuse_uncommitted(consumer, list(window.values()))
        return window

    def _current_ref(self, asset_key: str, partition_key: str) -> ArtifactRef | None:
        path = self._base_path / asset_key / f"{partition_key.replace('|', '/')}{self.extension}"
        return self.load_from_path(None, path) if path.exists() else None

    def _refuse_stale(self, consumer: str, refs: list[ArtifactRef]) -> None:
        """A version built from an input version that is no longer current is not built on: rebuild it first."""
        problems = []
        for ref in refs:
            for source in ref.metadata.get(BUILT_FROM, []):
                current = self._current_ref(source["asset"], source["partition"])
                if current is None or current.version == source["version"]:
                    continue
                gated = current.metadata.get(GATE_FAILURES) or []
                problems.append(
                    f"{ref.asset_key} {ref.partition_key} was built from {source['asset']} {source['partition']} "
                    f"v={source['version']}, which is now v={current.version}"
                    + (f" and failed its gates ({'; '.join(gated)})" if gated else "")
                    + f": materialize {ref.asset_key} {ref.partition_key} again first"
                )
        if problems:
            raise Failure(
                description=f"{consumer} is blocked by out-of-date inputs: " + "; ".join(problems[:5]),
                allow_retries=False,
            )

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if isinstance(obj, dict):
            paths = self._get_paths_for_partitions(context)
            for partition_key, ref in obj.items():
                self.dump_to_path(context, ref, paths[partition_key])
            context.add_output_metadata({"refs_written": len(obj)})
            return
        super().handle_output(context, obj)


def _refuse_failed_gates(consumer: str, refs: list[ArtifactRef]) -> None:
    """A reference whose gates failed is never built on, whichever run produced it."""
    failures = [f for ref in refs for f in ref.metadata.get(GATE_FAILURES, [])]
    if failures:
        raise Failure(
            description=f"{consumer} is blocked by failed upstream gates: " + "; ".join(failures),
            allow_retries=False,
        )


def _refuse_uncommitted(consumer: str, refs: list[ArtifactRef]) -> None:
    """A reference to a version that is no longer committed (quarantined after failing verification) is refused."""
    gone = []
    for ref in refs:
        if ref.uri.startswith(("file://", "s3://")) and read_manifest(ref.uri) is None:
            reason = quarantine_reason(ref.uri)
            gone.append(
                f"{ref.asset_key} {ref.partition_key} v={ref.version} is not committed any more"
                + (f" (quarantined: {reason})" if reason else "")
                + f": materialize {ref.asset_key} {ref.partition_key} again to rebuild it"
            )
    if gone:
        raise Failure(description=f"{consumer} cannot read its inputs: " + "; ".join(gone[:5]), allow_retries=False)


class ArtifactRefIOManagerFactory(ConfigurableIOManagerFactory):
    """Configures the reference IO manager from the same storage base URI as the artifacts."""

    base_uri: str

    def create_io_manager(self, context) -> ArtifactRefIOManager:
        uri = join_uri(self.base_uri, "_refs")
        return ArtifactRefIOManager(base_path=UPath(uri, **storage_options_for(uri)), storage_root=self.base_uri)
