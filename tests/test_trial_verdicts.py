"""How ONE trial is classified (issue 18, items 1 and 6; docs/running.md "Statuses"): what the
agent causes is judged. A verify that times out, dies of a signal, raises, or writes a reward
that is not a finite number is a judged failure (reward 0, the cause in the message and in
verify.json's ``verify_problem``); only a verify program missing from the experiment itself is
an ``error``. Each case through a real pytest session, serial and with two xdist workers."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import evalrun
from conftest import VERIFY, Suite


def strict_json(path: Path) -> Any:
    """``path``'s JSON, refusing NaN and Infinity (which are not JSON)."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{path} holds {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def all_strict(*roots: Path) -> int:
    n = 0
    for root in roots:
        for path in root.rglob("*.json"):
            if {"workspace", "artifacts", "verifier", "agent-home"} & set(path.parts):
                continue  # the agent's and verify's own files
            strict_json(path)
            n += 1
    return n


def _refuse(name: str) -> Any:
    raise AssertionError(f"{name} is not JSON")


def task(name: str, verify: object, prompt: str = "WRITE answer.txt ok", **extra: Any) -> dict:
    return {"name": name, "prompt": prompt, "fixture": "fixtures/basic", "verify": verify,
            **extra}


def verify_script(suite: Suite, name: str, body: str) -> list[str]:
    suite.write(name, body)
    return [sys.executable, str(suite.root / name)]


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_what_verify_does_on_the_agents_work_is_judged(suite: Suite, workers: list[str]) -> None:
    hang = verify_script(suite, "hang.py", "import time\ntime.sleep(60)\n")
    suite.write("helpers.py", """
        def crash(ctx):
            import broken_module_the_agent_left  # noqa: F401

        def ok(ctx):
            return 1.0
    """)
    suite.experiment(tasks=[
        task("hangs", hang, verify_timeout=1),
        task("signal", "kill -9 $$"),
        task("raises", {"python": "helpers:crash"}),
        task("garbage", 'echo not-a-number > "$EVALRUN_VERIFIER_DIR/reward.txt"'),
        task("good", VERIFY),
    ])
    result = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider", *workers,
                                                 timeout=300)
    result.assert_outcomes(passed=1, failed=4)
    expect = {"hangs": ("timeout", "timed out after 1s"),
              "signal": ("crashed", "signal"),
              "raises": ("crashed", "raised"),
              "garbage": ("bad_reward", "reward.txt")}
    for name, (problem, words) in expect.items():
        meta = suite.meta("base", name)
        assert meta["status"] == "failed" and meta["reward"] == 0.0, meta
        assert meta["error_kind"] is None
        assert meta["failure_kind"] == f"verify_{problem}"
        assert words in meta["message"], meta["message"]
        verify = json.loads((suite.trial_dir("base", name, 1) / "verify.json").read_text())
        assert verify["verify_problem"] == problem and verify["passed"] is False
        assert verify["status"] == "failed" and verify["reward"] == 0.0
    summary = json.loads((suite.run_dirs()[-1] / "summary.json").read_text())
    totals = summary["experiments"][0]["totals"]
    assert (totals["passed"], totals["failed"], totals["errors"]) == (1, 4, 0)
    # Harbor's view: a judged failure with the verifier's exception, reward 0 (as Harbor does)
    results = {p.parent.name: json.loads(p.read_text())
               for p in (suite.root / "jobs").glob("*/*/result.json")}
    kinds = sorted(r["exception_info"]["exception_type"] for r in results.values()
                   if r["exception_info"])
    assert kinds == ["VerifierCrashedError", "VerifierCrashedError", "VerifierOutputParseError",
                     "VerifierTimeoutError"]
    assert all(r["verifier_result"]["rewards"]["reward"] in (0.0, 1.0) for r in results.values())


