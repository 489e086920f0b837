"""Orchestration overhead: importing the definitions, a UI launch to success, and per-step overhead.

Every run worker (and every step process of a multiprocess run) imports the definitions, so their
import time is paid per launch. With a fresh MLTRAIN_HOME this script

(a) times ``import mltrain_assets.definitions`` in fresh interpreters (median of 5) and names the
    packages that cost the most;
(b) lands and ingests rides for a date (``mltrain demo --pipeline demand`` for one city, or with
    ``--no-chain`` ``mltrain simulate`` + ``mltrain materialize`` of one day), so its version is
    committed, starts a real ``dagster-webserver`` + ``dagster-daemon run`` on the
    instance (sensors stopped unless ``--keep-sensors``: nothing else runs), and launches ``ride_events`` for that day again
    exactly as the UI's *Materialize* -> *Launch 1 run* does (GraphQL ``launchPipelineExecution``,
    the implicit asset job, the partition tag); the time from the request to RUN_SUCCESS is split
    with the run's event log;
(c) unless ``--no-chain``, also commits the 3-step ``demand_city_model_job`` for one city and
    launches it the same way: each step's wall time against the workload time it recorded.

One JSON line per figure (``{"bench": ...}``); progress goes to stderr.

    .venv/bin/python bench/control_plane_overhead.py [--launches 3] [--no-chain] [--keep-sensors] [--date 2026-11-27]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import requests

BIN = Path(sys.executable).parent
CITY = "nyc"
RIDES_PER_DAY = 20_000
IMPORT_SAMPLES = 5
RUN_TIMEOUT_S = 600
LOCATION = "mltrain_assets"
REPOSITORY = "__repository__"
CHAIN_JOB = "demand_city_model_job"
CHAIN_ASSETS = "city_demand_model,registered_demand_model,demand_forecasts"

TIME_IMPORT = "import time; t = time.perf_counter(); import mltrain_assets.definitions; print(time.perf_counter() - t)"

LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
  }
}
"""
ASSET_NODE = """
query AssetNode($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode { jobNames assetChecksOrError { ... on AssetChecks { checks { name } } } }
  }
}
"""
SENSORS = """
query Sensors($repo: RepositorySelector!) {
  sensorsOrError(repositorySelector: $repo) { ... on Sensors { results { name sensorState { id status } } } }
}
"""
STOP_SENSOR = "mutation Stop($id: String!) { stopSensor(id: $id) { __typename } }"
DAEMON = """
query Daemon { instance { daemonHealth { daemonStatus(daemonType: "QUEUED_RUN_COORDINATOR") { healthy } } } }
"""


def emit(figure: dict) -> None:
    print(json.dumps(figure), flush=True)


def say(message: str) -> None:
    print(f"[overhead] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- (a) import


def import_time(env: dict[str, str]) -> dict:
    """``import mltrain_assets.definitions`` in fresh interpreters: seconds inside the process, and per package."""
    samples = []
    for _ in range(IMPORT_SAMPLES):
        out = subprocess.run([sys.executable, "-c", TIME_IMPORT], env=env, capture_output=True, text=True, check=True)
        samples.append(float(out.stdout.strip().splitlines()[-1]))
    profile = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import mltrain_assets.definitions"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    return {
        "bench": "import_definitions",
        "median_s": round(statistics.median(samples), 3),
        "samples_s": [round(s, 3) for s in samples],
        # -X importtime's own overhead inflates these; they rank the packages, the median is the figure.
        "top_packages_s": top_packages(profile),
    }


def top_packages(importtime_stderr: str, count: int = 12) -> dict[str, float]:
    """Seconds per top-level package: the sum of its modules' own import times."""
    per_package: Counter[str] = Counter()
    for line in importtime_stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \| \s*(\S+)", line)
        if match:
            per_package[match[2].split(".")[0]] += int(match[1])
    return {name: round(us / 1e6, 3) for name, us in per_package.most_common(count)}


# ---------------------------------------------------------------------------------------- setup


