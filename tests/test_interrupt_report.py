"""Ctrl-C is not quiet: the summary says the run was interrupted, counts the trials that were
running as interrupted errors (not "not run"), and names the command that finishes the run;
that command works, and its session shows each reused failure in one line, not its old
output again."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from conftest import VERIFY, Suite
from test_e2e_runs import counter_lines, pytest_cmd, slow_agents


def _done(meta: Path) -> bool:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(meta.read_text())["status"] in ("passed", "failed")
    return False


def test_ctrl_c_says_so_counts_the_running_trials_and_names_the_command(suite: Suite) -> None:
    counter = suite.shared / "starts.txt"
    tasks = [
        {"name": "bad", "prompt": "WRITE answer.txt nope", "fixture": "fixtures/basic",
         "verify": VERIFY},
        {"name": "quick", "prompt": "WRITE answer.txt ok", "fixture": "fixtures/basic",
         "verify": VERIFY},
        {"name": "slow", "prompt": "SLEEP 3600\nWRITE answer.txt ok", "fixture": "fixtures/basic",
         "verify": VERIFY, "trials": 2},
    ]  # fmt: skip
    suite.experiment(tasks=tasks)
    env = {**os.environ, "AGENT_COUNTER": str(counter)}
    proc = subprocess.Popen(
        pytest_cmd("-n", "2", "-rA"),
        cwd=suite.root,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        trials = suite.results() / "exp"
        while True:  # a slow trial running (the scheduler decides whether both), the others done
            done = [m for m in trials.glob("*/variants/base/tasks/*/trials/*/meta.json")
                    if _done(m)]  # fmt: skip
            if slow_agents(suite) and len(done) == 2:
                break
            assert time.monotonic() < deadline and proc.poll() is None, counter_lines(counter)
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal
        out = proc.communicate(timeout=600)[0].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for agent in slow_agents(suite):
            with contextlib.suppress(psutil.Error):
                agent.kill()
    assert proc.returncode == 2, out
    run_id = suite.run_dirs()[0].name
    summary = json.loads((suite.run_dirs()[0] / "summary.json").read_text())
    exp = summary["experiments"][0]
    # the running trials are interrupted errors, not "not run" (0.2.0: 0 errors, 2 not run)
    stopped, not_run = exp["totals"]["errors"], exp["totals"]["not_run"]
    assert stopped >= 1 and stopped + not_run == 2, exp["totals"]
    assert exp["variants"][0]["error_kinds"] == {"interrupted": stopped}
    head = f"{2 + stopped} trials: 1 passed, 1 failed, 0 timed out, {stopped} error"
    head += "s" if stopped > 1 else ""
    head += f"; {not_run} not run" if not_run else ""
    assert f"experiment exp (run {suite.run_dirs()[0].name}): {head}\n" in out, out
    lines = out.splitlines()
    said = [line for line in lines if line.startswith("interrupted: ")]
    trials_word = "trial" if stopped == 1 else "trials"
    expected = f"interrupted: {stopped} {trials_word} stopped while running (errors: interrupted)"
    if not_run:
        expected += f"; {not_run} not started"
    assert said == [expected], out
    command = [line for line in lines if line.startswith("finish the run with: ")]
    assert len(command) == 1, out
    argv = shlex.split(command[0].removeprefix("finish the run with: "))
    assert argv[0] == "pytest" and argv[-3:] == ["--eval-resume", "--eval-run-id", run_id]

    # the command finishes the run; the reused failure is one line, its output not repeated
    env["AGENT_NO_SLEEP"] = "1"
    r = subprocess.run(
        [sys.executable, "-m", *argv], cwd=suite.root, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 1, r.stdout  # the "bad" trial still failed
    run = json.loads((suite.run_dirs()[0] / "run.json").read_text())
    assert run["status"] == "completed"
    assert "--- output (tail) ---" not in r.stdout
    reused = [line for line in r.stdout.splitlines() if "(recorded earlier, reused)" in line]
    assert len(reused) == 1, r.stdout  # the failure section holds this one line
    assert re.search(r"FAILED \(recorded earlier, reused\): base / bad / trial 1: ", r.stdout)
    assert "interrupted:" not in r.stdout
