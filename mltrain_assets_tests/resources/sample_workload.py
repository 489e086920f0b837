"""A tiny params-based workload for exercising the compute backend.

``mode``: ``ok`` reports a summary, ``echo`` reports the params it parsed, ``commit`` commits a
version at ``out_uri`` whose summary holds ``score`` (with a table of ``rows`` rows when > 0),
``reject`` rejects its data, ``service_down`` finds the object store down, ``crash`` fails, ``hang`` starts a child that ignores SIGINT and
SIGTERM (as a busy Spark JVM or torchrun worker may), writes the child's PID to ``pid_file`` and
sleeps. Every launch appends a line to ``launch_log`` when set.

Any mode first does the work ``burn_s``/``alloc_mb``/``orphan_burn_s`` ask for: hold ``alloc_mb`` MiB
resident while burning ``burn_s`` CPU seconds, and start a child that burns ``orphan_burn_s`` CPU
seconds and is never waited for (it outlives the workload, as a local Spark JVM outlives its driver).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import pyarrow as pa

from mltrain_assets.artifacts import ArtifactWriter, StorageUnavailable
from mltrain_assets.workloads.common.params import MlflowSettings, WorkloadParams, runtime, service
from mltrain_assets.workloads.common.runtime import DataRejected, Reporter, workload_main
from mltrain_assets.workloads.common.spark import SparkSettings

# Installs its handlers, then announces its PID (atomically: write, then rename), then sleeps.
_STUBBORN_CHILD = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
path = sys.argv[1]
with open(path + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(path + ".tmp", path)
time.sleep(120)
"""

# Burns CPU for argv[1] seconds of its own CPU time; nobody waits for it.
_ORPHAN_BURNER = """
import sys, time
started = time.process_time()
while time.process_time() - started < float(sys.argv[1]):
    pass
"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleParams(WorkloadParams):
    """A sample workload: succeeds, echoes its params, commits a version, rejects data, crashes or hangs."""

    module = "mltrain_assets_tests.resources.sample_workload"
    commits = False  # most modes only report; "commit" writes into out_uri when given

    mode: str = "ok"
    city: str = "nyc"
    score: float = 0.0
    rows: int = 0
    pid_file: str = runtime(default="")
    launch_log: str = runtime(default="")
    # Work to do (how much it costs, never what it outputs): see the module docstring.
    burn_s: float = runtime(default=0.0)
    alloc_mb: int = runtime(default=0)
    orphan_burn_s: float = runtime(default=0.0)
    engine: str = service("sql_engine", default="spark")
    spark: SparkSettings = service("spark", default_factory=SparkSettings)
    mlflow: MlflowSettings = service("mlflow", default_factory=MlflowSettings)


def burn(params: SampleParams) -> None:
    if params.orphan_burn_s:
        subprocess.Popen([sys.executable, "-c", _ORPHAN_BURNER, str(params.orphan_burn_s)])
    held = bytearray(params.alloc_mb * 1024 * 1024)  # zero-filled: every page is touched, so resident
    started = time.process_time()
    total = 0
    while time.process_time() - started < params.burn_s:
        total += sum(range(10_000))
    del held


def body(params: SampleParams, reporter: Reporter) -> dict:
    reporter.info(f"mode={params.mode}")
    burn(params)
    if params.launch_log:
        with open(params.launch_log, "a") as log:
            log.write(f"{params.mode} {params.city} {params.out_uri}\n")
    if params.mode == "reject":
        raise DataRejected("partition 2026-01-02: rule known_city: 3 rows (0.3%) have city='paris'")
    if params.mode == "service_down":
        raise StorageUnavailable("object store http://127.0.0.1:9 unreachable after 3 attempts (reading x): refused")
    if params.mode == "crash":
        raise RuntimeError("boom")
    if params.mode == "hang":
        subprocess.Popen([sys.executable, "-c", _STUBBORN_CHILD, params.pid_file])
        time.sleep(120)
    if params.mode == "commit":
        writer = ArtifactWriter(params.out_uri, producer=SampleParams.module, code_version="sample-1")
        writer.write_json("result.json", {"city": params.city, "score": params.score})
        if params.rows:
            writer.write_table("table.parquet", pa.table({"n": list(range(params.rows))}))
        return writer.commit(summary={"city": params.city, "score": params.score})["summary"]
    if params.mode == "echo":
        return {"params": params.to_dict()}
    return {"answer": 42, "mode": params.mode}


main = workload_main(SampleParams, body)

if __name__ == "__main__":
    sys.exit(main())
