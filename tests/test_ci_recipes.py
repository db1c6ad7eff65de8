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
from dataclasses import dataclass
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
    command = re.sub(r"\$\{\{[^}]*inputs\.[^}]*\}\}", "", command)
    command = re.sub(r"\$\{\{[^}]*\}\}", "42", command)
    command = command.replace("$CI_NODE_INDEX", "2").replace("$CI_NODE_TOTAL", "3")
    command = command.replace("$CI_PIPELINE_ID", "42").replace("$GITHUB_STEP_SUMMARY", "out.md")
    command = command.replace("$EVALRUN_FIRST_BASELINE", "")
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
    assert any("--eval-baseline-run baseline" in c for c in commands)
    # the baseline moves only on main, only after the merge job (the gate) passed
    assert jobs["pin"]["needs"] == "merge" and "refs/heads/main" in jobs["pin"]["if"]
    assert "always" not in jobs["pin"]["if"] and "cancelled" not in jobs["pin"]["if"]


def test_gitlab_recipe() -> None:
    recipe = yaml.safe_load(RECIPES["gitlab"].read_text())
    assert recipe["stages"] == ["eval", "merge", "pin"]
    shard, merge = recipe["eval-shard"], recipe["eval-merge"]
    assert shard["parallel"] == 3 and shard["stage"] == "eval" and merge["stage"] == "merge"
    assert merge["needs"] == [{"job": "eval-shard", "artifacts": True}]
    commands = _commands(recipe)
    assert any('--eval-shard "$CI_NODE_INDEX/$CI_NODE_TOTAL"' in c for c in commands)
    assert any(c.startswith("evalrun merge shard-* --into merged") for c in commands)
    assert any("--eval-baseline-run baseline" in c for c in commands)
    pin = recipe["eval-pin"]
    assert pin["needs"] == [{"job": "eval-merge", "artifacts": True}] and "when" not in pin
    assert pin["cache"]["policy"] == "push" and shard["cache"]["policy"] == "pull"
    assert pin["cache"]["key"] == shard["cache"]["key"]


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


def _play(
    lines: list[str], cwd: Path, env: dict[str, str], ok: tuple[int, ...] = (0, 1)
) -> list[int]:
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
        assert done.returncode in ok, f"{line}\n{done.stdout}\n{done.stderr}"
    return codes


def _machine(base: Path, name: str) -> Path:
    """A fresh checkout: the example suite as the recipes' experiments/."""
    root = base / name
    shutil.copytree(EXAMPLE, root / "experiments", ignore=shutil.ignore_patterns("real-agents"))
    return root


def _check_merged(merged: Path, gate_status: int, run_id: str) -> None:
    [summary_file] = list(merged.glob(f"results/*/{run_id}/summary.json"))
    summary = json.loads(summary_file.read_text())
    totals = summary["experiments"][0]["totals"]
    assert totals["trials"] == 24, totals  # every trial of the 3 shards
    run = json.loads((summary_file.parent / "run.json").read_text())
    assert sorted(s["shard"] for s in run["sessions"]) == ["1/3", "2/3", "3/3"]
    assert (merged / "report.html").stat().st_size > 10_000
    # the last line gates: exit 1 exactly when the merged run's gate failed
    assert gate_status == (0 if summary["verdict"]["passed"] else 1)


def _gh(command: str, shard: int, run_id: str = "42", first: bool = False) -> str:
    """A GitHub ``run:`` line with its expressions as the runner would make them."""
    command = re.sub(r"\$\{\{\s*matrix\.shard\s*\}\}", str(shard), command)
    optional = "--eval-baseline-optional" if first else ""
    command = re.sub(r"\$\{\{\s*inputs\.first-baseline[^}]*\}\}", optional, command)
    command = re.sub(r"\$\{\{\s*github\.run_id\s*\}\}", run_id, command)
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


def _not_passed(merged_results: Path, run_id: str = "*") -> int:
    [summary_file] = [
        p for p in merged_results.glob(f"*/{run_id}/summary.json") if "base" not in p.parent.name
    ]
    totals = json.loads(summary_file.read_text())["totals"]
    return int(totals["failed"] + totals["timeout"] + totals["errors"])


def _regress(experiments: Path) -> None:
    """An agent update that breaks the with-skills variant (it fixes nothing any more)."""
    spec = experiments / "demo.eval.yaml"
    text = spec.read_text()
    assert 'DEMO_AGENT_SKILL: "0.95"' in text
    spec.write_text(text.replace('DEMO_AGENT_SKILL: "0.95"', 'DEMO_AGENT_SKILL: "0.0"'))


def _merged_gates(merged: Path, run_id: str) -> dict[str, Any]:
    [run_file] = list(merged.glob(f"results/*/{run_id}/run.json"))
    gates: dict[str, Any] = json.loads(run_file.read_text())["gates"]
    return gates