def mltrain(env: dict[str, str], *args: str) -> None:
    say("mltrain " + " ".join(args))
    done = subprocess.run([str(BIN / "mltrain"), *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mltrain {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def commit_versions(env: dict[str, str], date: str, chain: bool) -> None:
    """Land and materialize what the launches will find committed (the demo runs the whole demand pipeline)."""
    if chain:
        mltrain(env, "demo", "--pipeline", "demand", "--date", date, "--rides-per-day", str(RIDES_PER_DAY))
        return
    mltrain(env, "simulate", "--dataset", "rides", "--start", date, "--rides-per-day", str(RIDES_PER_DAY))
    mltrain(env, "materialize", "--asset", "ride_events", "--partition", date)


# ---------------------------------------------------------------------------------------- (b) the stack


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    response = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL error: {body['errors']}")
    return body["data"]


@contextlib.contextmanager
def running_stack(keep_sensors: bool) -> Iterator[str]:
    """``mltrain dev``'s webserver and daemon (no MLflow UI); the sensors are stopped before the daemon starts."""
    from mltrain_assets.cli.devstack import DevStack
    from mltrain_assets.loopback import free_port

    stack = DevStack(dagster_port=free_port(), daemon=False, mlflow_ui=False)
    say(f"starting dagster-webserver on {stack.dagster_url}")
    with stack:
        if not keep_sensors:
            stop_sensors(stack.dagster_url)
        daemon_plan = DevStack(dagster_port=stack.dagster_port, mlflow_ui=False).plan()
        (daemon_command,) = [s.command for s in daemon_plan if s.name == "dagster-daemon"]
        log = Path(os.environ["MLTRAIN_HOME"]) / "logs" / "dagster-daemon.log"
        env = {**os.environ, **stack.link_settings(), "PYTHONUNBUFFERED": "1"}
        say("starting dagster-daemon")
        daemon = subprocess.Popen(
            daemon_command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for(lambda: daemon_healthy(stack.dagster_url, daemon), 180, "the daemon's run queue to be healthy")
            yield stack.dagster_url
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()


def stop_sensors(url: str) -> None:
    """Landing and automation sensors would start runs of their own; the launches measured here are alone."""
    repo = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
    for sensor in graphql(url, SENSORS, {"repo": repo})["sensorsOrError"]["results"]:
        if sensor["sensorState"]["status"] == "RUNNING":
            graphql(url, STOP_SENSOR, {"id": sensor["sensorState"]["id"]})


def daemon_healthy(url: str, daemon: subprocess.Popen) -> bool:
    if daemon.poll() is not None:
        raise RuntimeError(f"dagster-daemon exited ({daemon.returncode}); see $MLTRAIN_HOME/logs/dagster-daemon.log")
    return graphql(url, DAEMON)["instance"]["daemonHealth"]["daemonStatus"]["healthy"]


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def ui_selection(url: str, assets: list[str]) -> tuple[str, dict]:
    """What the UI's Materialize button launches for assets: the implicit asset job, the assets and their checks."""
    checks, jobs = [], set()
    for asset in assets:
        node = graphql(url, ASSET_NODE, {"key": {"path": [asset]}})["assetNodeOrError"]
        jobs.update(name for name in node["jobNames"] if name.startswith("__ASSET_JOB"))
        checks += [{"assetKey": {"path": [asset]}, "name": c["name"]} for c in node["assetChecksOrError"]["checks"]]
    selection = {"assetSelection": [{"path": [name]} for name in assets], "assetCheckSelection": checks}
    return min(jobs), selection


def launch(url: str, job: str, selection: dict, partition_tags: dict[str, str]) -> tuple[str, float]:
    """Launch like the UI's *Launch 1 run*; returns the run id and the wall-clock time of the request."""
    params = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY,
            "pipelineName": job,
            **selection,
        },
        "mode": "default",
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in partition_tags.items()]},
    }
    requested = time.time()
    result = graphql(url, LAUNCH, {"executionParams": params})["launchPipelineExecution"]
    if result["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launch refused ({result['__typename']}): {result.get('message')}")
    return result["run"]["runId"], requested


def wait_for_run(instance, run_id: str):
    from dagster import DagsterRunStatus

    finished = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    run = wait_for(
        lambda: (r := instance.get_run_by_id(run_id)) and r.status in finished and r,
        RUN_TIMEOUT_S,
        f"run {run_id}",
        0.2,
    )
    if run.status != DagsterRunStatus.SUCCESS:
        raise RuntimeError(f"run {run_id} ended {run.status.value}; see the UI or $DAGSTER_HOME")
    return run


def breakdown(instance, run_id: str, requested: float) -> dict:
    """Where launch -> success went, from the run's event log (seconds)."""
    from dagster import DagsterEventType

    events = [e for e in instance.all_logs(run_id) if e.dagster_event]
    first: dict[DagsterEventType, float] = {}
    for entry in events:
        first.setdefault(entry.dagster_event.event_type, entry.timestamp)
    # Dagster 1.13 records no RUN_DEQUEUED: the daemon's dequeue shows as RUN_STARTING (it launches at once).
    enqueued, starting = first[DagsterEventType.RUN_ENQUEUED], first[DagsterEventType.RUN_STARTING]
    run_start = first[DagsterEventType.RUN_START]
    run_success = first[DagsterEventType.RUN_SUCCESS]
    worker_started = next(e.timestamp for e in events if (e.message or "").startswith("Started process for run"))
    steps = step_figures(events)
    return {
        "launch_to_success_s": round(run_success - requested, 2),
        "request_to_enqueued_s": round(enqueued - requested, 2),
        "queued_until_dequeued_s": round(starting - enqueued, 2),
        # The daemon asks the code server to start the run; it spawns a fresh interpreter that imports dagster.
        "worker_process_start_s": round(worker_started - starting, 2),
        # The worker imports the definitions and plans the run.
        "worker_to_run_start_s": round(run_start - worker_started, 2),
        "run_start_to_first_step_s": round(steps[0]["started"] - run_start, 2) if steps else None,
        "steps_s": round(sum(s["wall_s"] for s in steps), 2),
        "last_step_to_success_s": round(run_success - steps[-1]["ended"], 2) if steps else None,
        "run_s": round(run_success - run_start, 2),
        "steps": [{k: v for k, v in s.items() if k not in ("started", "ended")} for s in steps],
    }


