"""`make bench-seed` refuses to record on a busy machine (load above the cores, or another bench), and says the load.

The load readers are faked and the bench scripts are stand-ins that print figure lines: no heavy bench runs here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench import guard, run_all

ROOT = Path(__file__).resolve().parents[1]
QUIET = guard.Reading(load_1m=0.4, sampled=0.2, cores=2)
BUSY = guard.Reading(load_1m=5.0, sampled=3.5, cores=2)

FIGURES = [
    {"bench": "import_definitions", "median_s": 0.5},
    {"bench": "spark_engines_features_one_date", "engine": "duckdb", "mode": "in_process", "seconds": 1.0},
    {"bench": "spark_engines_features_one_date", "engine": "spark_connect_warm", "seconds": 4.0},
]


def stand_in(tmp_path: Path, figures: list[dict] = FIGURES) -> Path:
    """A bench script that leaves a mark when it runs and prints ``figures`` between lines of chatter."""
    script = tmp_path / "stand_in.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, pathlib
        pathlib.Path({str(tmp_path / "ran")!r}).write_text("yes")
        print("progress, not a figure")
        for figure in {figures!r}:
            print(json.dumps(figure))
        """)
    )
    return script


def args(tmp_path: Path, *extra: str) -> list[str]:
    return ["--lock", str(tmp_path / "bench.lock"), "--out", str(tmp_path / "figures.jsonl"), *extra]


def recorded(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "figures.jsonl").read_text().splitlines()]


def test_a_busy_machine_is_refused_with_the_load_in_one_line(tmp_path, capsys):
    code = run_all.main(args(tmp_path, str(stand_in(tmp_path))), measure=lambda: BUSY, quick=lambda: BUSY)

    assert code == guard.EXIT_BUSY == 75
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "the machine is busy: load 5.00 (1-min), 3.50 (sampled over 3 s) on 2 cores" in err
    assert "--force" in err
    assert not (tmp_path / "ran").exists(), "no bench ran"
    assert not (tmp_path / "figures.jsonl").exists(), "nothing recorded"
    # The refusal released the lock: the next (quiet) try takes it.
    assert run_all.main(args(tmp_path, str(stand_in(tmp_path))), measure=lambda: QUIET, quick=lambda: QUIET) == 0


def test_a_short_burst_counts_even_when_the_minute_average_is_low():
    reading = guard.reading(cores=2, read_load=lambda: 0.5, read_sample=lambda: 2.6)
    assert reading.busy
    assert not guard.reading(cores=2, read_load=lambda: 1.9, read_sample=lambda: 1.2).busy
    assert guard.sample(0.3, 0.05, read=iter([1.0, 3.0] * 20).__next__) == pytest.approx(2.0, abs=0.5)
    assert guard.runnable_tasks() >= 0  # the real reader: /proc, this process tree excluded


def fake_proc(root: Path, processes: dict[int, tuple[int, list[str]]]) -> Path:
    """A /proc with ``pid -> (ppid, thread states)``: each process's stat and one task stat per thread."""
    rest = " ".join(["0"] * 40)  # pgrp, session, ..., rss: the fields procfs reads after state and ppid
    for pid, (ppid, states) in processes.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "stat").write_text(f"{pid} (name with ) paren) S {ppid} {rest}\n")
        for tid, state in enumerate(states):
            (root / str(pid) / "task" / str(pid * 100 + tid)).mkdir(parents=True)
            (root / str(pid) / "task" / str(pid * 100 + tid) / "stat").write_text(
                f"{pid} (java) {state} {ppid} {rest}\n"
            )
    return root


def test_the_benchs_own_threads_are_not_load_but_everyone_elses_are(tmp_path, monkeypatch):
    from mltrain_assets.launch import procfs

    proc = fake_proc(
        tmp_path / "proc",
        {
            10: (1, ["R"]),  # the bench
            11: (10, ["R", "R", "S"]),  # its Spark JVM
            12: (11, ["R", "R"]),  # a Python worker the JVM started
            20: (1, ["R", "R", "R", "S"]),  # another session's test run
            21: (20, ["D", "R"]),
            30: (1, ["S"]),
        },
    )
    monkeypatch.setattr(procfs, "PROC", str(proc))
    assert guard.runnable_tasks(root_pid=10) == 4.0
    assert guard.runnable_tasks(root_pid=20) == 5.0