@dataclass
class _Night:
    """One workflow run of the GitHub recipe: the shard jobs on 3 machines, the merge job,
    and on main the pin job, with actions/cache played by copying ``cache``."""

    codes: list[int]
    runner: Path
    shard_codes: list[int]


def _github_night(
    base: Path, jobs: dict[str, Any], cache: Path, run_id: str, *, main: bool,
    first: bool = False, regress: bool = False,
) -> _Night:
    runner = base / "merge-runner"
    shard_codes: list[int] = []
    for k in (1, 2, 3):
        machine = _machine(base, f"runner-{k}")
        if regress:
            _regress(machine / "experiments")
        for step in jobs["shard"]["steps"]:
            uses = str(step.get("uses", ""))
            if uses.startswith("actions/cache/restore") and cache.is_dir():
                shutil.copytree(cache, machine / step["with"]["path"], symlinks=True)
            elif "run" in step:
                # continue-on-error: true: the merged run decides
                shard_codes += _play([_gh(step["run"], k, run_id, first)], machine, _env(),
                                     ok=(0, 1, 4))
        upload = next(s for s in jobs["shard"]["steps"] if "upload-artifact" in s.get("uses", ""))
        artifact = runner / "shards" / _gh(upload["with"]["name"], k)  # download-artifact
        for path in upload["with"]["path"].split():
            if (machine / path).exists():
                shutil.copytree(machine / path, artifact / path, symlinks=True)
    summary = runner / "step-summary.md"
    steps = [_gh(s["run"], 0, run_id) for s in jobs["merge"]["steps"] if "run" in s]
    steps = [line for line in steps if not line.startswith("pip install")]
    runner.mkdir(parents=True, exist_ok=True)
    codes = []
    for line in steps:  # bash -e: the job stops at its first failing step
        codes += _play([line], runner, _env(GITHUB_STEP_SUMMARY=str(summary)), ok=(0, 1))
        if codes[-1]:
            break
    if main and codes[-1] == 0 and len(codes) == len(steps):  # pin: needs merge, on main
        pinner = base / "pin-runner"
        shutil.copytree(runner / "merged", pinner / "merged", symlinks=True)  # eval-merged
        for step in jobs["pin"]["steps"]:
            uses = str(step.get("uses", ""))
            if "run" in step:
                _play([_gh(step["run"], 0, run_id)], pinner, _env(), ok=(0,))
            elif uses.startswith("actions/cache/save"):
                shutil.rmtree(cache, ignore_errors=True)
                shutil.copytree(pinner / step["with"]["path"], cache, symlinks=True)
    return _Night(codes, runner, shard_codes)


def test_github_recipe_end_to_end(tmp_path: Path) -> None:
    """Four workflow runs: the first baseline pinned on main, a pull request gated against it
    (green), an agent update that regressed (red), and a lost cache (red, no trial run)."""
    jobs = yaml.safe_load(RECIPES["github"].read_text())["jobs"]
    cache = tmp_path / "actions-cache"
    # 1. main, run by hand with first-baseline: ungated on regression, then pinned
    first = _github_night(tmp_path / "n1", jobs, cache, "1", main=True, first=True)
    assert first.codes == [0] * len(first.codes) and first.shard_codes == [0, 0, 0]
    pins = json.loads((cache / "baselines.json").read_text())["pins"]
    assert [(p["name"], p["run_id"]) for p in pins] == [("baseline", "gh-1-42")]
    assert [p.parent.name for p in cache.glob("*/*/run.json")] == ["gh-1-42"]
    # 2. a pull request, nothing changed: gated against the pin, green
    night = _github_night(tmp_path / "n2", jobs, cache, "2", main=False)
    runner = night.runner
    assert night.codes == [0] * len(night.codes)
    summary = runner / "step-summary.md"
    assert "fix-small-bugs" in summary.read_text()
    _check_merged(runner / "merged", night.codes[-1], "gh-2-42")
    gates = _merged_gates(runner / "merged", "gh-2-42")
    assert gates["baseline_run"]["ref"] == "baseline", gates
    assert gates["baseline_run"]["run_id"] == "gh-1-42", gates
    # the baseline run was in every shard: placed once into merged/, its pin carried
    assert (runner / "merged" / "results" / "fix-small-bugs" / "gh-1-42" / "run.json").is_file()
    carried = json.loads((runner / "merged" / "results" / "baselines.json").read_text())["pins"]
    assert [p["run_id"] for p in carried] == ["gh-1-42"]
    assert json.loads(cache.joinpath("baselines.json").read_text())["pins"] == pins  # not main
    # the example suite: trials failed, the gate passed: the "evals" check is green, the
    # failed trials are annotations (issue 18, case 7: the check was red)
    shown = _check_steps(jobs["merge"]["steps"], runner, night.codes[-1])
    not_passed = _not_passed(runner / "merged" / "results", "gh-2-42")
    assert night.codes[-1] == 0 and not_passed > 0
    assert len(shown["annotations"]) == not_passed
    # 3. an agent update that breaks with-skills: every shard and the merged run fail the
    # regression gate; the check is red; on main it would not be pinned
    bad = _github_night(tmp_path / "n3", jobs, cache, "3", main=True, regress=True)
    assert bad.shard_codes == [1, 1, 1] and bad.codes[-1] == 1
    verdict = json.loads(next(bad.runner.glob("merged/results/*/gh-3-42/summary.json"))
                         .read_text())["verdict"]
    assert verdict["passed"] is False and "with-skills" in json.dumps(verdict)
    _check_steps(jobs["merge"]["steps"], bad.runner, 1)
    assert [p["run_id"] for p in json.loads((cache / "baselines.json").read_text())["pins"]] == [
        "gh-1-42"
    ]
    # 4. the cache is gone: every shard stops before any trial (exit 4), the merge job fails
    shutil.rmtree(cache)
    lost = _github_night(tmp_path / "n4", jobs, cache, "4", main=False)
    assert lost.shard_codes == [4, 4, 4] and lost.codes == [1]
    assert not list((tmp_path / "n4").glob("runner-*/results/*/gh-4-42/*/*/*/trials"))


