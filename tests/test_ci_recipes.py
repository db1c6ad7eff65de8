"""The CI recipes of docs/shards.md and docs/reports.md: valid YAML, shown on the page as they
are, every `pytest` and `evalrun` command line in them accepted by the real argument parsers,
played end to end, and their CI check run by the real action-junit-report (its own code, with
node): green exactly when the gate passed, the failed trials as annotations only."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from gh_junit_action import USES, run_action

from pytest_evalrun.cli.main import build_parser

DOCS = Path(__file__).resolve().parent.parent / "docs"
RECIPES = {
    "github": DOCS / "ci" / "github-actions-shards.yml",
    "gitlab": DOCS / "ci" / "gitlab-shards.yml",
}


def _commands(recipe: dict[str, Any]) -> list[str]:
    """Every shell command of the recipe (GitHub `run:` steps, GitLab `script:` lines)."""
    found: list[str] = []
    jobs = recipe.get("jobs", recipe)  # GitHub: under jobs:; GitLab: at the top
    for job in jobs.values():
        if not isinstance(job, dict):
            continue
        for step in job.get("steps", []):
            if isinstance(step, dict) and "run" in step:
                found.extend(
                    step["run"].splitlines() if "\n" in step["run"].strip() else [step["run"]]
                )
        found.extend(job.get("script", []))
    return [" ".join(c.split()) for c in found if c.strip()]


def _words(command: str) -> list[str]:
    """The command's words with CI expressions and variables made concrete."""
    command = re.sub(r"\$\{\{[^}]*matrix\.shard[^}]*\}\}", "2", command)
    command = re.sub(r"\$\{\{[^}]*\}\}", "42", command)
    command = command.replace("$CI_NODE_INDEX", "2").replace("$CI_NODE_TOTAL", "3")
    command = command.replace("$CI_PIPELINE_ID", "42").replace("$GITHUB_STEP_SUMMARY", "out.md")
    command = command.split(">")[0].split("#")[0]
    return shlex.split(command)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_is_shown_on_the_page_as_it_is(name: str) -> None:
    assert RECIPES[name].read_text() in (DOCS / "shards.md").read_text()


def test_github_recipe() -> None:
    recipe = yaml.safe_load(RECIPES["github"].read_text())
    jobs = recipe["jobs"]
    assert jobs["shard"]["strategy"]["matrix"]["shard"] == [1, 2, 3]
    assert jobs["shard"]["strategy"]["fail-fast"] is False
    assert jobs["merge"]["needs"] == "shard" and jobs["merge"]["if"] == "always()"
    commands = _commands(jobs)
    assert any("--eval-shard ${{ matrix.shard }}/3" in c for c in commands)
    assert any(c.startswith("evalrun merge shards/shard-* --into merged") for c in commands)


def test_gitlab_recipe() -> None:
    recipe = yaml.safe_load(RECIPES["gitlab"].read_text())
    assert recipe["stages"] == ["eval", "merge"]
    shard, merge = recipe["eval-shard"], recipe["eval-merge"]
    assert shard["parallel"] == 3 and shard["stage"] == "eval" and merge["stage"] == "merge"
    assert merge["needs"] == [{"job": "eval-shard", "artifacts": True}]
    commands = _commands(recipe)
    assert any('--eval-shard "$CI_NODE_INDEX/$CI_NODE_TOTAL"' in c for c in commands)
    assert any(c.startswith("evalrun merge shard-* --into merged") for c in commands)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_evalrun_commands_parse(name: str) -> None:
    recipe = yaml.safe_load(RECIPES[name].read_text())
    lines = [c for c in _commands(recipe) if c.startswith("evalrun ")]
    assert len(lines) >= 3
    for line in lines:
        words = _words(line)[1:]
        try:
            build_parser().parse_args(words)
        except SystemExit:  # pragma: no cover - the message says which
            pytest.fail(f"evalrun does not accept: {line}")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_pytest_commands_parse(name: str, pytester: pytest.Pytester) -> None:
    recipe = yaml.safe_load(RECIPES[name].read_text())
    lines = [c for c in _commands(recipe) if c.startswith("pytest ")]
    assert len(lines) == 1
    (pytester.path / "experiments").mkdir()
    words = [w for w in _words(lines[0])[1:]]
    config = pytester.parseconfig(*words)
    assert str(config.getoption("eval_shard")) == ("2/3")
    assert config.getoption("eval_run_id") == "gh-42-42" if name == "github" else "gl-42"
    assert config.getoption("numprocesses") == 4


