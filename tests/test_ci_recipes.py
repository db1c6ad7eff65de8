"""The CI recipes of docs/shards.md: valid YAML, shown on the page as they are, and every
`pytest` and `evalrun` command line in them accepted by the real argument parsers."""

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
    steps = [s["run"] for s in jobs["merge"]["steps"] if "run" in s]
    codes = _play(steps, runner, _env(GITHUB_STEP_SUMMARY=str(summary)))
    assert codes[:-1] == [0] * (len(codes) - 1)
    assert "fix-small-bugs" in summary.read_text()
    _check_merged(runner / "merged", codes[-1])


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
