"""Per-step cost of the bubblewrap sandbox: ``true`` run N times, directly and sandboxed.

    python bench/bench_sandbox.py [N]

Prints ms per step for: a bare ``Popen(["true"]).wait()``, ``run_step(["true"])``, and
``run_step`` of the same ``true`` inside the sandbox a trial step gets (workspace, artifacts,
hidden results root and credential stores), with network on and off.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pytest_evalrun.trial.bwrapprobe import probe
from pytest_evalrun.trial.process import run_step
from pytest_evalrun.trial.sandbox import Sandbox, SandboxPolicy


def per_step(fn: Callable[[], object], n: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1000


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    found = probe()
    if not found.available:
        sys.exit(f"bwrap cannot run here: {found.reason}")
    root = Path(tempfile.mkdtemp(prefix="evalrun-bench-sandbox-"))
    trial = root / "results" / "run" / "trials" / "001"
    ws, art = trial / "workspace", trial / "artifacts"
    ws.mkdir(parents=True)
    art.mkdir()
    out = root / "out.txt"
    env = dict(os.environ)

    def policy(network: bool) -> SandboxPolicy:
        return SandboxPolicy(
            mode="bwrap",
            workspace=ws,
            writable=(art,),
            read=(root, trial),
            hide=(root / "results",),
            network=network,
        )

    def boxed(network: bool) -> Callable[[], object]:
        def step() -> object:
            box = Sandbox(policy(network))  # built per step, as a trial would
            with box.launch(["true"], ws) as go:
                return run_step(go.argv, cwd=go.cwd, env=env, timeout=60, output=out,
                                pass_fds=go.pass_fds)  # fmt: skip

        return step

    rows = {
        "Popen(true).wait()": lambda: subprocess.Popen(["true"]).wait(),
        "run_step(true)": lambda: run_step(["true"], cwd=ws, env=env, timeout=60, output=out),
        "run_step(bwrap true), network on": boxed(True),
        "run_step(bwrap true), network off": boxed(False),
    }
    print(f"bwrap {found.path} ({found.version}), {n} runs each")
    for name, fn in rows.items():
        print(f"{name:38s} {per_step(fn, n):7.2f} ms/step")


if __name__ == "__main__":
    main()
