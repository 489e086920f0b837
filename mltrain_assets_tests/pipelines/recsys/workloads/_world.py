"""A small simulated recommendations world shared by the recsys workload tests.

Eight committed ``user_interactions`` days (seven to learn from, the eighth held out), the
embeddings fitted by the real embeddings workload, and one model trained by the real training
launcher (torchrun, 2 workers). Everything lives under one session temp folder with its own
MLflow store. Every setting reaches the workloads through their params, never the environment:
the workload processes run with MLflow's and Spark's variables removed.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from mltrain_assets.artifacts import ArtifactWriter, normalize_uri, read_manifest
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.contract import INTERACTIONS_SCHEMA
from mltrain_assets.pipelines.recsys.params import EmbeddingsParams, TrainParams
from mltrain_assets.pipelines.recsys.simulate import simulate_day
from mltrain_assets.workloads.common.params import MlflowSettings, WorkloadParams
from mltrain_assets.workloads.common.spark import SparkSettings
from mltrain_assets.workloads.ingest.params import EVENTS_FILE

DATE = "2026-03-08"  # the held-out day D
N_USERS, N_ITEMS, EVENTS_PER_DAY, SEED = 3_000, 300, 40_000, 0
TRAIN_EPOCHS = 6
TRAIN_NPROC = 2
REPO = Path(__file__).resolve().parents[3]
# Settings a workload must not read from its environment: they travel in its params.
ENV_SETTINGS = ("MLFLOW_TRACKING_URI", "MLTRAIN_MLFLOW_ARTIFACTS_URI", "MLTRAIN_SPARK_MASTER", "MLTRAIN_SPARK_S3A")


@dataclass
class RecsysWorld:
    root: Path
    train_dates: list[str]
    train_uris: list[str]
    eval_uri: str
    env: dict[str, str]
    mlflow: MlflowSettings
    spark: SparkSettings
    embeddings_uri: str = ""
    cache: dict[str, Any] = field(default_factory=dict)

    def uri(self, *parts: str) -> str:
        return normalize_uri(str(self.root.joinpath(*parts)))

    def train_params(self, out_uri: str, **overrides: Any) -> TrainParams:
        params = TrainParams(
            date=DATE,
            epochs=TRAIN_EPOCHS,
            batch_size=1024,
            seed=0,
            nproc_per_node=TRAIN_NPROC,
            interactions_uris=tuple(self.train_uris),
            eval_uri=self.eval_uri,
            embeddings_uri=self.embeddings_uri,
            mlflow=self.mlflow,
            out_uri=out_uri,
        )
        return dataclasses.replace(params, **overrides)

    def run(self, params: WorkloadParams, timeout_s: float = 300) -> subprocess.CompletedProcess:
        """Run a workload the way the control plane does: ``python -m <module> --params JSON``."""
        return run_module(params.command(sys.executable), self.env, timeout_s)


def commit_day(root: Path, date: str) -> str:
    """A committed ``user_interactions`` version of one simulated day: deduplicated, sorted like ingestion."""
    table, _ = simulate_day(date, EVENTS_PER_DAY, N_USERS, N_ITEMS, SEED)
    frame = table.to_pandas().drop_duplicates("event_id").sort_values(["event_at", "event_id"], kind="stable")
    uri = normalize_uri(str(root / "user_interactions" / date / "v=test"))
    if read_manifest(uri) is None:
        writer = ArtifactWriter(uri, producer="tests", code_version="test")
        writer.write_table(EVENTS_FILE, pa.Table.from_pandas(frame, schema=INTERACTIONS_SCHEMA, preserve_index=False))
        writer.commit(summary={"rows": len(frame)})
    return uri


def workload_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES_") and k not in ENV_SETTINGS}
    env.update({"SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": str(REPO)})
    return env


def run_module(command: list[str], env: dict[str, str], timeout_s: float = 300) -> subprocess.CompletedProcess:
    """Run a workload CLI in its own process group; on timeout the whole group (torchrun, workers) is killed."""
    process = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(
            f"{command[2]} timed out after {timeout_s}s:\n{stdout[-3000:]}\n{stderr[-6000:]}"
        ) from None
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if result.returncode != 0:
        raise AssertionError(
            f"{command[2]} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result


def build_world(root: Path) -> RecsysWorld:
    """The committed days of ``DATE``'s windows, and its embeddings fitted by the real workload.

    As the pipeline contract has it: embeddings over D-14..D-8, training over D-7..D-1, D held out.
    """
    dates = contract.MODEL_WINDOW.dates(DATE)[:-1]
    world = RecsysWorld(
        root,
        dates,
        [commit_day(root, d) for d in dates],
        commit_day(root, DATE),
        workload_env(),
        MlflowSettings(tracking_uri=f"sqlite:///{root}/mlflow.db", artifacts_uri=f"file://{root}/mlartifacts"),
        SparkSettings(master="local[2]"),
    )
    world.embeddings_uri = world.uri("interaction_embeddings", DATE, "v=test")
    world.run(
        EmbeddingsParams(
            date=DATE,
            interactions_uris=tuple(commit_day(root, d) for d in contract.EMBEDDINGS_WINDOW.dates(DATE)),
            spark=world.spark,
            out_uri=world.embeddings_uri,
        )
    )
    return world


# The Dagster launch the uninterrupted training pretends to run for: its MLflow run links back to it.
DAGSTER_LINKS = {
    "dagster_ui_url": "http://dagster.example:3000",
    "dagster_run_id": "5f0c6a8e-training-run",
    "dagster_asset_key": "recommender_model",
    "dagster_partition_key": DATE,
}


def train_uninterrupted(world: RecsysWorld) -> dict[str, Any]:
    """The committed manifest of one uninterrupted training run (good labels) on the world."""
    out_uri = world.uri("recommender_model", DATE, "v=uninterrupted")
    world.run(world.train_params(out_uri, mlflow=dataclasses.replace(world.mlflow, **DAGSTER_LINKS)))
    return read_manifest(out_uri)