def test_gitlab_recipe_end_to_end(tmp_path: Path) -> None:
    """Two pipelines: the first baseline on the default branch (pinned by eval-pin), then a
    branch whose agent regressed, red against it."""
    recipe = yaml.safe_load(RECIPES["gitlab"].read_text())
    cache = tmp_path / "gitlab-cache"

    def pipeline(base: Path, pipeline_id: str, first: bool, regress: bool,
                 branch: str) -> tuple[list[int], Path]:
        runner = base / "merge-runner"
        runner.mkdir(parents=True)
        for k in (1, 2, 3):
            machine = _machine(base, f"runner-{k}")
            if regress:
                _regress(machine / "experiments")
            if cache.is_dir():  # cache: policy: pull
                shutil.copytree(cache, machine / "results", symlinks=True)
            ci = _env(CI_NODE_INDEX=str(k), CI_NODE_TOTAL="3", CI_PIPELINE_ID=pipeline_id,
                      EVALRUN_FIRST_BASELINE="--eval-baseline-optional" if first else "")
            _play(recipe["eval-shard"]["script"], machine, ci)
            assert (machine / f"shard-{k}.xml").is_file()
            for pattern in recipe["eval-shard"]["artifacts"]["paths"]:  # artifacts: shard-*/
                for found in machine.glob(pattern.rstrip("/")):
                    if found.is_dir():  # a trailing / matches directories only
                        shutil.copytree(found, runner / found.name, symlinks=True)
        codes = _play(recipe["eval-merge"]["script"], runner, _env(CI_PIPELINE_ID=pipeline_id))
        rule = recipe["eval-pin"]["rules"][0]["if"]
        assert rule == "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"
        if codes[-1] == 0 and branch == "main":  # eval-pin: on_success, default branch only
            pinner = base / "pin-runner"
            shutil.copytree(runner / "merged", pinner / "merged", symlinks=True)
            _play(recipe["eval-pin"]["script"], pinner, _env(CI_PIPELINE_ID=pipeline_id),
                  ok=(0,))
            shutil.rmtree(cache, ignore_errors=True)  # cache: policy: push
            shutil.copytree(pinner / "results", cache, symlinks=True)
        return codes, runner

    codes, runner = pipeline(tmp_path / "p1", "41", first=True, regress=False, branch="main")
    assert codes[:-1] == [0] * (len(codes) - 1)
    assert "evalrun_variant_pass_rate{" in (runner / "metrics.txt").read_text()
    _check_merged(runner / "merged", codes[-1], "gl-41")
    assert codes[-1] == 0
    pins = json.loads((cache / "baselines.json").read_text())["pins"]
    assert [(p["name"], p["run_id"]) for p in pins] == [("baseline", "gl-41")]

    codes, runner = pipeline(tmp_path / "p2", "42", first=False, regress=True, branch="fix")
    assert codes[:-1] == [0] * (len(codes) - 1) and codes[-1] == 1
    assert _merged_gates(runner / "merged", "gl-42")["baseline_run"]["run_id"] == "gl-41"
    # the merge job's junit report: the gates, the overall one failing exactly when the
    # job's last line (the gate) exits 1
    junitparser = pytest.importorskip("junitparser", reason="junitparser is not installed")
    report = recipe["eval-merge"]["artifacts"]["reports"]["junit"]
    xml = junitparser.JUnitXml.fromfile(str(runner / report))
    overall = [c for suite in xml for c in suite if ": gate " in c.name]
    assert len(overall) == 1 and bool(overall[0].result) == (codes[-1] == 1)
    regressed = [c for suite in xml for c in suite if "with-skills" in c.name and c.result]
    assert regressed, [c.name for suite in xml for c in suite]


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
