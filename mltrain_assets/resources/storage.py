"""Where versioned artifacts live, and the IO manager that persists only their references."""

from __future__ import annotations

from typing import Any

from dagster import (
    ConfigurableIOManagerFactory,
    ConfigurableResource,
    Failure,
    InputContext,
    OutputContext,
    UPathIOManager,
)
from upath import UPath

from mltrain_assets.artifacts import ArtifactRef, join_uri, read_manifest, storage_options_for, version_uri
from mltrain_assets.partitions import partition_path


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

    A single-run backfill over a range of partitions returns ``{partition_key: ref}``;
    each ref is written to its own partition's path.
    """

    extension = ".json"

    def dump_to_path(self, context: OutputContext, obj: ArtifactRef, path: UPath) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(obj.to_json())

    def load_from_path(self, context: InputContext, path: UPath) -> ArtifactRef:
        try:
            return ArtifactRef.from_json(path.read_text())
        except FileNotFoundError:
            # Waiting or retrying cannot make an unmaterialized input appear: fail once, clearly.
            partition = context.asset_partition_key if context.has_asset_partitions else ""
            raise Failure(
                description=f"input {context.asset_key.to_user_string()} {partition} is not materialized (no reference at {path})",
                allow_retries=False,
            ) from None

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if isinstance(obj, dict):
            paths = self._get_paths_for_partitions(context)
            for partition_key, ref in obj.items():
                self.dump_to_path(context, ref, paths[partition_key])
            context.add_output_metadata({"refs_written": len(obj)})
            return
        super().handle_output(context, obj)


class ArtifactRefIOManagerFactory(ConfigurableIOManagerFactory):
    """Configures the reference IO manager from the same storage base URI as the artifacts."""

    base_uri: str

    def create_io_manager(self, context) -> ArtifactRefIOManager:
        uri = join_uri(self.base_uri, "_refs")
        return ArtifactRefIOManager(base_path=UPath(uri, **storage_options_for(uri)))