def step_figures(events) -> list[dict]:
    """Each step's wall time, the workload seconds it recorded (0 when its version was committed), the rest."""
    from dagster import DagsterEventType

    started, ended, workload = {}, {}, Counter()
    for entry in events:
        event = entry.dagster_event
        if event.event_type == DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            ended[event.step_key] = entry.timestamp
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            wall = event.step_materialization_data.materialization.metadata.get("wall_s")
            workload[event.step_key] += float(getattr(wall, "value", wall) or 0)
    figures = []
    for key in sorted(started, key=started.get):
        wall = ended[key] - started[key]
        figures.append(
            {
                "step": key,
                "wall_s": round(wall, 2),
                "workload_s": round(workload[key], 2),
                "overhead_s": round(wall - workload[key], 2),
                "started": started[key],
                "ended": ended[key],
            }
        )
    return figures


def measure_launches(url: str, instance, bench: str, job: str, selection: dict, tags: dict, count: int) -> list[str]:
    """One warm-up launch (the daemon's first launch loads its code server), then ``count`` measured ones."""
    figures, run_ids = [], []
    for attempt in range(count + 1):
        run_id, requested = launch(url, job, selection, tags)
        run_ids.append(run_id)
        wait_for_run(instance, run_id)
        figure = {"bench": bench, "job": job, "partition": tags["dagster/partition"], "run_id": run_id}
        figure.update(breakdown(instance, run_id, requested))
        if attempt == 0:
            figure["bench"] += "_first_after_start"
        else:
            figures.append(figure["launch_to_success_s"])
        emit(figure)
    emit({"bench": f"{bench}_median", "launch_to_success_s": statistics.median(figures), "launches": len(figures)})
    return run_ids


def emit_background_runs(instance, not_background: set[str]) -> None:
    """Runs the sensors (``--keep-sensors``) started meanwhile: they compete for run slots and CPUs."""
    others = [run for run in instance.get_runs() if run.run_id not in not_background]
    counts = Counter(f"{run.job_name}:{run.status.value}" for run in others)
    emit({"bench": "background_runs", "count": len(others), "by_job_and_status": dict(counts)})


# ---------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--date", default="2026-11-27", help="the partition launched (its version gets committed)")
    parser.add_argument("--launches", type=int, default=3, help="measured launches per run kind (after a warm-up)")
    parser.add_argument("--no-chain", dest="chain", action="store_false", help="skip the 3-step demand chain")
    parser.add_argument(
        "--keep-sensors",
        action="store_true",
        help="leave the landing and automation sensors running, as `mltrain dev` does (their ticks share the CPUs)",
    )
    args = parser.parse_args()
    dt.date.fromisoformat(args.date)
    with tempfile.TemporaryDirectory(prefix="mltrain-overhead-") as home:
        os.environ.update(MLTRAIN_HOME=home, MLTRAIN_CITIES=CITY, MLTRAIN_SQL_ENGINE="duckdb")
        for name in ("DAGSTER_HOME", "MLTRAIN_LANDING_URI", "MLTRAIN_STORAGE_URI", "MLFLOW_TRACKING_URI"):
            os.environ.pop(name, None)  # every location under the fresh home
        from mltrain_assets.cli.demo import ensure_instance

        instance = ensure_instance()  # sets the remaining defaults in os.environ and installs dagster.yaml
        env = dict(os.environ)
        emit(import_time(env))
        commit_versions(env, args.date, args.chain)
        setup_runs = {run.run_id for run in instance.get_runs()}
        with running_stack(args.keep_sensors) as url:
            say("launching ride_events as the UI does")
            job, selection = ui_selection(url, ["ride_events"])
            tags = {"dagster/partition": args.date}
            ours = measure_launches(url, instance, "ui_launch_committed", job, selection, tags, args.launches)
            if args.chain:
                say(f"launching {CHAIN_JOB} for {CITY}|{args.date}")
                _, selection = ui_selection(url, CHAIN_ASSETS.split(","))
                tags = {
                    "dagster/partition": f"{CITY}|{args.date}",
                    "dagster/partition/city": CITY,
                    "dagster/partition/date": args.date,
                }
                ours += measure_launches(url, instance, "ui_launch_chain", CHAIN_JOB, selection, tags, 1)
            emit_background_runs(instance, setup_runs | set(ours))


if __name__ == "__main__":
    main()
