"""The CI recipes of docs/shards.md: valid YAML, shown on the page as they are, and every
`pytest` and `evalrun` command line in them accepted by the real argument parsers."""

from __future__ import annotations

import re
import shlex
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
    assert any(c.startswith("evalrun merge --move shards/shard-* --into merged") for c in commands)


def test_gitlab_recipe() -> None:
    recipe = yaml.safe_load(RECIPES["gitlab"].read_text())
    assert recipe["stages"] == ["eval", "merge"]
    shard, merge = recipe["eval-shard"], recipe["eval-merge"]
    assert shard["parallel"] == 3 and shard["stage"] == "eval" and merge["stage"] == "merge"
    assert merge["needs"] == [{"job": "eval-shard", "artifacts": True}]
    commands = _commands(recipe)
    assert any('--eval-shard "$CI_NODE_INDEX/$CI_NODE_TOTAL"' in c for c in commands)
    assert any(c.startswith("evalrun merge --move shard-* --into merged") for c in commands)


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
