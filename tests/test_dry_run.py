"""--eval-dry-run: what a run would cost, from the index's history, before anything is spent
(issue 21). Through real pytest sessions (serial and -n 2): the estimate per variant, the
budget, -k; no trial runs, nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_evalrun.outcome import Metrics, TrialOutcome
from pytest_evalrun.store.costhistory import estimate, read_history
from pytest_evalrun.store.index import record_trials
from pytest_evalrun.store.paths import index_db

EXPERIMENT = """\
experiment: costs
trials: 2
variants:
  small:
    agent: "touch {marker}"
  large:
    agent: "touch {marker}"
tasks:
  - name: t1
    prompt: p
    verify: "true"
  - name: t2
    prompt: p
    verify: "true"
"""


def _outcome(variant: str, task: str, trial: int, run: str, cost: float,
             source: str = "gateway") -> TrialOutcome:
    return TrialOutcome(
        experiment="costs", variant=variant, task=task, trial=trial, status="passed",
        experiment_slug="costs", variant_slug=variant, task_slug=task, run_id=run,
        reward=1.0, started_at="2026-12-01T00:00:00Z", finished_at="2026-12-01T00:00:01Z",
        metrics=Metrics(cost_usd=cost, input_tokens=10, output_tokens=1, source=source),
    )


def _history(results: Path) -> None:
    """Two earlier runs: small/t1 at $0.02, small/t2 at $0.04, large/t1 at $0.03 (measured);
    large/t2 never ran; a self-reported $100 claim is no history."""
    outcomes = [
        _outcome("small", "t1", 1, "r1", 0.01), _outcome("small", "t1", 1, "r2", 0.03),
        _outcome("small", "t2", 1, "r1", 0.04),
        _outcome("large", "t1", 1, "r1", 0.03),
        _outcome("large", "t1", 2, "r1", 100.0, source="self_reported"),
    ]
    record_trials(index_db(results), outcomes)


def test_estimate_from_the_index(tmp_path: Path) -> None:
    _history(tmp_path)
    history = read_history(index_db(tmp_path))
    assert history[("costs", "large", "t1")] == [0.03]  # the self-reported claim left out
    found = estimate(
        [("costs", v, t) for v in ("small", "large") for t in ("t1", "t2") for _ in (1, 2)]
        + [("other", "x", "y")],
        history,
    )
    rows = {(r.experiment, r.variant): r for r in found.variants}
    small, large, other = rows["costs", "small"], rows["costs", "large"], rows["other", "x"]
    assert small.cost_usd == pytest.approx(2 * 0.02 + 2 * 0.04) and small.from_cell == 4
    assert small.history == 3
    assert large.cost_usd == pytest.approx(4 * 0.03)
    assert (large.from_cell, large.from_variant) == (2, 2)
    assert other.unknown == 1 and other.cost_usd == 0.0
    assert found.trials == 9 and found.unknown == 1
    assert read_history(tmp_path / "nowhere.db") == {}


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_dry_run_prints_the_estimate_and_runs_nothing(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    marker = pytester.path / "agent-ran"
    pytester.makefile(".eval.yaml", costs=EXPERIMENT.format(marker=marker))
    results = pytester.path / "results"
    _history(results)
    before = sorted(results.rglob("*"))
    r = pytester.runpytest_subprocess("--eval-dry-run", "--eval-budget-usd", "0.2", *workers)
    assert r.ret == 0, r.stdout.str()
    out = r.stdout.str()
    assert "evalrun dry run" in out
    r.stdout.fnmatch_lines([
        "costs/large *4 trials*~$0.12*(2 from their task's history (1 trials); 2 from the "
        "variant's mean over other tasks)*",
        "costs/small *4 trials*~$0.12*(4 from their task's history (3 trials))*",
        "total: 8 trials, estimated ~$0.24",
        "--eval-budget-usd 0.2: the estimate is OVER the budget",
        "dry run: no trial was run, nothing was written",
    ])
    assert not marker.exists()
    after = sorted(results.rglob("*"))
    assert [p for p in after if p not in before] == []  # no run, no run lock
    assert not (pytester.path / "jobs").exists()

    # -k: the selected trials only; within a larger budget
    r = pytester.runpytest_subprocess("--eval-dry-run", "-k", "t1", "--eval-budget-usd", "1",
                                      *workers)
    assert r.ret == 0
    r.stdout.fnmatch_lines(["total: 4 trials, estimated ~$0.10",
                            "*the estimate is within the budget"])
    assert not marker.exists()


def test_dry_run_without_history_says_so(pytester: pytest.Pytester) -> None:
    marker = pytester.path / "agent-ran"
    pytester.makefile(".eval.yaml", costs=EXPERIMENT.format(marker=marker))
    r = pytester.runpytest_subprocess("--eval-dry-run")
    assert r.ret == 0
    r.stdout.fnmatch_lines([
        "total: 8 trials, estimated ~$0.00 plus 8 trials with no cost history",
        "no measured cost of these variants and tasks in *index.db",
    ])
    assert not marker.exists() and not (pytester.path / "results").exists()
