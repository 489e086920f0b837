"""The storage contract: versioned paths, manifest-last commits, no partial reads, file:// and s3://."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from mltrain_assets.artifacts import (
    MANIFEST_NAME,
    ArtifactNotCommitted,
    ArtifactRef,
    ArtifactWriter,
    compute_version,
    filesystem,
    read_manifest,
    read_table,
    version_uri,
)


def _table(n: int = 100) -> pa.Table:
    return pa.table({"id": list(range(n)), "value": [i * 0.5 for i in range(n)]})


def test_version_is_stable_and_changes_with_code_or_inputs():
    base = compute_version("features-1", {"ride_events/2026-01-01": "abc"}, {"city": "nyc"})
    assert base == compute_version("features-1", {"ride_events/2026-01-01": "abc"}, {"city": "nyc"})
    assert len(base) == 12
    assert compute_version("features-2", {"ride_events/2026-01-01": "abc"}, {"city": "nyc"}) != base
    assert compute_version("features-1", {"ride_events/2026-01-01": "abd"}, {"city": "nyc"}) != base
    assert compute_version("features-1", {"ride_events/2026-01-01": "abc"}, {"city": "sf"}) != base


def test_version_uri_layout():
    assert version_uri("s3://bucket/prefix", "ride_events", "2026-01-01", "abc") == (
        "s3://bucket/prefix/ride_events/2026-01-01/v=abc"
    )


def _commit_and_read(uri: str) -> None:
    writer = ArtifactWriter(uri, producer="test", code_version="1", inputs={"x": "v1"})
    entry = writer.write_table("data.parquet", _table())
    assert read_manifest(uri) is None, "a version must not be visible before its manifest is written"
    with pytest.raises(ArtifactNotCommitted):
        read_table(uri, "data.parquet")
    manifest = writer.commit(summary={"metric": 1.5})
    assert manifest["files"]["data.parquet"]["rows"] == 100
    assert manifest["files"]["data.parquet"]["sha256"] == entry["sha256"]
    assert manifest["summary"] == {"metric": 1.5}
    assert manifest["inputs"] == {"x": "v1"}
    assert [f["name"] for f in manifest["files"]["data.parquet"]["schema"]] == ["id", "value"]
    assert read_table(uri, "data.parquet").equals(_table())
    assert read_manifest(uri)["rows"] == 100


def test_commit_is_manifest_last_on_file(tmp_path):
    _commit_and_read(f"file://{tmp_path}/store/asset/2026-01-01/v=abc")


@pytest.mark.slow  # starts moto's S3 server
def test_commit_on_s3_via_moto_server(s3_endpoint):
    uri = "s3://mltrain/contract/asset/2026-01-01/v=abc"
    _commit_and_read(uri)
    fs, path = filesystem(uri)
    assert fs.exists(f"{path}/{MANIFEST_NAME}")


def test_same_content_gives_same_hash(tmp_path):
    hashes = []
    for i in range(2):
        writer = ArtifactWriter(f"file://{tmp_path}/a/{i}", producer="t", code_version="1")
        hashes.append(writer.write_table("d.parquet", _table())["sha256"])
    assert hashes[0] == hashes[1]


def test_partial_attempt_is_cleared_and_committed_versions_are_immutable(tmp_path):
    uri = f"file://{tmp_path}/asset/p/v=1"
    crashed = ArtifactWriter(uri, producer="t", code_version="1")
    crashed.write_table("stale.parquet", _table(3))  # then "crashes" before commit
    retry = ArtifactWriter(uri, producer="t", code_version="1")
    retry.write_table("data.parquet", _table())
    retry.commit()
    fs, path = filesystem(uri)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    assert names == [MANIFEST_NAME, "data.parquet"]
    with pytest.raises(FileExistsError):
        ArtifactWriter(uri, producer="t", code_version="1")


def test_ref_round_trips_as_json():
    ref = ArtifactRef("ride_events", "2026-01-01", "abc", "file:///x/v=abc", {"rows": 3})
    assert ArtifactRef.from_json(ref.to_json()) == ref
    assert json.loads(ref.to_json())["uri"] == "file:///x/v=abc"