def test_a_verify_program_missing_from_the_experiment_is_an_error(suite: Suite) -> None:
    suite.write("helpers.py", "def ok(ctx):\n    return True\n")
    suite.write("broken_verifier.py", "def verify(ctx)\n    return True\n")
    suite.experiment(tasks=[
        task("no-program", ["no-such-verifier-xyz", "--check"]),
        task("no-shell-program", "no-such-verifier-xyz --check"),
        task("no-path", [str(suite.root / "tools" / "verify.sh")]),
        task("no-callable", {"python": "helpers:no_such_function"}),
        task("no-module", {"python": "no_such_module_xyz:verify"}),
        task("syntax-error", {"python": "broken_verifier:verify"}),
        task("good", VERIFY),
    ])
    result = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=1, errors=6)
    for name in ("no-program", "no-shell-program", "no-path", "no-callable", "no-module",
                 "syntax-error"):
        meta = suite.meta("base", name)
        assert meta["status"] == "error" and meta["error_kind"] == "verify_missing", meta
        assert meta["reward"] is None


def test_a_python_verifier_that_cannot_import_the_agents_code_is_judged(suite: Suite) -> None:
    """The verifier imports the agent's module (the workspace is on its path, last): when the
    agent left it broken or removed it, importing the verifier fails on the agent's work."""
    suite.write("checks.py", "import solution\n\ndef verify(ctx):\n"
                "    return solution.answer() == 42\n")
    suite.write("fixtures/basic/solution.py", "def answer():\n    return 0\n")
    breaker = verify_script(suite, "breaker.py",
                            "import os, sys\nif os.environ['EVALRUN_TASK'] == 'broken':\n"
                            "    open('solution.py', 'w').write('def answer(:\\n')\n"
                            "else:\n    os.remove('solution.py')\n")
    suite.experiment(
        variants={"breaker": {"agent": {"command": breaker}}},
        tasks=[task("broken", {"python": "checks:verify"}),
               task("removed", {"python": "checks:verify"})],
    )
    result = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(failed=2)
    for name in ("broken", "removed"):
        meta = suite.meta("breaker", name)
        assert meta["status"] == "failed" and meta["reward"] == 0.0, meta
        assert meta["failure_kind"] == "verify_crashed", meta


def test_a_verify_program_the_agent_deleted_is_the_agents_failure(suite: Suite) -> None:
    suite.write("fixtures/basic/check.sh", "#!/bin/sh\ngrep -q ok answer.txt\n").chmod(0o755)
    suite.write("fixtures/basic/checks/run.sh", "#!/bin/sh\ngrep -q ok answer.txt\n").chmod(
        0o755)
    delete = verify_script(suite, "deleter.py", """
        import os, shutil
        open("answer.txt", "w").write("ok\\n")
        os.remove("check.sh")
        shutil.rmtree("checks")
    """)
    suite.experiment(
        variants={"deleter": {"agent": {"command": delete}}},
        tasks=[task("argv", ["./check.sh"]), task("shell", "./check.sh"),
               task("nested", "sh checks/run.sh")],
    )
    result = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(failed=3)
    for name in ("argv", "shell", "nested"):
        meta = suite.meta("deleter", name)
        assert meta["status"] == "failed" and meta["reward"] == 0.0, meta
        assert meta["error_kind"] is None
    for name in ("argv", "shell"):
        meta = suite.meta("deleter", name)
        assert meta["failure_kind"] == "verify_missing", meta
        assert "check.sh" in meta["message"] and "workspace" in meta["message"]
    # the program verify starts (sh) is there: what it could not find is the agent's doing
    assert suite.meta("deleter", "nested")["failure_kind"] == "verify_rejected"


