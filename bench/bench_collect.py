"""Figure 1: ``pytest --co -q`` of one experiment of 10 variants x 1,000 tasks x 10 trials
(100,000 items) vs ``pytest --co -q`` of one function parametrized over 100,000 values.

Run: python bench/bench_collect.py [--repeats N] [--keep]      target ratio <= 1.0
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c

N_VARIANTS, N_TASKS, N_TRIALS = 10, 1000, 10
TARGET = 1.0


def make_suites() -> Path:
    return c.grid_suite("big", variants=N_VARIANTS, tasks=N_TASKS, trials=N_TRIALS,
                        variant_digits=2, task_digits=4, plain=True)


def subject_cmd(root: Path) -> list[str]:
    return c.pytest_cmd("--co", "-q", "exp/big.eval.yaml", *c.eval_args(root, "co"))


def baseline_cmd() -> list[str]:
    return c.pytest_cmd(*c.PLAIN, "--co", "-q", "plain/test_param.py")


def check_counts(root: Path) -> None:
    for cmd, log in ((subject_cmd(root), "collect-subject.log"),
                     (baseline_cmd(), "collect-baseline.log")):
        c.run(cmd, root, log=c.OUT / log)
        tail = (c.OUT / log).read_text().strip().splitlines()[-1]
        expected = f"{N_VARIANTS * N_TASKS * N_TRIALS} tests collected"
        if expected not in tail:
            raise SystemExit(f"unexpected collection result: {tail!r} for {cmd}")


def main() -> dict[str, object]:
    repeats = c.arg_repeats(3)
    root = make_suites()
    try:
        check_counts(root)
        sub, base, subs, bases = c.interleave(
            lambda: c.run(subject_cmd(root), root, log=c.OUT / "collect-subject.log"),
            lambda: c.run(baseline_cmd(), root, log=c.OUT / "collect-baseline.log"),
            repeats, "collect")
        return c.result("collect", 1, "--co -q, 100,000 trial items vs 100,000 parametrized",
                        sub, base, TARGET, subject_samples=subs, baseline_samples=bases)
    finally:
        if not c.keep_tmp():
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
