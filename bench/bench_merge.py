"""`evalrun merge` of 3 shards of 10,000 trials each (target: at most 10 s).

The shards are made from one real trial: a tiny suite runs once through pytest, and its trial
directory and Harbor trial directory are replicated (meta.json / result.json / config.json
written per trial, the other files hard-linked to one copy of the template per 1,000 trials,
well under ext4's 65,000 links per file) into 3 shards' ``results/`` and ``jobs/`` trees
with the run files a sharded session leaves (run.json with its plan, summary.json,
variant.json, task.json). Then ``evalrun merge`` runs as a subprocess, timed, best of N.

Both ways are timed: ``evalrun merge`` (one rename per trial directory: the shards are used
up, so each repeat merges a fresh hard-linked copy of them, made untimed) and
``evalrun merge --keep`` (every file hard-linked: the shards stay as they were).

Run: python bench/bench_merge.py [--repeats N] [--trials-per-shard N]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c

RUN = "bench-merge"
EXP = "merge-bench"
SHARDS = 3


def _arg(name: str, default: int) -> int:
    for a in sys.argv[1:]:
        if a.startswith(f"--{name}="):
            return int(a.split("=", 1)[1])
    return default


def _template(base: Path) -> tuple[Path, Path]:
    """One real trial (standard and Harbor directories) from a real pytest session."""
    suite = base / "template"
    (suite / "fx").mkdir(parents=True)
    (suite / "fx" / "f.txt").write_text("x\n")
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "t.eval.yaml").write_text(
        textwrap.dedent(
            f"""
            experiment: {EXP}
            variants: {{a: {{agent: {{command: "echo ok > answer.txt"}}}}}}
            tasks:
              - {{name: t, prompt: go, fixture: fx, verify: "grep -q ok answer.txt"}}
            """
        )
    )
    subprocess.run(
        [c.PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--eval-run-id={RUN}"],
        cwd=suite, check=True, capture_output=True, env=c.clean_env(),
    )
    trial = next((suite / "results").glob("*/*/variants/*/tasks/*/trials/001"))
    pier = next(p for p in (suite / "jobs").glob("*/*") if (p / "result.json").exists())
    return trial, pier


#: Trials sharing one copy of the template's files (each file then has ~1,000 links).
_PER_TEMPLATE = 1000


def _link_tree(src: Path, dst: Path, skip: set[str]) -> None:
    dst.mkdir(parents=True)
    for entry in os.scandir(src):
        if entry.name in skip:
            continue
        if entry.is_dir(follow_symlinks=False):
            _link_tree(Path(entry.path), dst / entry.name, set())
        elif entry.is_file(follow_symlinks=False):
            os.link(entry.path, dst / entry.name)


def _shards(base: Path, per_shard: int, trial: Path, pier: Path) -> list[Path]:
    meta = json.loads((trial / "meta.json").read_text())
    tresult = json.loads((pier / "result.json").read_text())
    tconfig = json.loads((pier / "config.json").read_text())
    job_config = (pier.parent / "config.json").read_text()
    variants, tasks = 10, 100
    trials_per_task = SHARDS * per_shard // (variants * tasks)
    plan = {
        "variants": [f"v{i}" for i in range(variants)],
        "tasks": [f"t{j:03d}" for j in range(tasks)],
        "min_pass_rate": None,
        "task_min_pass_rate": {f"t{j:03d}": None for j in range(tasks)},
        "trials_per_task": {f"t{j:03d}": trials_per_task for j in range(tasks)},
    }
    keys = [
        (f"v{i}", f"t{j:03d}", n)
        for i in range(variants)
        for j in range(tasks)
        for n in range(1, trials_per_task + 1)
    ]
    shards = []
    made = 0
    for k in range(SHARDS):
        root = base / f"shard-{k + 1}"
        run_dir = root / "results" / EXP / RUN
        job_dir = root / "jobs" / f"{RUN}__{EXP}"
        job_dir.mkdir(parents=True)
        mine = keys[k::SHARDS]
        started = f"2026-01-01T00:0{k}:00.000Z"
        (run_dir).mkdir(parents=True)
        (run_dir / "run.json").write_text(json.dumps({
            "schema_version": 1, "run_id": RUN, "experiment": EXP, "status": "completed",
            "started_at": started, "finished_at": "2026-01-01T01:00:00.000Z",
            "counts": {"total": len(mine)}, "plan": plan, "host": f"machine-{k}",
            "sessions": [{"id": f"s{k}", "started_at": started, "shard": f"{k + 1}/{SHARDS}"}],
        }))
        (run_dir / "summary.json").write_text(json.dumps(
            {"cli_min_pass_rate": None, "baseline": None, "experiments": []}
        ))
        (job_dir / "config.json").write_text(job_config)
        for v, t, n in mine:
            if made % _PER_TEMPLATE == 0:  # a fresh copy of the template's files
                copy = base / "templates" / str(made)
                shutil.copytree(trial, copy / "trial", symlinks=True)
                shutil.copytree(pier, copy / "pier", symlinks=True)
                trial, pier = copy / "trial", copy / "pier"
            made += 1
            tdir = run_dir / "variants" / v / "tasks" / t
            if not (tdir / "task.json").exists():
                tdir.mkdir(parents=True, exist_ok=True)
                (tdir.parent.parent / "variant.json").write_text(json.dumps({"name": v}))
                (tdir / "task.json").write_text(json.dumps({"name": t, "definition": f"{v}{t}"}))
            dst = tdir / "trials" / f"{n:03d}"
            _link_tree(trial, dst, {"meta.json"})
            name = f"{t}__{v}{n:04d}"
            passed = (hash((v, t, n)) % 3) != 0
            record = dict(meta, variant=v, task=t, trial=n, variant_slug=v, task_slug=t,
                          experiment=EXP, experiment_slug=EXP, run_id=RUN,
                          status="passed" if passed else "failed",
                          reward=1.0 if passed else 0.0,
                          trial_dir=str(dst), pier_trial_dir=str(job_dir / name))
            (dst / "meta.json").write_text(json.dumps(record))
            pdst = job_dir / name
            _link_tree(pier, pdst, {"result.json", "config.json"})
            (pdst / "result.json").write_text(json.dumps(
                dict(tresult, trial_name=name, task_name=t,
                     verifier_result={"rewards": {"reward": record["reward"]}})
            ))
            (pdst / "config.json").write_text(json.dumps(dict(tconfig, trial_name=name)))
        shards.append(root)
    return shards


def _merge(shards: list[Path], into: Path, *extra: str) -> float:
    evalrun = str(Path(c.PY).parent / "evalrun")
    shutil.rmtree(into, ignore_errors=True)
    start = time.perf_counter()
    r = subprocess.run([evalrun, "merge", *extra, *map(str, shards), "--into", str(into)],
                       capture_output=True, text=True, env=c.clean_env())
    took = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"evalrun merge failed: {r.stdout} {r.stderr}")
    print(f"  merge {' '.join(extra)}: {took:.2f} s  {r.stdout.strip()}", flush=True)
    return took


def _linked_copy(shards: list[Path], where: Path) -> list[Path]:
    """A copy of the shards whose files are hard links (GNU cp -al), for a merge to use up."""
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    subprocess.run(["cp", "-al", *map(str, shards), str(where)], check=True)
    return [where / s.name for s in shards]


def main() -> int:
    repeats = _arg("repeats", 3)
    per_shard = _arg("trials-per-shard", 10_000)
    base = c.tmpdir("merge")
    trial, pier = _template(base)
    t0 = time.perf_counter()
    shards = _shards(base / "shards", per_shard, trial, pier)
    print(f"made {SHARDS} shards of {per_shard} trials in {time.perf_counter() - t0:.1f} s",
          flush=True)
    moved, kept = [], []
    for _ in range(repeats):
        work = _linked_copy(shards, base / "work")
        subprocess.run(["sync"], check=False)
        moved.append(_merge(work, base / "merged-moved"))
        shutil.rmtree(base / "work", ignore_errors=True)
    for k in range(repeats):
        kept.append(_merge(shards, base / "merged-kept", "--keep"))
        if k == 0:
            again = time.perf_counter()
            subprocess.run(
                [str(Path(c.PY).parent / "evalrun"), "merge", "--keep", *map(str, shards),
                 "--into", str(base / "merged-kept")], capture_output=True, check=True,
                env=c.clean_env())
            twice = time.perf_counter() - again
    result = {
        "name": "merge",
        "what": f"evalrun merge of {SHARDS} shards x {per_shard:,} trials",
        "unit": "s",
        "subject": round(min(moved), 3),
        "move_samples": [round(x, 3) for x in moved],
        "keep_samples": [round(x, 3) for x in kept],
        "keep_best": round(min(kept), 3),
        "target_s": 10.0,
        "met": min(moved) <= 10.0,
        "merge_again_s": round(twice, 3),
    }
    print(json.dumps(result, indent=1))
    c.OUT.mkdir(exist_ok=True)
    (c.OUT / "merge.json").write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
