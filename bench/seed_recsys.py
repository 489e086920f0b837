"""The recommendations pipeline at seed scale: 1M users x 50k items x ~2.86M impressions/day.

    .venv/bin/python bench/seed_recsys.py [--quick] [--users N --items M --events-per-day K]
        [--scratch DIR] [--steps als,train,oracle,topk,recall] [--recall-users 2000] [--driver-memory 4g]
        [--config FILE|none] [--epochs N] [--hidden-width W]

Training takes ``recommender_model``'s launch config: at seed scale by default the shipped
``deploy/config/recommender-seed-scale.yaml``, at other sizes the defaults.

Simulates the 15 landing days of one partition (D-14..D-8 for ALS, D-7..D-1 for training, the
held-out day D),
ingests them with ``ingest_day``, then runs each step the way the compute backend launches it
(``python -m <workload module> --params JSON``, one process each): ALS embeddings (Spark
``local[2]``), 2-worker DDP training (MLflow on a sqlite store in the scratch folder), top-K for
every user; last, recall@K of the two-stage top-K against exhaustive scoring on a sample of
users. ``oracle`` (after training): the model's AUC on day D next to the simulator's oracle AUC
on the same rows (the clicks scored by the probabilities they were drawn from,
``simulate.click_probabilities``) and the gate ``contract.AUC_THRESHOLD``, then both per bucket of
the users' history in the embeddings window. ``--quick``: 100k users x 5k items x 300k
impressions/day, a few minutes. ``--steps`` runs only those steps; the others' latest outputs in
``--scratch`` are used.

Each step's wall time and peak RSS, summed over the step's whole process tree (the Spark JVM,
torchrun and its workers included), sampled every ``SAMPLE_S``. Prints one JSON line per figure
(``{"bench": "seed_recsys_<step>", ...}``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mltrain_assets.artifacts import read_manifest, read_table, version_uri
from mltrain_assets.launch import procfs
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys import simulate as simulator
from mltrain_assets.pipelines.recsys.params import EmbeddingsParams, RecommendParams, TrainParams
from mltrain_assets.pipelines.recsys.workloads.evaluate import oracle_auc
from mltrain_assets.workloads.common.params import MlflowSettings
from mltrain_assets.workloads.common.spark import SparkSettings
from mltrain_assets.workloads.ingest.params import EVENTS_FILE

REPO = Path(__file__).resolve().parents[1]
SEED = {"users": 1_000_000, "items": 50_000, "events_per_day": 2_860_000}
QUICK = {"users": 100_000, "items": 5_000, "events_per_day": 300_000}
DATE = "2026-03-08"
SIMULATOR_SEED = 0  # the world `mltrain simulate` lands (its default seed)
SAMPLE_S = 0.25
SEED_CONFIG = REPO / "deploy" / "config" / "recommender-seed-scale.yaml"  # the launch config for seed volume
STEPS = ("simulate", "ingest", "als", "train", "oracle", "topk", "recall")
EPOCH_SECONDS = re.compile(r"epochs \(loss [\d.]+, validation [\d.]+, ([\d.]+)s\)")

INGEST = """
import json, sys, time
from mltrain_assets.workloads.ingest.workload import ingest_day
landing, days = sys.argv[1], json.loads(sys.argv[2])
for date, out_uri in days:
    started = time.monotonic()
    summary = ingest_day(landing, "interactions", date, out_uri)
    print(json.dumps({"date": date, "rows": summary.get("rows"), "seconds": round(time.monotonic() - started, 1)}))
"""

RECALL = """
import json, sys, time
import numpy as np
import torch
from mltrain_assets.pipelines.recsys import contract
from mltrain_assets.pipelines.recsys.workloads.model import load_model_dir
from mltrain_assets.pipelines.recsys.workloads.recommend import EXHAUSTIVE, TWO_STAGE, recommend
bundle = load_model_dir(sys.argv[1])
n_users = int(sys.argv[2])
timings, tops = {}, {}
for mode in (TWO_STAGE, EXHAUSTIVE):
    started = time.monotonic()
    table = recommend(bundle, contract.TOP_K, users_limit=n_users, mode=mode)
    timings[mode] = round(time.monotonic() - started, 1)
    tops[mode] = table.column("item_id").to_numpy().reshape(-1, min(contract.TOP_K, len(bundle.items.ids)))
