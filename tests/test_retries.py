"""retries: (errors retried inside the trial) and --eval-resume --eval-retry STATUSES."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import VERIFY, Suite

#: A setup step that fails until it has run ``n`` times (counted in a file outside the trial).
FLAKY_SETUP = (
    "import os, sys; p = os.environ['MY_COUNTER']; "
    "n = int(open(p).read()) if os.path.exists(p) else 0; open(p, 'w').write(str(n + 1)); "
    "sys.exit(0 if n + 1 >= int(os.environ['MY_SUCCEED_AT']) else 3)"
)


def _flaky(suite: Suite, succeed_at: int, retries: int, where: str = "top") -> Path:
    counter = suite.shared / "counter.txt"
    variant: dict[str, object] = {
        "setup": [sys.executable, "-c", FLAKY_SETUP],
        "env": {"MY_COUNTER": str(counter), "MY_SUCCEED_AT": str(succeed_at)},
    }
    task: dict[str, object] = {
        "name": "good",
        "prompt": "WRITE answer.txt ok",
        "fixture": "fixtures/basic",
        "verify": VERIFY,
    }
    top: dict[str, object] = {}
    if where == "top":
        top["retries"] = retries
    elif where == "variant":
        variant["retries"] = retries
    else:
        task["retries"] = retries
    suite.experiment(variants={"base": variant}, tasks=[task], **top)
    return counter


@pytest.mark.parametrize("where", ["top", "variant", "task"])
def test_an_error_is_retried_inside_the_trial(suite: Suite, where: str) -> None:
    counter = _flaky(suite, succeed_at=3, retries=2, where=where)
    result = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=1)
    assert counter.read_text() == "3"
    meta = suite.meta("base", "good")
    assert meta["status"] == "passed" and meta["attempt"] == 3
    assert [
        (a["attempt"], a["status"], a["error_kind"], a["rerun_reason"]) for a in meta["attempts"]
    ] == [
        (1, "error", "setup_failed", "retries"),
        (2, "error", "setup_failed", "retries"),
    ]
    trial = suite.trial_dir("base", "good", 1)
    for k in (1, 2):  # every attempt's files are kept
        earlier = json.loads((trial / "attempts" / str(k) / "meta.json").read_text())
        assert earlier["status"] == "error" and earlier["attempt"] == k
        assert (trial / "attempts" / str(k) / "setup-output.txt").exists()
    summary = json.loads((suite.run_dirs()[-1] / "summary.json").read_text())
    assert (
        summary["totals"]["passed"] == 1 and summary["totals"]["errors"] == 0
    )  # the last attempt counts


def test_retries_run_out(suite: Suite) -> None:
    counter = _flaky(suite, succeed_at=5, retries=1)
    result = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    assert counter.read_text() == "2"  # the first attempt and one retry
    meta = suite.meta("base", "good")
    assert meta["status"] == "error" and meta["attempt"] == 2


def test_judged_outcomes_are_not_retried(suite: Suite) -> None:
    suite.experiment(retries=3)
    result = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    assert suite.meta("base", "bad")["attempt"] == 1
    assert not (suite.trial_dir("base", "bad", 1) / "attempts").exists()


def test_bad_retries_value_names_file_and_line(suite: Suite) -> None:
    path = suite.experiment()
    text = path.read_text().replace(
        '"experiment": "exp",', '"experiment": "exp",\n  "retries": 11,'
    )
    path.write_text(text)
    result = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        ["*exp.eval.yaml:3: 'retries' at the top level must be an integer from 0 to 10*"]
    )


def test_eval_retry_reruns_failures_in_the_resumed_run(suite: Suite) -> None:
    suite.experiment(trials=2)
    first = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider", "--eval-run-id=r1")
    first.assert_outcomes(passed=2, failed=2)
    passed_meta = suite.meta("base", "good", 1)
    again = suite.pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--eval-run-id=r1", "--eval-resume", "--eval-retry=failed"
    )
    again.assert_outcomes(passed=2, failed=2)
    again.stdout.fnmatch_lines(
        [
            "*4 trials: 2 passed, 2 failed, 0 timed out, 0 errors; 2 resumed; 2 retried",
            "note: 2 judged trial(s) were run again (--eval-retry)*biases pass rates upward",
        ]
    )
    summary = json.loads((suite.run_dirs()[-1] / "summary.json").read_text())
    assert summary["totals"]["rerun_judged"] == 2 and summary["totals"]["retried"] == 2
    assert "biases pass rates upward" in (suite.run_dirs()[-1] / "summary.md").read_text()
    assert suite.meta("base", "good", 1) == passed_meta  # passed trials stand
    for n in (1, 2):
        meta = suite.meta("base", "bad", n)
        assert meta["attempt"] == 2 and not meta["resumed"]
        assert meta["attempts"][0]["status"] == "failed"
        assert meta["attempts"][0]["rerun_reason"] == "--eval-retry"
        assert (suite.trial_dir("base", "bad", n) / "attempts" / "1" / "stdout.txt").exists()
    # a plain resume afterwards reruns nothing
    third = suite.pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--eval-run-id=r1", "--eval-resume"
    )
    third.assert_outcomes(passed=2, failed=2)
    assert suite.meta("base", "bad", 1)["attempt"] == 2


def test_eval_retry_needs_resume(suite: Suite) -> None:
    suite.experiment()
    result = suite.pytester.runpytest_subprocess("--eval-retry=failed")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--eval-retry*--eval-resume*"])
    bad = suite.pytester.runpytest_subprocess("--eval-resume", "--eval-retry=passed")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*failed, timeout, error*"])


def test_an_interrupted_attempt_move_is_finished_later(suite: Suite, tmp_path: Path) -> None:
    """A crash between parking an attempt and moving it leaves ``.<NNN>.attempt``: the next
    start finishes the move and loses nothing."""
    from pytest_evalrun.outcome import TrialOutcome
    from pytest_evalrun.store.trialdir import TrialDir

    trial = tmp_path / "trials" / "001"
    parked = tmp_path / "trials" / ".001.attempt"
    parked.mkdir(parents=True)
    (parked / "meta.json").write_text(
        json.dumps({"status": "error", "error_kind": "worker_crashed"})
    )
    (parked / "stdout.txt").write_text("earlier output")
    outcome = TrialOutcome("e", "v", "t", 1, "error")
    TrialDir(trial).start(outcome, "prompt", "--eval-resume")
    assert not parked.exists()
    assert (trial / "attempts" / "1" / "stdout.txt").read_text() == "earlier output"
    assert outcome.attempt == 2 and outcome.attempts[0]["error_kind"] == "worker_crashed"
