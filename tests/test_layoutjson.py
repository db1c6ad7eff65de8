"""The typed records of pytest_evalrun/layoutjson.py say what the writers really write: every
key of a real session's summary.json, run.json and meta.json (and of a merged run's run.json)
is declared, at every depth, and every declared key is written (but those written only in some
cases, listed here)."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints, is_typeddict

from conftest import GOOD_AND_BAD, Suite

from pytest_evalrun import layoutjson as lj
from pytest_evalrun.store.layout import load_object
from pytest_evalrun.store.merge import merge

#: Keys written only in some cases: (record, key) -> when.
CONDITIONAL = {
    ("RunSession", "shard"): "a --eval-shard session",
    ("RunJson", "hosts"): "a merged run",
    ("RunJson", "merged_from"): "a merged run",
    ("RunJson", "updated_at"): "not in a merged run's run.json before it is written",
    ("Verdict", "regressions"): "with --eval-baseline-run",
    ("ExperimentSummary", "regression"): "with --eval-baseline-run",
    ("StepRecord", "isolation_failed"): "a step whose sandbox failed",
    ("StepRecord", "infra_error"): "a step the environment failed",
}


def _typeddicts(hint: Any) -> list[Any]:
    """The TypedDicts a value of type ``hint`` holds directly or in a list/dict/union."""
    if is_typeddict(hint):
        return [hint]
    origin = get_origin(hint)
    args = get_args(hint)
    if origin in (Union, types.UnionType):
        return [t for a in args for t in _typeddicts(a)]
    if origin is list:
        return _typeddicts(args[0])
    if origin is dict:
        return _typeddicts(args[1])
    return []


def check(value: Any, record: Any, where: str, seen: dict[str, set[str]]) -> list[str]:
    """Problems of ``value`` against the TypedDict ``record``: undeclared keys, at any depth.
    ``seen`` collects the keys written per record name."""
    problems = []
    if not isinstance(value, dict):
        return [f"{where}: {record.__name__} is not an object: {value!r}"]
    hints = get_type_hints(record)
    seen.setdefault(record.__name__, set()).update(value)
    for key, item in value.items():
        if key not in hints:
            problems.append(f"{where}.{key}: not declared in {record.__name__}")
            continue
        nested = _typeddicts(hints[key])
        if not nested or item is None:
            continue
        (inner,) = nested
        origin = get_origin(hints[key])
        if origin in (Union, types.UnionType):
            origin = get_origin(next(a for a in get_args(hints[key]) if a is not type(None)))
        if origin is list:
            for i, element in enumerate(item):
                problems += check(element, inner, f"{where}.{key}[{i}]", seen)
        elif origin is dict:
            for name, element in item.items():
                problems += check(element, inner, f"{where}.{key}.{name}", seen)
        else:
            problems += check(item, inner, f"{where}.{key}", seen)
    return problems


def never_written(seen: dict[str, set[str]]) -> list[str]:
    """Declared keys no record of the session had (but the conditional ones)."""
    missing = []
    for name, keys in seen.items():
        record = getattr(lj, name)
        for key in get_type_hints(record):
            if key not in keys and (name, key) not in CONDITIONAL:
                missing.append(f"{name}.{key}")
    return missing


def test_every_key_written_is_declared_and_every_declared_key_written(
    suite: Suite, tmp_path: Path
) -> None:
    good, bad = (dict(t) for t in GOOD_AND_BAD)
    good["min_pass_rate"] = 0.9
    bad["min_pass_rate"] = 1.0  # fails its gate
    # passes on trial 1 only: a flaky cell
    flip = {**good, "name": "flip", "verify": 'test "$EVALRUN_TRIAL" -eq 1'}
    tasks = [good, bad, flip]
    suite.experiment(variants={"one": {}, "two": {}}, tasks=tasks, trials=2)
    shards = []
    for k in (1, 2):
        machine = tmp_path / f"m{k}"
        result = suite.pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", f"--eval-shard={k}/2", "--eval-run-id=r1",
            f"--eval-results={machine / 'results'}", f"--eval-jobs={machine / 'jobs'}",
            "--eval-min-pass-rate=0.4",
        )  # fmt: skip
        assert result.ret in (0, 1), result.stdout.str()
        shards.append(machine)
    run_dir = shards[0] / "results" / "exp" / "r1"
    seen: dict[str, set[str]] = {}
    problems = check(load_object(run_dir / "summary.json"), lj.Summary, "summary", seen)
    problems += check(load_object(run_dir / "run.json"), lj.RunJson, "run", seen)
    metas = sorted(run_dir.glob("variants/*/tasks/*/trials/*/meta.json"))
    assert metas
    for meta in metas:
        problems += check(load_object(meta), lj.MetaJson, str(meta.relative_to(run_dir)), seen)
    (merged,) = merge(shards, tmp_path / "merged")
    assert merged.trials == 12
    problems += check(
        load_object(merged.run_dir / "summary.json"), lj.Summary, "merged summary", seen
    )
    merged_run = load_object(merged.run_dir / "run.json")
    problems += check(merged_run, lj.RunJson, "merged run", seen)
    assert not problems, "\n".join(problems)
    assert not never_written(seen), never_written(seen)
    # what the test walked: each record and its nested records
    assert {"Summary", "ExperimentSummary", "VariantSummary", "CellSummary", "CellGate",
            "GateFailure", "Comparison", "FlakyCell", "GateRule", "Totals", "Verdict",
            "TaskSummary", "Tokens", "RunJson", "RunSession", "RunPlan", "RunGates",
            "GitState", "Selection", "MergedFrom", "MetaJson", "MetricsRecord",
            "StepRecord"} <= set(seen)  # fmt: skip
    assert merged_run["merged_from"] and merged_run["hosts"]


def test_a_regression_section_is_declared(suite: Suite) -> None:
    suite.experiment(variants={"one": {}, "two": {}}, trials=2)
    for args in (["--eval-run-id=base"], ["--eval-run-id=cand", "--eval-baseline-run=base"]):
        result = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
        assert result.ret in (0, 1), result.stdout.str()
    seen: dict[str, set[str]] = {}
    summary = load_object(suite.results() / "exp" / "cand" / "summary.json")
    assert not check(summary, lj.Summary, "summary", seen)
    assert {"RegressionSection", "RegressionVariant"} <= set(seen)
    assert "regressions" in seen["Verdict"] and "regression" in seen["ExperimentSummary"]
    assert not never_written(seen), never_written(seen)


def test_the_checker_finds_an_undeclared_key_at_any_depth() -> None:
    summary = {"verdict": {"failures": [{"variant": "a", "surprise": 1}]}, "extra": 0}
    seen: dict[str, set[str]] = {}
    assert check(summary, lj.Summary, "s", seen) == [
        "s.verdict.failures[0].surprise: not declared in GateFailure",
        "s.extra: not declared in Summary",
    ]
    assert "Summary.schema_version" in never_written(seen)
    assert typing.get_type_hints(lj.CellSummary)["trials"] is int  # inherited GroupFigures
