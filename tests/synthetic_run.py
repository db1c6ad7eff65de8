"""A large run written straight to disk in the standard layout (no agent, no pytest session),
for the HTML report's size test and benchmark: run.json, summary.json (from build_summary),
variant.json / task.json and every trial's files. The big texts (agent output, diff) are one
file each, hard-linked into every trial, so 10,000 trials take seconds to write."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from pytest_evalrun.outcome import Metrics, TrialOutcome
from pytest_evalrun.report.summary import ExperimentMeta, build_summary
from pytest_evalrun.store.paths import RunPaths
from pytest_evalrun.store.trialdir import DIFF, META, METRICS, PROMPT, STDOUT, VERIFY

RUN_ID = "2026-01-02__03-04-05"
EXPERIMENT = "synthetic"


def _dump(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def write_run(
    results: Path,
    *,
    variants: int = 4,
    tasks: int = 50,
    trials: int = 50,
    output_bytes: int = 200_000,
    diff_bytes: int = 100_000,
    seed: int = 1,
) -> Path:
    """``variants * tasks * trials`` trials (default 10,000); returns the run directory."""
    rng = random.Random(seed)
    paths = RunPaths(results, EXPERIMENT, RUN_ID)
    paths.run_dir.mkdir(parents=True)
    shared = results / ".shared"
    shared.mkdir()
    out_line = "step: the agent thinks about the task and runs a tool <x> & \"q\"\n"
    (shared / STDOUT).write_text(out_line * (output_bytes // len(out_line) + 1))
    diff = ["diff --git a/f.py b/f.py", "--- a/f.py", "+++ b/f.py", "@@ -1,3 +1,3 @@"]
    while sum(len(x) + 1 for x in diff) < diff_bytes:
        diff += ["-    return a - b", "+    return a + b", "     # context"]
    (shared / DIFF).write_text("\n".join(diff) + "\n")
    vnames = [f"variant-{i}" for i in range(variants)]
    tnames = [f"task-{j:03d}" for j in range(tasks)]
    outcomes = []
    for vi, v in enumerate(vnames):
        vdir = paths.variant_dir(v)
        vdir.mkdir(parents=True)
        _dump(vdir / "variant.json", {"name": v, "slug": v, "model": f"model-{vi}"})
        for ti, t in enumerate(tnames):
            tdir = paths.task_dir(v, t)
            tdir.mkdir(parents=True)
            _dump(tdir / "task.json", {"name": t, "slug": t, "prompt": f"Fix bug {t}."})
            p = (0.3 + 0.6 * vi / max(1, variants - 1)) * (0.5 + ti / (2 * tasks))
            for n in range(1, trials + 1):
                trial_dir = paths.trial_dir(v, t, n)
                trial_dir.mkdir(parents=True)
                status = (
                    "passed"
                    if rng.random() < p
                    else rng.choice(["failed"] * 8 + ["timeout", "error"])
                )
                o = TrialOutcome(
                    EXPERIMENT, v, t, n, status, EXPERIMENT, v, t,
                    nodeid=f"exp.eval.yaml::{v}::{t}::trial-{n:03d}", run_id=RUN_ID,
                    reward=None if status == "error" else float(status == "passed"),
                    message="" if status == "passed" else f"verify rejected the result ({status})",
                    error_kind="internal" if status == "error" else None,
                    trial_dir=str(trial_dir), duration=rng.uniform(5, 300),
                    agent_duration=rng.uniform(4, 290), verify_duration=0.5,
                    metrics=Metrics(rng.randrange(1000, 90000), rng.randrange(100, 9000), 0,
                                    round(rng.uniform(0.01, 0.9), 4), f"model-{vi}", "otel"),
                )
                outcomes.append(o)
                meta = o.to_dict() | {"schema_version": 1, "success": status == "passed"}
                _dump(trial_dir / META, meta)
                _dump(trial_dir / METRICS, meta["metrics"] | {"duration": o.duration})
                _dump(trial_dir / VERIFY, {"status": status, "exit_code": int(status != "passed"),
                                           "stdout_tail": "FAILED test_f.py::test_add\n" * 30})
                (trial_dir / PROMPT).write_text(f"Fix bug {t}.\n")
                for name in (STDOUT, DIFF):
                    os.link(shared / name, trial_dir / name)
    meta_ = ExperimentMeta(
        EXPERIMENT, vnames, tnames, run_id=RUN_ID, results_dir=str(paths.run_dir),
        trials_per_task=dict.fromkeys(tnames, trials),
    )
    summary = build_summary(outcomes, experiments_meta={EXPERIMENT: meta_},
                            cli_min_pass_rate=None, baseline=vnames[0])
    _dump(paths.summary_json, summary)
    _dump(paths.run_json, {"schema_version": 1, "run_id": RUN_ID, "experiment": EXPERIMENT,
                           "status": "completed", "started_at": "2026-01-02T03:04:05Z"})
    return paths.run_dir