hits = np.array([len(set(a) & set(b)) / len(b) for a, b in zip(tops[TWO_STAGE], tops[EXHAUSTIVE])])
users = torch.from_numpy(bundle.users.rows(bundle.users.ids[:n_users]).astype(np.int64))
cold = (bundle.users.vectors[users] == 0).all(dim=1).numpy()
print(json.dumps({"users": len(hits), "cold_users": int(cold.sum()), "recall_at_k": round(float(hits.mean()), 4),
                  "recall_warm_users": round(float(hits[~cold].mean()), 4),
                  "recall_cold_users": round(float(hits[cold].mean()), 4) if cold.any() else None,
                  "two_stage_s": timings[TWO_STAGE], "exhaustive_s": timings[EXHAUSTIVE]}))
"""


def tree_rss_mb(root: int) -> float:
    """RSS of ``root`` and all its descendants, in MB."""
    table = {found.pid: found for found in map(procfs.stat, procfs.pids() or []) if found is not None}
    children: dict[int, list[int]] = {}
    for found in table.values():
        children.setdefault(found.ppid, []).append(found.pid)
    total_kb, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total_kb += table[pid].rss_kb if pid in table else 0
        stack.extend(children.get(pid, []))
    return total_kb / 1024


def measured(command: list[str], env: dict[str, str], log: Path) -> dict:
    """Run ``command`` to the end; its wall time and the peak RSS of its process tree (sampled)."""
    started = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        peak = [0.0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(SAMPLE_S):
                peak[0] = max(peak[0], tree_rss_mb(process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        status = process.wait()
        done.set()
        sampler.join()
    seconds = round(time.monotonic() - started, 1)
    if status != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed ({status}); see {log}:\n{log.read_text()[-4000:]}")
    return {"seconds": seconds, "peak_rss_mb": round(peak[0])}


def emit(bench: str, **figures) -> None:
    print(json.dumps({"bench": f"seed_recsys_{bench}", **figures}), flush=True)


def launch_config(path: str) -> dict:
    """``recommender_model``'s hyperparameters from a launch config file (``{}`` for ``none``)."""
    if path == "none":
        return {}
    import yaml

    return dict(yaml.safe_load(Path(path).read_text())["ops"]["recommender_model"]["config"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK} instead of the seed scale {SEED}")
    parser.add_argument("--users", type=int)
    parser.add_argument("--items", type=int)
    parser.add_argument("--events-per-day", type=int)
    parser.add_argument("--date", default=DATE, help="the partition D (held out); D-7..D-1 are learned from")
    parser.add_argument("--scratch", help="working folder (default: a new temp folder, removed at the end)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument(
        "--config",
        help=f"recommender_model's launch config (as `mltrain materialize --config`; 'none': the defaults); "
        f"default: {SEED_CONFIG.relative_to(REPO)} at seed scale, the defaults at other sizes",
    )
    parser.add_argument("--epochs", type=int, help="overrides the launch config's")
    parser.add_argument("--hidden-width", type=int, help="the MLP's first layer; overrides the launch config's")
    parser.add_argument("--recall-users", type=int, default=2_000)
    parser.add_argument("--driver-memory", help="spark.driver.memory of the ALS step (default: the session's, 2g)")
    args = parser.parse_args()
    sizes = dict(QUICK if args.quick else SEED)
    at_seed_scale = not (args.quick or args.users or args.items or args.events_per_day)
    args.hyperparameters = launch_config(args.config or (str(SEED_CONFIG) if at_seed_scale else "none"))
    args.hyperparameters.update({k: v for k, v in (("epochs", args.epochs), ("hidden_width", args.hidden_width)) if v})
    sizes.update({k: v for k, v in (("users", args.users), ("items", args.items),
                                    ("events_per_day", args.events_per_day)) if v})  # fmt: skip
    if args.scratch:
        Path(args.scratch).mkdir(parents=True, exist_ok=True)
        run(Path(args.scratch).resolve(), sizes, args)
    else:
        with tempfile.TemporaryDirectory(prefix="seed-recsys-") as tmp:
            run(Path(tmp), sizes, args)


HISTORY_BUCKETS = ((0, 0), (1, 10), (11, 30), (31, None))  # the user's impressions in the embeddings window


def by_user_history(model_uri: str, eval_uri: str, embeddings_uri: str, oracle) -> dict:
    """Model and oracle AUC on day D per bucket of the user's history in the embeddings window: where the gap is.

    The history is the ALS window's (D-14..D-8; the model's own user table counts every day through D-1).
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from mltrain_assets.pipelines.recsys.workloads.model import load_model_dir, score

    bundle = load_model_dir(model_uri)
    day = read_table(eval_uri, EVENTS_FILE).join(oracle, "event_id")
    clicked, p_click = day.column("clicked").to_numpy(), day.column("p_click").to_numpy()
    model = score(bundle, day)
    als_users = read_table(embeddings_uri, contract.USER_FACTORS_FILE).sort_by("user_id")
    als_ids = als_users.column("user_id").to_numpy()
    ids = day.column("user_id").to_numpy()
    position = np.clip(np.searchsorted(als_ids, ids), 0, max(len(als_ids) - 1, 0))
    known = als_ids[position] == ids if len(als_ids) else np.zeros(len(ids), bool)
    history = np.where(known, als_users.column("impressions").to_numpy()[position], 0)
    buckets = {}
    for low, high in HISTORY_BUCKETS:
        mask = (history >= low) & (history <= (high if high is not None else history.max()))
        name = f"{low}" if low == high else f"{low}-{high}" if high else f">{low - 1}"
        if len(np.unique(clicked[mask])) < 2:  # an empty bucket, or one class only: no AUC
            buckets[name] = {"share": round(float(mask.mean()), 3), "model_auc": None, "oracle_auc": None}
            continue
        buckets[name] = {
            "share": round(float(mask.mean()), 3),
            "model_auc": round(roc_auc_score(clicked[mask], model[mask]), 4),
            "oracle_auc": round(roc_auc_score(clicked[mask], p_click[mask]), 4),
        }
    return {"impressions_in_embeddings_window": buckets}


def latest(storage: str, asset: str, date: str) -> str:
    """The newest committed ``v=bench-*`` version of ``asset`` for ``date`` (a step skipped with ``--steps``)."""
    folder = Path(storage.removeprefix("file://")) / asset / date
    for version in sorted(folder.glob("v=bench-*"), reverse=True):
        uri = f"file://{version}"  # as_uri() would escape the "=" of v=
        if read_manifest(uri):
            return uri
    raise SystemExit(f"no committed {asset} for {date} under {folder}: run its step first")


def run(scratch: Path, sizes: dict, args: argparse.Namespace) -> None:
    steps = set(args.steps.split(","))
    if steps - set(STEPS):
        raise SystemExit(f"--steps: unknown {sorted(steps - set(STEPS))}; choose from {','.join(STEPS)}")
    tag = f"{sizes['users']}x{sizes['items']}x{sizes['events_per_day']}"
    root = scratch / tag
    landing, storage = f"file://{root}/landing", f"file://{root}/storage"
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    dates = contract.LANDING_WINDOW.dates(args.date)  # D-14..D: embeddings D-14..D-8, training D-7..D-1, eval D
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "MLFLOW_", "MLTRAIN_"))}
    env.update({"SPARK_LOCAL_IP": "127.0.0.1", "MLTRAIN_HOME": str(root / "home"), "PYTHONUNBUFFERED": "1"})
    python = sys.executable
    run_id = f"bench-{time.strftime('%Y%m%dT%H%M%S')}"
    mlflow = MlflowSettings(tracking_uri=f"sqlite:///{root}/mlflow.db", artifacts_uri=f"file://{root}/mlartifacts")

    # 1. Landing days (mltrain simulate) and 2. their ingestion (ingest_day), each day's version "bench".
    if "simulate" in steps:
        simulate = [python, "-m", "mltrain_assets.cli", "simulate", "--dataset", "interactions",
                    "--start", dates[0], "--end", dates[-1], "--users", str(sizes["users"]),
                    "--items", str(sizes["items"]), "--events-per-day", str(sizes["events_per_day"]),
                    "--landing-uri", landing]  # fmt: skip
        emit("simulate", days=len(dates), **sizes, **measured(simulate, env, logs / "simulate.log"))
    interactions = [version_uri(storage, "user_interactions", d, "bench") for d in dates]
    if "ingest" in steps:
        days = list(zip(dates, interactions, strict=True))
        figures = measured([python, "-c", INGEST, landing, json.dumps(days)], env, logs / "ingest.log")
        per_day = [json.loads(line) for line in (logs / "ingest.log").read_text().splitlines() if line.startswith("{")]
        emit("ingest", days=len(per_day), rows=sum(d["rows"] or 0 for d in per_day), **figures,
             per_day_s=[d["seconds"] for d in per_day])  # fmt: skip
    uri_of = dict(zip(dates, interactions, strict=True))
    als_uris = tuple(uri_of[d] for d in contract.EMBEDDINGS_WINDOW.dates(args.date))
    train_uris, eval_uri = tuple(uri_of[d] for d in contract.MODEL_WINDOW.dates(args.date)[:-1]), uri_of[args.date]

    # 3. ALS embeddings over D-14..D-8 (Spark local[2]).
    if "als" in steps:
        embeddings_uri = version_uri(storage, "interaction_embeddings", args.date, run_id)
        conf = {"spark.driver.memory": args.driver_memory} if args.driver_memory else {}
        spark = SparkSettings(master="local[2]", conf=conf)
        als = EmbeddingsParams(date=args.date, interactions_uris=als_uris, spark=spark, out_uri=embeddings_uri)
        figures = measured(als.command(python), env, logs / "als.log")
        summary = read_manifest(embeddings_uri)["summary"]
        emit("als", **figures, interactions=summary["interactions"], users=summary["users"], items=summary["items"],
             ratings=summary["rated_pairs"], plan=summary["als_plan"], checkpointed=summary["checkpointed"],
             driver_memory=args.driver_memory or "2g (default)", timings_s=summary["timings_s"])  # fmt: skip
    else:
        embeddings_uri = latest(storage, "interaction_embeddings", args.date)

    # 4. DDP training, 2 workers on this node, AUC on day D (launcher), MLflow on sqlite.
    if "train" in steps:
        model_uri = version_uri(storage, "recommender_model", args.date, run_id)
        train = TrainParams(date=args.date, **args.hyperparameters, interactions_uris=train_uris, eval_uri=eval_uri, embeddings_uri=embeddings_uri,
                            mlflow=mlflow, out_uri=model_uri)  # fmt: skip
        figures = measured(train.command(python), env, logs / "train.log")
        summary = read_manifest(model_uri)["summary"]
        emit("train", **figures, rows=summary["n_train"], eval_rows=summary["n_eval"], epochs=summary["epochs"],
             hidden_width=train.hidden_width, world_size=summary["world_size"], auc=round(summary["auc"], 4),
             epoch_s=[float(s) for s in EPOCH_SECONDS.findall((logs / "train.log").read_text())])  # fmt: skip
    else:
        model_uri = latest(storage, "recommender_model", args.date)

    # 5. The model's AUC on day D next to the simulator's oracle AUC on the same deduplicated rows.
    if "oracle" in steps:
        oracle = simulator.click_probabilities(
            args.date, sizes["events_per_day"], sizes["users"], sizes["items"], SIMULATOR_SEED
        )
        figures = oracle_auc(read_table(eval_uri, EVENTS_FILE, ["event_id", "clicked"]), oracle)
        model_auc = read_manifest(model_uri)["summary"]["auc"]
        emit("oracle", model_auc=round(model_auc, 4), oracle_auc=round(figures["oracle_auc"], 4),
             oracle_auc_noise_free=round(figures["oracle_auc_noise_free"], 4), threshold=contract.AUC_THRESHOLD,
             gap=round(figures["oracle_auc"] - model_auc, 4), model_passes=model_auc > contract.AUC_THRESHOLD,
             oracle_passes=figures["oracle_auc"] > contract.AUC_THRESHOLD, rows=figures["n"])  # fmt: skip
        emit("oracle_by_history", **by_user_history(model_uri, eval_uri, embeddings_uri, oracle))

    # 6. Top-K for every user the model knows.
    if "topk" in steps:
        recs_uri = version_uri(storage, "recommendations", args.date, run_id)
        recommend = RecommendParams(model_uri=model_uri, out_uri=recs_uri, mlflow=mlflow)
        figures = measured(recommend.command(python), env, logs / "topk.log")
        summary = read_manifest(recs_uri)["summary"]
        emit("topk", **figures, users=summary["users"], items=summary["candidate_items"], mode=summary["mode"],
             candidates=summary["candidate_budget"], popular=summary["popular_candidates"], rows=summary["rows"],
             ms_per_user=round(1000 * figures["seconds"] / summary["users"], 3))  # fmt: skip

    # 7. Recall@K of two-stage against exhaustive scoring, on the first --recall-users users.
    if "recall" in steps:
        figures = measured([python, "-c", RECALL, model_uri, str(args.recall_users)], env, logs / "recall.log")
        recall = json.loads((logs / "recall.log").read_text().strip().splitlines()[-1])
        emit("recall", **recall, k=contract.TOP_K, items=sizes["items"], candidates=contract.RECOMMEND_CANDIDATES,
             popular=contract.RECOMMEND_POPULAR, peak_rss_mb=figures["peak_rss_mb"])  # fmt: skip


if __name__ == "__main__":
    main()