def test_a_figure_is_marked_for_other_processes_load_not_for_the_benchs_own():
    own_work = guard.Reading(load_1m=3.9, sampled=0.3, cores=2)  # the minute's average holds our Spark run
    others = guard.Reading(load_1m=3.9, sampled=2.6, cores=2)
    assert "under_load" not in guard.annotate({"bench": "x"}, QUIET, own_work)["load"]
    marked = guard.annotate({"bench": "x"}, QUIET, others)["load"]
    assert marked["under_load"] == "under load (load 2.60 on 2 cores)"
    assert guard.annotate({"bench": "x"}, QUIET, own_work, started_busy=True)["load"]["under_load"] == (
        "under load (load 3.90 on 2 cores)"
    )


def test_a_quiet_machine_records_the_load_of_every_figure_next_to_its_goal(tmp_path, capsys):
    readings = iter([guard.Reading(round(0.4 + i / 10, 1), 0.1, 2) for i in range(10)])
    code = run_all.main(args(tmp_path, str(stand_in(tmp_path))), measure=lambda: QUIET, quick=readings.__next__)

    assert code == 0
    out = capsys.readouterr().out
    lines = recorded(tmp_path)
    assert [{k: v for k, v in line.items() if k != "load"} for line in lines] == FIGURES
    # Each figure's "before" is the previous figure's "after": the load around that figure alone.
    loads = [line["load"] for line in lines]
    assert [(x["before"]["load_1m"], x["after"]["load_1m"]) for x in loads] == [(0.4, 0.5), (0.5, 0.6), (0.6, 0.7)]
    assert all("under_load" not in x and x["cores"] == 2 for x in loads)
    assert "progress, not a figure" in out
    assert "definitions import: 0.50 s (goal <= 1.0 s) -> met" in out
    assert (
        "features for one date, Spark Connect warm (second query) (spark_connect_warm): 4.00 s (goal <= 5 s) -> met"
        in out
    )
    assert "features for one date, Spark Connect warm / DuckDB (in process): 4.00x (goal <= 3x) -> NOT met" in out


def test_force_records_on_a_busy_machine_and_marks_every_figure(tmp_path, capsys):
    code = run_all.main(args(tmp_path, "--force", str(stand_in(tmp_path))), measure=lambda: BUSY, quick=lambda: BUSY)

    assert code == 0
    lines = recorded(tmp_path)
    assert len(lines) == 3
    assert {line["load"]["under_load"] for line in lines} == {"under load (load 5.00 on 2 cores)"}
    assert (
        "definitions import: 0.50 s (goal <= 1.0 s) -> met  [under load (load 5.00 on 2 cores)]"
        in capsys.readouterr().out
    )


def test_another_bench_running_is_refused_naming_its_pid_until_it_ends(tmp_path):
    lock = tmp_path / "bench.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys, time; from bench import guard; held = guard.lock(__import__('pathlib').Path({str(lock)!r})); print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        # The real command line: its exit status and its one line of stderr.
        refused = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "run_all.py"), *args(tmp_path, str(stand_in(tmp_path)))],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert refused.returncode == 75, refused.stderr
        assert f"another bench is running (pid {holder.pid} since " in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "ran").exists()
    finally:
        holder.kill()
        holder.wait()
    # The lock died with its holder: no stale lock file to remove.
    assert run_all.main(args(tmp_path, str(stand_in(tmp_path))), measure=lambda: QUIET, quick=lambda: QUIET) == 0
    assert (tmp_path / "ran").read_text() == "yes"


def test_a_script_under_the_runner_runs_under_its_lock(tmp_path, capsys):
    script = tmp_path / "guarded.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from bench import guard
        held = guard.hold(path=guard.Path({str(tmp_path / "bench.lock")!r}), measure=lambda: guard.Reading(9.0, 9.0, 2))
        print(json.dumps({{"bench": "guarded", "own_lock": held.lock is not None, "under_runner": held.under_runner}}))
        """)
    )
    assert run_all.main(args(tmp_path, str(script)), measure=lambda: QUIET, quick=lambda: QUIET) == 0
    (line,) = recorded(tmp_path)
    # Not refused for the load either: the runner judged it and annotates the figure.
    assert (line["own_lock"], line["under_runner"]) == (False, True)
