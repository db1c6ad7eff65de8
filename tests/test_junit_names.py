"""Unit tests of report/junit.py's testcase names (no pytester)."""

from __future__ import annotations

import itertools

from pytest_evalrun.experiment.names import slugify
from pytest_evalrun.outcome import TrialOutcome
from pytest_evalrun.report import junit


def outcome(experiment: str, variant: str, task: str, trial: int) -> TrialOutcome:
    return TrialOutcome(
        experiment=experiment,
        variant=variant,
        task=task,
        trial=trial,
        status="passed",
        experiment_slug=slugify(experiment),
        variant_slug=slugify(variant),
        task_slug=slugify(task),
    )


def test_classname_is_experiment_variant_task_slugs_with_inner_dots_replaced() -> None:
    classname, name = junit.testcase_names(outcome("rel.v1", "gpt-4.1", "Gamma task", 3))
    assert classname == "rel_v1.gpt-4_1.Gamma-task"
    assert name == "rel.v1 / gpt-4.1 / Gamma task / trial 3"


def test_names_are_unique_without_the_classname() -> None:
    # xunit-viewer's console mode and Ant's junitreport show only the name: every trial of every
    # experiment, variant and task must still be told apart, also where the parts themselves
    # contain spaces, dots or the words of the separator.
    experiments = ["fix", "fix build", "fix.build"]
    variants = ["base", "with-skills", "base trial 1", "trial"]
    tasks = ["add", "fix-add", "add trial 1", "x - y", "a.b"]
    cases = [
        junit.testcase_names(outcome(e, v, t, n))
        for e, v, t, n in itertools.product(experiments, variants, tasks, (1, 2, 3, 10))
    ]
    names = [name for _, name in cases]
    assert len(set(names)) == len(names) == 3 * 4 * 5 * 4
