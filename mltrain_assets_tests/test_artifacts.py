"""The storage contract: versioned paths, manifest-last commits by one writer at a time, no partial or\ncorrupt reads (verified against the manifest, quarantined), file:// and s3://."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet
import pytest

from mltrain_assets import artifacts
from mltrain_assets.artifacts import (
    CLAIM_NAME,
    CLAIM_STALE_S,
    MANIFEST_NAME,
    AlreadyCommitted,
    ArtifactCorrupt,
    ArtifactNotCommitted,
    ArtifactRef,
    ArtifactWriter,
    StorageUnavailable,
    compute_version,
    filesystem,
    quarantine_reason,
    read_manifest,
    read_table,
    verified_file_uri,
    version_uri,
    writing_for,
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


def _crash_while_writing(uri: str) -> None:
    """Another process opens a writer, writes a file and dies before committing (kill -9: no cleanup)."""
    code = (
        "import os, pyarrow as pa; from mltrain_assets.artifacts import ArtifactWriter; "
        f"w = ArtifactWriter({uri!r}, producer='t', code_version='1'); "
        "w.write_table('stale.parquet', pa.table({'id': [1, 2, 3]})); os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 9


def test_partial_attempt_is_cleared_and_committed_versions_are_immutable(tmp_path):
    uri = f"file://{tmp_path}/asset/p/v=1"
    _crash_while_writing(uri)
    fs, path = filesystem(uri)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)) == [CLAIM_NAME, "stale.parquet"]
    # Its claim names a process that is gone: the retry takes over at once and clears the attempt.
    retry = ArtifactWriter(uri, producer="t", code_version="1")
    retry.write_table("data.parquet", _table())
    retry.commit()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    assert names == [MANIFEST_NAME, "data.parquet"]
    with pytest.raises(AlreadyCommitted) as again:
        ArtifactWriter(uri, producer="t", code_version="1")
    assert again.value.manifest["files"]["data.parquet"]["rows"] == 100


def test_a_second_writer_waits_for_the_first_and_adopts_its_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts.claims, "CLAIM_POLL_S", 0.05)
    uri = f"file://{tmp_path}/asset/p/v=1"
    first = ArtifactWriter(uri, producer="first", code_version="1")
    adopted = {}

    def second() -> None:
        try:
            ArtifactWriter(uri, producer="second", code_version="1")
        except AlreadyCommitted as exc:
            adopted["manifest"] = exc.manifest

    racer = threading.Thread(target=second)
    racer.start()
    time.sleep(0.3)
    assert racer.is_alive(), "the second writer waits while the first holds the version"
    first.write_table("data.parquet", _table())
    first.commit()
    racer.join(timeout=10)
    assert adopted["manifest"]["producer"] == "first"
    assert read_manifest(uri)["producer"] == "first"


def test_a_claim_that_stopped_beating_elsewhere_is_broken(tmp_path):
    uri = f"file://{tmp_path}/asset/p/v=1"
    fs, path = filesystem(uri)
    fs.makedirs(path, exist_ok=True)
    old = {"id": "x", "host": "another-pod", "pid": 1, "heartbeat": time.time() - CLAIM_STALE_S - 1}
    fs.pipe_file(f"{path}/{CLAIM_NAME}", json.dumps(old).encode())
    writer = ArtifactWriter(uri, producer="t", code_version="1")
    writer.write_table("data.parquet", _table())
    assert writer.commit()["producer"] == "t" and not fs.exists(f"{path}/{CLAIM_NAME}")


def test_the_manifest_is_written_once_even_if_two_writers_get_to_commit(tmp_path):
    uri = f"file://{tmp_path}/asset/p/v=1"
    winner = ArtifactWriter(uri, producer="winner", code_version="1")
    winner.write_table("data.parquet", _table())
    # A writer that lost its claim (it stopped beating, another broke it) still cannot overwrite a commit.
    late = ArtifactWriter.__new__(ArtifactWriter)
    late.__dict__.update(winner.__dict__, producer="late", files={})
    winner.commit()
    with pytest.raises(AlreadyCommitted) as lost:
        late.commit()
    assert lost.value.manifest["producer"] == "winner" and read_manifest(uri)["producer"] == "winner"


def _committed(tmp_path, name: str = "data.parquet") -> str:
    uri = f"file://{tmp_path}/asset/2026-01-01/v=1"
    writer = ArtifactWriter(uri, producer="t", code_version="1")
    writer.write_table(name, _table())
    writer.commit()
    return uri


def _corrupt(uri: str, name: str, data: bytes) -> None:
    fs, path = filesystem(uri)
    fs.pipe_file(f"{path}/{name}", data)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda data: data[: len(data) // 2], r"has [\d,]+ bytes, its manifest recorded [\d,]+"),
        (
            lambda data: data[:100] + bytes([data[100] ^ 0xFF]) + data[101:],
            r"has SHA-256 \w+…, its manifest recorded \w+…",
        ),
    ],
    ids=["truncated", "one_byte_changed"],
)
def test_a_file_that_changed_after_its_commit_is_refused_and_its_version_quarantined(tmp_path, damage, problem):
    uri = _committed(tmp_path)
    fs, path = filesystem(uri)
    _corrupt(uri, "data.parquet", damage(fs.cat_file(f"{path}/data.parquet")))
    with pytest.raises(ArtifactCorrupt, match=rf"{uri}: data.parquet {problem}; the version was quarantined to "):
        read_table(uri, "data.parquet")
    # The version is no longer committed (readers and the planner see it missing: it is rebuilt), and kept aside.
    assert read_manifest(uri) is None
    assert "data.parquet" in quarantine_reason(uri)
    with pytest.raises(ArtifactNotCommitted, match="it was quarantined"):
        read_table(uri, "data.parquet")
    rebuilt = ArtifactWriter(uri, producer="t", code_version="1")
    rebuilt.write_table("data.parquet", _table())
    rebuilt.commit()
    assert read_table(uri, "data.parquet").num_rows == 100


def test_a_valid_parquet_with_other_values_is_caught_before_an_engine_reads_it(tmp_path):
    uri = _committed(tmp_path)
    other = pa.table({"id": list(range(100)), "value": [i * 0.25 for i in range(100)]})
    sink = pa.BufferOutputStream()
    pa.parquet.write_table(other, sink, compression="zstd")
    _corrupt(uri, "data.parquet", sink.getvalue().to_pybytes())
    with pytest.raises(ArtifactCorrupt, match=r"data\.parquet has"):
        verified_file_uri(uri, "data.parquet")
    assert read_manifest(uri) is None


def test_a_missing_file_is_named(tmp_path):
    uri = _committed(tmp_path)
    fs, path = filesystem(uri)
    fs.rm(f"{path}/data.parquet")
    with pytest.raises(ArtifactCorrupt, match=f"{uri}: data.parquet is missing"):
        read_table(uri, "data.parquet")


def test_a_manifest_records_the_workload_that_built_it(tmp_path):
    with writing_for("mltrain_assets.pipelines.demand.workloads.features", {"date": "2026-01-01", "out_uri": "x"}):
        uri = _committed(tmp_path)
    assert read_manifest(uri)["workload"] == {
        "module": "mltrain_assets.pipelines.demand.workloads.features",
        "params": {"date": "2026-01-01", "out_uri": "x"},
    }


def test_ref_round_trips_as_json():
    ref = ArtifactRef("ride_events", "2026-01-01", "abc", "file:///x/v=abc", {"rows": 3})
    assert ArtifactRef.from_json(ref.to_json()) == ref
    assert json.loads(ref.to_json())["uri"] == "file:///x/v=abc"


def test_an_unreachable_object_store_fails_within_its_retries_naming_the_endpoint(monkeypatch):
    from mltrain_assets.loopback import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"  # nobody listens
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(StorageUnavailable) as down:
        read_manifest("s3://mltrain/asset/2026-01-01/v=1")
    assert str(down.value).startswith(
        f"object store {endpoint} unreachable after 3 attempts (reading the manifest of s3://mltrain/asset/2026-01-01/v=1)"
    )