# --- the recipes played end to end: 3 "machines", the artifacts passed on, the merge job ---

EXAMPLE = Path(__file__).resolve().parent.parent / "example_suite"


def _env(**ci: str) -> dict[str, str]:
    """A CI job's environment: this Python's scripts first (pytest, evalrun), nothing of the
    pytest session running this test."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "EVALRUN_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **ci}


def _play(lines: list[str], cwd: Path, env: dict[str, str]) -> list[int]:
    """Run a job's shell lines (not `pip install`) as the CI would: bash, -e, pipefail."""
    codes = []
    for line in lines:
        if line.strip().startswith("pip install"):
            continue
        done = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", line], cwd=cwd, env=env, capture_output=True,
            text=True, timeout=300,
        )
        codes.append(done.returncode)
        assert done.returncode in (0, 1), f"{line}\n{done.stdout}\n{done.stderr}"
    return codes


def _machine(base: Path, name: str) -> Path:
    """A fresh checkout: the example suite as the recipes' experiments/."""
    root = base / name
    shutil.copytree(EXAMPLE, root / "experiments", ignore=shutil.ignore_patterns("real-agents"))
    return root


def _check_merged(merged: Path, gate_status: int) -> None:
    [summary_file] = list(merged.glob("results/*/*/summary.json"))
    summary = json.loads(summary_file.read_text())
    totals = summary["experiments"][0]["totals"]
    assert totals["trials"] == 24, totals  # every trial of the 3 shards
    run = json.loads((summary_file.parent / "run.json").read_text())
    assert sorted(s["shard"] for s in run["sessions"]) == ["1/3", "2/3", "3/3"]
    assert (merged / "report.html").stat().st_size > 10_000
    # the last line gates: exit 1 exactly when the merged run's gate failed
    assert gate_status == (0 if summary["verdict"]["passed"] else 1)


def _gh(command: str, shard: int) -> str:
    command = re.sub(r"\$\{\{\s*matrix\.shard\s*\}\}", str(shard), command)
    return re.sub(r"\$\{\{[^}]*\}\}", "42", command)


def _junit_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recipe's action-junit-report steps, in order; each names the vendored version."""
    found = [s for s in steps if "action-junit-report" in str(s.get("uses", ""))]
    assert all(s["uses"] == USES for s in found)
    return found


def _check_steps(steps: list[dict[str, Any]], cwd: Path, gate_status: int) -> dict[str, Any]:
    """Run the recipe's action-junit-report steps with their inputs as the runner would: the
    one with a check_name makes the check, green exactly when the gate passed (``gate_status``
    0); the other makes no check, only annotations of the failed trials. Returns what they
    reported."""
    check_step, info_step = _junit_steps(steps)
    check = run_action(check_step["with"], cwd)
    [run] = check.check_runs
    assert run["name"] == check_step["with"]["check_name"] == "evals"
    assert run["conclusion"] == ("success" if gate_status == 0 else "failure"), check.stdout
    assert check.exit_code == 0  # the job's status is the gate step's, not this one's
    info = run_action(info_step["with"], cwd)
    assert info.check_runs == [] and info.exit_code == 0, info.stdout
    return {"check": run, "annotations": info.error_annotations, "outputs": check.outputs}


def _not_passed(merged_results: Path) -> int:
    [summary_file] = [
        p for p in merged_results.glob("*/*/summary.json") if "base" not in p.parent.name
    ]
    totals = json.loads(summary_file.read_text())["totals"]
    return int(totals["failed"] + totals["timeout"] + totals["errors"])


