"""Figures 2 and 7: wall time of 200 trials (agent and verify ``true``, a 10-file fixture)
run serially by pytest (``-p no:xdist``) vs a bash loop doing the same work per trial
(bench/baseline_trials.sh: copy fixture, git init/add/commit, agent, git diff, verify,
meta/verify/metrics JSON).

Run: python bench/bench_serial.py [--repeats N] [--keep] [--sandbox auto|bwrap|none]
Targets: unsandboxed (``--sandbox none``, figure 2) <= 0.9 x the loop (issue 23); with the
sandbox on (the default where bubblewrap runs: every step in its own bwrap; figure 7)
<= 1.10 x the unsandboxed loop, and <= 1.0 x the same loop running each step in bwrap with the
same view (issue 23; ``serial-sandbox-vs-bwrap-loop``). The three are measured interleaved
(loop, bwrap loop, pytest, ...), best of N each.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c

N_VARIANTS, N_TASKS, N_TRIALS = 2, 10, 10
N = N_VARIANTS * N_TASKS * N_TRIALS

def arg_sandbox() -> str:
    for i, a in enumerate(sys.argv):
        if a == "--sandbox" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith("--sandbox="):
            return a.split("=", 1)[1]
    return "auto"


SANDBOX = arg_sandbox()
TARGET = 0.9 if SANDBOX == "none" else 1.10
#: Sandboxed: the plugin vs the same loop with each step in bwrap (issue 23).
TARGET_BWRAP_LOOP = 1.0


def make_suite() -> Path:
    return c.grid_suite("serial", variants=N_VARIANTS, tasks=N_TASKS, trials=N_TRIALS,
                        task_digits=2)


def subject(root: Path) -> float:
    cmd = c.pytest_cmd("-p", "no:xdist", "-q", "exp", "--eval-sandbox", SANDBOX,
                       *c.eval_args(root, "serial"))
    dt = c.run(cmd, root, log=c.OUT / "serial-subject.log")
    last = (c.OUT / "serial-subject.log").read_text().strip().splitlines()[-1]
    if f"{N} passed" not in last:
        raise SystemExit(f"unexpected result: {last!r}")
    return dt


def baseline(root: Path, bwrap: str | None = None) -> float:
    out = root / "bash-out"
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["bash", str(c.BENCH / "baseline_trials.sh"), str(root / "exp/fixtures/app"),
           str(out), str(N), *([bwrap] if bwrap else [])]
    log = "serial-baseline-bwrap.log" if bwrap else "serial-baseline.log"
    return c.run(cmd, root, log=c.OUT / log)


def bwrap_path() -> str | None:
    """The bwrap the plugin's sandbox uses here (None: no sandbox)."""
    from pytest_evalrun.trial.bwrapprobe import probe

    return probe().path if SANDBOX != "none" else None


def main() -> dict[str, object]:
    repeats = c.arg_repeats(3)
    root = make_suite()
    bwrap = bwrap_path()
    boxed: list[float] = []

    def baselines() -> float:
        if bwrap:
            boxed.append(baseline(root, bwrap))
            print(f"  [bwrap loop] {boxed[-1]:.3f}", flush=True)
        return baseline(root)

    try:
        sub, base, subs, bases = c.interleave(lambda: subject(root), baselines,
                                              repeats, "serial")
        if bwrap:
            c.result("serial-sandbox-vs-bwrap-loop", 7,
                     f"{N} trials serial (--eval-sandbox {SANDBOX}) vs the bash loop with each "
                     "step in bwrap (issue 23)", sub, min(boxed), TARGET_BWRAP_LOOP,
                     subject_samples=subs, baseline_samples=boxed,
                     subject_ms_per_trial=round(sub / N * 1000, 2),
                     baseline_ms_per_trial=round(min(boxed) / N * 1000, 2))
        return c.result("serial" if SANDBOX == "none" else f"serial-sandbox-{SANDBOX}",
                        2 if SANDBOX == "none" else 7,
                        f"{N} trials serial (--eval-sandbox {SANDBOX}) vs bash loop doing the "
                        "same work (unsandboxed)",
                        sub, base, TARGET, subject_samples=subs, baseline_samples=bases,
                        subject_ms_per_trial=round(sub / N * 1000, 2),
                        baseline_ms_per_trial=round(base / N * 1000, 2))
    finally:
        if not c.keep_tmp():
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
