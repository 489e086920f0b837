"""A small simulated recommendations world shared by the recsys workload tests, built once per session.

Eight committed ``user_interactions`` days (seven to learn from, the eighth held out), the
embeddings fitted by the real ``interaction_embeddings`` CLI, and one model trained by the
real ``train_recommender`` CLI (torchrun, 2 workers). Everything lives under one session temp
folder with its own MLflow store.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from mltrain_assets.artifacts import ArtifactWriter, normalize_uri, read_manifest
from mltrain_assets.schemas import INTERACTIONS_SCHEMA
from mltrain_assets.simulate.interactions import simulate_day

DATE = "2026-03-08"  # the held-out day D
N_USERS, N_ITEMS, EVENTS_PER_DAY, SEED = 3_000, 300, 40_000, 0
TRAIN_EPOCHS = 6
TRAIN_ARGS = ["--epochs", str(TRAIN_EPOCHS), "--batch-size", "1024", "--seed", "0", "--nproc", "2"]
REPO = Path(__file__).resolve().parents[2]


@dataclass
class RecsysWorld:
    root: Path
    train_dates: list[str]
    train_uris: list[str]
    eval_uri: str
    env: dict[str, str]
    embeddings_uri: str = ""
    cache: dict[str, Any] = field(default_factory=dict)

    def uri(self, *parts: str) -> str:
        return normalize_uri(str(self.root.joinpath(*parts)))

    def train_command(self, out_uri: str, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "mltrain_assets.workloads.train_recommender",
            "--interactions-uris", json.dumps(self.train_uris), "--eval-uri", self.eval_uri,
            "--embeddings-uri", self.embeddings_uri, "--date", DATE, "--out-uri", out_uri, *TRAIN_ARGS, *extra,
        ]  # fmt: skip


_WORLD: RecsysWorld | None = None


def commit_day(root: Path, date: str) -> str:
    """A committed ``user_interactions`` version of one simulated day: deduplicated, sorted like ingestion."""
    table, _ = simulate_day(date, EVENTS_PER_DAY, N_USERS, N_ITEMS, SEED)
    frame = table.to_pandas().drop_duplicates("event_id").sort_values(["event_at", "event_id"], kind="stable")
    uri = normalize_uri(str(root / "user_interactions" / date / "v=test"))
    if read_manifest(uri) is None:
        writer = ArtifactWriter(uri, producer="tests", code_version="test")
        writer.write_table(
            "events.parquet", pa.Table.from_pandas(frame, schema=INTERACTIONS_SCHEMA, preserve_index=False)
        )
        writer.commit(summary={"rows": len(frame)})
    return uri


def workload_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES_")}
    env.update(
        {
            "SPARK_LOCAL_IP": "127.0.0.1",
            "MLTRAIN_SPARK_MASTER": "local[2]",
            "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
            "MLTRAIN_MLFLOW_ARTIFACTS_URI": f"file://{root}/mlartifacts",
            "PYTHONPATH": str(REPO),
        }
    )
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


def recsys_world(tmp_path_factory) -> RecsysWorld:
    """The shared world: eight committed days and the CLI-fitted embeddings for ``DATE``."""
    global _WORLD
    if _WORLD is None:
        root = tmp_path_factory.mktemp("recsys_world")
        day = dt.date.fromisoformat(DATE)
        dates = [(day - dt.timedelta(days=k)).isoformat() for k in range(7, 0, -1)]
        world = RecsysWorld(
            root, dates, [commit_day(root, d) for d in dates], commit_day(root, DATE), workload_env(root)
        )
        world.embeddings_uri = world.uri("interaction_embeddings", DATE, "v=test")
        run_module(
            [sys.executable, "-m", "mltrain_assets.workloads.interaction_embeddings",
             "--interactions-uris", json.dumps(world.train_uris), "--date", DATE, "--out-uri", world.embeddings_uri],
            world.env,
        )  # fmt: skip
        _WORLD = world
    return _WORLD


def trained_model(world: RecsysWorld) -> dict[str, Any]:
    """The committed manifest of one uninterrupted training run (good labels) on the shared world."""
    if "trained" not in world.cache:
        out_uri = world.uri("recommender_model", DATE, "v=uninterrupted")
        run_module(world.train_command(out_uri), world.env)
        world.cache["trained"] = read_manifest(out_uri)
    return world.cache["trained"]