def test_github_recipe_end_to_end(tmp_path: Path) -> None:
    jobs = yaml.safe_load(RECIPES["github"].read_text())["jobs"]
    runner = tmp_path / "merge-runner"
    for k in (1, 2, 3):
        machine = _machine(tmp_path, f"runner-{k}")
        steps = [_gh(s["run"], k) for s in jobs["shard"]["steps"] if "run" in s]
        _play(steps, machine, _env())
        upload = next(s for s in jobs["shard"]["steps"] if "upload-artifact" in s.get("uses", ""))
        artifact = runner / "shards" / _gh(upload["with"]["name"], k)  # download-artifact
        for path in upload["with"]["path"].split():
            shutil.copytree(machine / path, artifact / path, symlinks=True)
    summary = runner / "step-summary.md"
    steps = [_gh(s["run"], 0) for s in jobs["merge"]["steps"] if "run" in s]
    codes = _play(steps, runner, _env(GITHUB_STEP_SUMMARY=str(summary)))
    assert codes[:-1] == [0] * (len(codes) - 1)
    assert "fix-small-bugs" in summary.read_text()
    _check_merged(runner / "merged", codes[-1])
    # the example suite: trials failed, the gate passed: the "evals" check is green, the
    # failed trials are annotations (issue 18, case 7: the check was red)
    shown = _check_steps(jobs["merge"]["steps"], runner, codes[-1])
    not_passed = _not_passed(runner / "merged" / "results")
    assert codes[-1] == 0 and not_passed > 0
    assert len(shown["annotations"]) == not_passed


def test_gitlab_recipe_end_to_end(tmp_path: Path) -> None:
    recipe = yaml.safe_load(RECIPES["gitlab"].read_text())
    runner = tmp_path / "merge-runner"
    runner.mkdir()
    for k in (1, 2, 3):
        machine = _machine(tmp_path, f"runner-{k}")
        ci = _env(CI_NODE_INDEX=str(k), CI_NODE_TOTAL="3", CI_PIPELINE_ID="42")
        _play(recipe["eval-shard"]["script"], machine, ci)
        assert (machine / f"shard-{k}.xml").is_file()
        for pattern in recipe["eval-shard"]["artifacts"]["paths"]:  # artifacts: shard-*/
            for found in machine.glob(pattern.rstrip("/")):
                if found.is_dir():  # a trailing / matches directories only
                    shutil.copytree(found, runner / found.name, symlinks=True)
    codes = _play(recipe["eval-merge"]["script"], runner, _env(CI_PIPELINE_ID="42"))
    assert codes[:-1] == [0] * (len(codes) - 1)
    assert "evalrun_variant_pass_rate{" in (runner / "metrics.txt").read_text()
    _check_merged(runner / "merged", codes[-1])
    # the merge job's junit report: the gates, the overall one failing exactly when the
    # job's last line (the gate) exits 1
    junitparser = pytest.importorskip("junitparser", reason="junitparser is not installed")
    report = recipe["eval-merge"]["artifacts"]["reports"]["junit"]
    xml = junitparser.JUnitXml.fromfile(str(runner / report))
    overall = [c for suite in xml for c in suite if ": gate " in c.name]
    assert len(overall) == 1 and bool(overall[0].result) == (codes[-1] == 1)


# --- docs/reports.md's single-machine GitHub recipe, with a gate that passes and one that fails


def _reports_recipe(title: str) -> dict[str, Any]:
    """The YAML block under ``### <title>`` in docs/reports.md."""
    text = (DOCS / "reports.md").read_text()
    section = text.split(f"### {title}\n", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    recipe: dict[str, Any] = yaml.safe_load(block)
    return recipe


@pytest.mark.parametrize("gate", ["passes", "fails"])
def test_reports_github_recipe_check_follows_the_gate(tmp_path: Path, gate: str) -> None:
    steps = _reports_recipe("GitHub Actions")["jobs"]["evals"]["steps"]
    machine = _machine(tmp_path, "runner")
    env = _env(GITHUB_STEP_SUMMARY=str(tmp_path / "step-summary.md"))
    if gate == "fails":  # the same recipe, a gate the example suite does not meet
        env["PYTEST_ADDOPTS"] = "--eval-min-pass-rate=0.99"
    codes = _play([_gh(s["run"], 1) for s in steps if "run" in s], machine, env)
    assert codes[-1] == (0 if gate == "passes" else 1)
    shown = _check_steps(steps, machine, codes[-1])
    trials = (machine / "reports" / "junit.xml").read_text()
    failed = trials.count("<failure") + trials.count("<error")
    assert failed > 0 and len(shown["annotations"]) == failed
    if gate == "fails":
        assert int(shown["outputs"]["failed"]) >= 2  # a cell below 0.99 and the overall gate
