"""finish.py: the gates' inputs as run.json records them, read back exactly or refused with
the field named; the error policy's ini value checked before any trial runs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cli_helpers import run_pytest
from conftest import Suite

from pytest_evalrun.finish import Gates, GatesError, Plan, RegressionGate, gate_exit
from pytest_evalrun.report.regression import TaskCounts


def test_gates_round_trip_through_json() -> None:
    gates = Gates(
        min_pass_rate=0.4,
        baseline_variant="b",
        alpha=0.1,
        errors="exclude",
        retry=("failed", "error"),
        regression=RegressionGate(
            ref="latest",
            run_id="r1",
            counts={"a": {"t": TaskCounts(2, 3, 1)}},
            notes=("the baseline run is partial",),
            rerun_judged=4,
        ),
    )
    data = json.loads(json.dumps(gates.to_json()))
    assert data["retry"] == ["error", "failed"]
    assert data["baseline_run"]["counts"] == {"a": {"t": [2, 3, 1]}}
    again = Gates.from_json(data)
    assert again.to_json() == gates.to_json()
    assert again.regression is not None and again.regression.counts["a"]["t"] == (2, 3, 1)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"alpha": 2}, "gates.alpha"),
        ({"alpha": True}, "gates.alpha"),
        ({"min_pass_rate": "high"}, "gates.min_pass_rate"),
        ({"min_pass_rate": 1e309}, "gates.min_pass_rate"),
        ({"errors": "ignore"}, "gates.errors"),
        ({"retry": "failed"}, "gates.retry"),
        ({"baseline_run": {"ref": ""}}, "gates.baseline_run.ref"),
        ({"baseline_run": {"ref": "x", "counts": {"a": {"t": [3, 2, 0]}}}}, "counts['a']['t']"),
        ({"baseline_run": {"ref": "x", "counts": {"a": {"t": [1, -2, 0]}}}}, "counts['a']['t']"),
        ({"baseline_run": {"ref": "x", "counts": []}}, "gates.baseline_run.counts"),
        ({"baseline_run": {"ref": "x", "notes": "partial"}}, "gates.baseline_run.notes"),
        ({"baseline_run": {"ref": "x", "rerun_judged": 1.5}}, "gates.baseline_run.rerun_judged"),
    ],
)
def test_unreadable_gates_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(GatesError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Gates.from_json({**Gates().to_json(), **change})


def test_plan_and_exit() -> None:
    assert Plan.from_json(None) == Plan()
    with pytest.raises(GatesError, match=r"plan\.variants"):
        Plan.from_json({"variants": "a"})
    assert gate_exit({"gated": False, "passed": None}) is None
    assert gate_exit({"gated": True, "passed": True}) == 0
    assert gate_exit({"gated": True, "passed": False}) == 1


def test_a_bad_error_policy_in_the_ini_is_a_usage_error(suite: Suite) -> None:
    suite.experiment(trials=1)
    suite.write("pytest.ini", "[pytest]\nevalrun_errors = sometimes\n")
    done = run_pytest(suite.root)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "evalrun_errors = 'sometimes': use one of count, exclude" in done.stderr
    assert not suite.run_dirs()  # before any trial ran