BAD_REWARDS = {
    "infinity": b"Infinity\n",
    "overflow": b"1e309\n",
    "inf": b"inf\n",
    "minus-inf": b"-inf\n",
    "nan": b"NaN\n",
    "digits": b"1" * 400 + b"\n",
    "not-utf8": b"\xff\xfe1.0\n",
}
BAD_JSON_REWARDS = {
    "json-nested": b"[" * 200_000 + b"]" * 200_000,
    "json-nan": b'{"reward": NaN}',
    "json-inf": b'{"reward": Infinity, "style": 1}',
    "json-overflow": b'{"reward": 1e309}',
    "json-digits": b'{"reward": ' + b"9" * 400 + b"}",
    "json-not-utf8": b'{"reward": 1.0, "\xff": 1}',
}


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_reward_that_is_not_a_finite_number_is_never_a_pass(
    suite: Suite, workers: list[str]
) -> None:
    tasks = []
    for name, data in {**BAD_REWARDS, **BAD_JSON_REWARDS}.items():
        target = "reward.json" if name.startswith("json") else "reward.txt"
        (suite.root / "rewards").mkdir(exist_ok=True)
        (suite.root / "rewards" / name).write_bytes(data)
        tasks.append(task(name, ["cp", str(suite.root / "rewards" / name),
                                 "{verifier_dir}/" + target]))
    suite.experiment(tasks=tasks)
    result = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider", *workers,
                                                 timeout=300)
    result.assert_outcomes(failed=len(tasks))
    assert "internal" not in result.stdout.str()
    for t in tasks:
        meta = suite.meta("base", t["name"])
        assert meta["status"] == "failed" and meta["reward"] == 0.0, meta
        assert meta["failure_kind"] == "verify_bad_reward", meta
        assert "reward" in meta["message"]
        assert all(math.isfinite(v) for v in meta["rewards"].values())
    assert all_strict(suite.results(), suite.root / "jobs") > 4 * len(tasks)
    for jsonl in (suite.run_dirs()[-1] / "variants").rglob("*.jsonl"):
        if "artifacts" not in jsonl.parts:
            for row in jsonl.read_text().splitlines():
                json.loads(row, parse_constant=_refuse)
    for cmd in (["report", "-o", "report.html"], ["check"], ["show"],
                ["export", "--format", "jsonl"]):
        r = evalrun(*cmd, cwd=suite.root)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
    export = evalrun("export", "--format", "jsonl", cwd=suite.root).stdout
    for row in export.splitlines():
        json.loads(row, parse_constant=_refuse)


def test_a_verify_timeout_is_not_retried(suite: Suite) -> None:
    hang = verify_script(suite, "hang.py", "import time\ntime.sleep(60)\n")
    suite.experiment(retries=2, tasks=[task("hangs", hang, verify_timeout=1)])
    result = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(failed=1)
    meta = suite.meta("base", "hangs")
    assert meta["status"] == "failed" and meta["attempt"] == 1 and meta["attempts"] == []
    assert not (suite.trial_dir("base", "hangs", 1) / "attempts").exists()


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_an_agent_cannot_make_its_trial_unjudged_by_its_exit_status(
    suite: Suite, workers: list[str]
) -> None:
    """0.2.0 took a shell agent's exit 126/127 and a ``python:`` agent's exit 71 as "agent
    missing" (an error, out of the rate) even when the agent ran: an agent failing a task could
    exit 127 and drop the trial. Now only a program that is really absent is."""
    suite.write("helpers.py", """
        import pathlib, sys

        def quitter(ctx):
            (ctx.workspace / "answer.txt").write_text("nope\\n")
            sys.exit(71)
    """)
    agent = f"{sys.executable} {suite.root / 'agent.py'}"
    suite.experiment(
        variants={
            "exit-127": {"agent": {"command": f"{agent}; exit 127"}},
            "exit-126": {"agent": {"command": f"{agent}; exit 126"}},
            "exit-71": {"agent": {"python": "helpers:quitter"}},
            "absent": {"agent": {"command": "no-such-agent-xyz --go"}},
            "absent-py": {"agent": {"python": "helpers:no_such_agent"}},
        },
        tasks=[task("t", VERIFY, prompt="WRITE answer.txt nope")],
    )
    result = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider", *workers,
                                                 timeout=300)
    result.assert_outcomes(failed=3, errors=2)
    for variant in ("exit-127", "exit-126", "exit-71"):
        meta = suite.meta(variant, "t")
        assert meta["status"] == "failed" and meta["error_kind"] is None, (variant, meta)
        assert meta["failure_kind"] == "verify_rejected"
    for variant in ("absent", "absent-py"):
        assert suite.meta(variant, "t")["error_kind"] == "agent_missing"
