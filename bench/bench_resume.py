"""Figure 5: ``--eval-resume`` of a finished 2,000-trial run (agent and verify ``true``;
nothing is re-run, every trial is reported again as resumed) vs plain pytest running 2,000
trivial parametrized tests. Both serial (no ``-n``).

The finished run is made once (with ``-n 2``) before the measurements.

Run: python bench/bench_resume.py [--repeats N] [--keep]      target ratio <= 1.0 (issue 23)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c

N_VARIANTS, N_TASKS, N_TRIALS = 2, 100, 10
N = N_VARIANTS * N_TASKS * N_TRIALS
TARGET = 1.0


def make_suites() -> Path:
    return c.grid_suite("resume", variants=N_VARIANTS, tasks=N_TASKS, trials=N_TRIALS,
                        plain=True)


def dirs(root: Path) -> list[str]:
    return ["--eval-results", str(root / "results"), "--eval-jobs", str(root / "jobs")]


def finish_run(root: Path) -> float:
    cmd = c.pytest_cmd("-n", "2", "-q", "exp", "--eval-run-id", "bench", *dirs(root))
    return c.run(cmd, root, log=c.OUT / "resume-setup.log")


def subject(root: Path) -> float:
    cmd = c.pytest_cmd("-p", "no:xdist", "-q", "exp", "--eval-resume", "--eval-run-id", "bench",
                       *dirs(root))
    dt = c.run(cmd, root, log=c.OUT / "resume-subject.log")
    text = (c.OUT / "resume-subject.log").read_text()
    last = text.strip().splitlines()[-1]
    if f"{N} passed" not in last:
        raise SystemExit(f"unexpected result: {last!r}")
    return dt


def baseline(root: Path) -> float:
    cmd = c.pytest_cmd(*c.PLAIN, "-p", "no:xdist", "-q", "plain/test_param.py")
    return c.run(cmd, root, log=c.OUT / "resume-baseline.log")


def main() -> dict[str, object]:
    repeats = c.arg_repeats(3)
    root = make_suites()
    try:
        print(f"  making the finished run: {finish_run(root):.1f} s", flush=True)
        sub, base, subs, bases = c.interleave(lambda: subject(root), lambda: baseline(root),
                                              repeats, "resume")
        return c.result("resume", 5, f"--eval-resume of a finished {N}-trial run vs {N} "
                        "plain parametrized tests", sub, base, TARGET,
                        subject_samples=subs, baseline_samples=bases)
    finally:
        if not c.keep_tmp():
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
