"""The ``evalrun`` command on a large index: ``runs`` over 10,000 runs and ``show`` of a
100,000-trial run must each take under 1 s (wall time of the whole process, as a user waits
for it).

The index is built synthetically, directly through the store's own row builders (no trial is
run): 10,000 runs of 4 experiments, each with 2 variants x 5 tasks x 2 trials (20 trial rows),
a few of them still ``running`` (their pass rates are counted live from the trial rows), plus
one run of 10 variants x 100 tasks x 100 trials = 100,000 trial rows, a fifth of them failed.

Run: python bench/bench_cli.py [--repeats N] [--keep]          target: each under 1 s
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c

from pytest_evalrun.outcome import Metrics, TrialOutcome
from pytest_evalrun.store.index import INSERT_RUN, INSERT_TRIAL, run_row, trial_row
from pytest_evalrun.store.index_schema import REFRESH_RUN_VARIANTS, migrate

N_RUNS = 10_000
EXPERIMENTS = ["fix-bugs", "refactor", "docs", "tests"]
BIG = ("fix-bugs", "big-run")
BIG_VARIANTS, BIG_TASKS, BIG_TRIALS = 10, 100, 100
BUDGET = 1.0
EVALRUN = str(Path(sys.executable).parent / "evalrun")


def _outcome(exp: str, rid: str, v: str, t: str, n: int, status: str) -> TrialOutcome:
    return TrialOutcome(
        experiment=exp, variant=v, task=t, trial=n, status=status, experiment_slug=exp,
        variant_slug=v, task_slug=t, run_id=rid, reward=1.0 if status == "passed" else 0.0,
        message="" if status == "passed" else "verify rejected the result (exit status 1)",
        started_at="2026-01-01T00:00:00Z", finished_at="2026-01-01T00:00:01Z", duration=1.0,
        agent_duration=0.8, metrics=Metrics(input_tokens=1000, output_tokens=100),
        trial_dir=f"/x/{exp}/{rid}/variants/{v}/tasks/{t}/trials/{n:03d}",
    )  # fmt: skip


def _run(exp: str, rid: str, i: int, status: str = "completed") -> dict[str, object]:
    when = f"2026-{1 + i // 28 // 24 % 12:02d}-{1 + i // 24 % 28:02d}T{i % 24:02d}:00:00Z"
    return {"run_id": rid, "experiment": exp, "status": status, "started_at": when,
            "finished_at": when, "counts": {"total": 20, "passed": 15, "failed": 5}}  # fmt: skip


def build(results: Path) -> None:
    results.mkdir(parents=True)
    conn = sqlite3.connect(results / "index.db")
    conn.execute("PRAGMA journal_mode=WAL")
    migrate(conn)
    trials = []
    runs = []
    for i in range(N_RUNS):
        exp = EXPERIMENTS[i % len(EXPERIMENTS)]
        rid = f"run-{i:05d}"
        status = "running" if i % 2000 == 1999 else "completed"
        runs.append(run_row(exp, _run(exp, rid, i, status), results / exp / rid))
        for v in ("base", "cand"):
            for t in range(5):
                for n in (1, 2):
                    st = "passed" if (i + t + n) % 4 else "failed"
                    trials.append(trial_row(_outcome(exp, rid, v, f"task-{t}", n, st)))
    exp, rid = BIG
    verdict = {"experiments": [{"name": exp, "verdict": {"gated": True, "passed": False,
               "gated_cells": 1000, "failures": []}}]}  # fmt: skip
    runs.append(run_row(exp, _run(exp, rid, N_RUNS), results / exp / rid, verdict))
    for v in range(BIG_VARIANTS):
        for t in range(BIG_TASKS):
            for n in range(1, BIG_TRIALS + 1):
                st = "passed" if (v + t + n) % 5 else "failed"
                trials.append(trial_row(_outcome(exp, rid, f"v{v}", f"task-{t:03d}", n, st)))
    with conn:
        conn.executemany(INSERT_RUN, runs)
        conn.executemany(INSERT_TRIAL, trials)
        conn.execute(REFRESH_RUN_VARIANTS + " GROUP BY experiment, run_id, variant")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def timed(args: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run([EVALRUN, *args], cwd=cwd, capture_output=True, text=True,
                       env={**c.clean_env(), "COLUMNS": "120"})  # fmt: skip
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"evalrun {' '.join(args)} failed: {r.stderr}")
    return dt, r.stdout


def main() -> dict[str, object]:
    repeats = c.arg_repeats(5)
    root = c.tmpdir("cli")
    try:
        t0 = time.perf_counter()
        build(root / "results")
        built = time.perf_counter() - t0
        size = (root / "results" / "index.db").stat().st_size
        print(f"  built the index in {built:.1f} s ({size / 2**20:.0f} MiB)", flush=True)
        cases = {
            "runs": ["runs"],
            "runs --limit 0": ["runs", "--limit", "0"],
            "runs --json --limit 0": ["runs", "--json", "--limit", "0"],
            "show (100,000 trials)": ["show", "fix-bugs/big-run"],
            "show --json (100,000 trials)": ["show", "fix-bugs/big-run", "--json"],
            "python -c pass": [],
        }
        samples: dict[str, list[float]] = {k: [] for k in cases}
        lines: dict[str, int] = {}
        for _ in range(repeats):
            for name, args in cases.items():
                if not args:
                    t = time.perf_counter()
                    subprocess.run([c.PY, "-c", "pass"], check=True)
                    samples[name].append(time.perf_counter() - t)
                    continue
                dt, out = timed(args, root)
                samples[name].append(dt)
                lines[name] = len(out.splitlines())
        for name, s in samples.items():
            print(f"  {name:<32} best {min(s):.3f} s  worst {max(s):.3f} s  "
                  f"({lines.get(name, 0)} lines)")  # fmt: skip
        worst_best = max(min(samples["runs --limit 0"]), min(samples["show (100,000 trials)"]))
        data = c.result(
            "cli", 8, "evalrun runs (10,000 runs) / show (100,000 trials) vs the 1 s budget",
            worst_best, BUDGET, 1.0,
            samples={k: [round(x, 4) for x in v] for k, v in samples.items()},
            index_mib=round(size / 2**20, 1),
        )  # fmt: skip
        print(json.dumps({k: round(min(v), 3) for k, v in samples.items()}))
        return data
    finally:
        if not c.keep_tmp():
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
