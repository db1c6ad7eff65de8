"""The model gateway through the plugin with a real CLI (Claude Code) against the mock: a
``budget:`` stops a looping agent mid-trial (judged on what it did, meta.json says the budget
ended it); ``--eval-record`` then ``--eval-replay`` with the model server gone gives the same
outcomes, tokens and costs; a replay with no recorded answer is an error naming the call.
Skips as in ``test_presets.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentcli_env import DEFAULT_MODELS
from mockllm import MockLLM, Script, Usage, say, shell
from test_agent_clis_mock import require_cli
from test_presets import PRICING, endpoint_env, key_env

CLI = "claude"
VERIFY = ["{python}", "-c", "import pathlib, sys; sys.exit(0 if pathlib.Path('loop.txt')"
          ".is_file() else 1)"]


def experiment(exe: str, url: str, budget: dict[str, Any] | None = None) -> dict[str, Any]:
    task: dict[str, Any] = {"name": "loop", "prompt": "Keep going.", "verify": VERIFY}
    if budget is not None:
        task["budget"] = budget
    return {
        "experiment": "gw-runs", "timeout": 240,
        "variants": {"claude": {
            "agent": {"preset": "claude-code", "executable": exe},
            "model": DEFAULT_MODELS[CLI], "pricing": PRICING,
            # no retries of its own: a refused or unanswered call ends the session at once
            # (what is checked is the plugin's record of it, not how long Claude Code insists)
            "env": {**key_env(CLI), **endpoint_env(CLI, url), "CLAUDE_CODE_MAX_RETRIES": "0"},
        }},
        "tasks": [task],
    }


def metas(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in
            sorted(root.glob("results/gw-runs/*/variants/*/tasks/*/trials/*/meta.json"))]


@pytest.mark.slow
def test_a_budget_stops_a_looping_agent(pytester: pytest.Pytester, tmp_path: Path) -> None:
    exe = require_cli(CLI)
    looping = Script([shell("echo again >> loop.txt", Usage(input=1000, output=10))] * 10)
    with MockLLM(looping, log_path=tmp_path / "mock.jsonl") as mock:
        spec = experiment(exe, mock.url, budget={"max_calls": 3})
        (pytester.path / "runs.eval.yaml").write_text(yaml.safe_dump(spec))
        run = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    run.assert_outcomes(passed=1)  # judged on what it did: loop.txt is there
    assert len(mock.served) == 3, mock.served  # the fourth call never reached the model
    (meta,) = metas(pytester.path)
    assert meta["status"] == "passed"
    budget = meta["metrics"]["budget"]
    assert budget["limits"] == {"max_calls": 3}
    assert "max_calls 3" in budget["stopped"]
    assert "budget" in meta["message"]
    assert meta["metrics"]["input_tokens"] == 3000


@pytest.mark.slow
def test_record_then_replay_with_no_network(pytester: pytest.Pytester, tmp_path: Path) -> None:
    exe = require_cli(CLI)
    record = tmp_path / "recorded"
    plan = Script([shell("echo once > loop.txt", Usage(input=1200, output=30, cache_read=100)),
                   say("done", Usage(input=1300, output=12, cache_read=1000))])
    with MockLLM(plan, log_path=tmp_path / "mock.jsonl") as mock:
        url = mock.url
        (pytester.path / "runs.eval.yaml").write_text(yaml.safe_dump(experiment(exe, url)))
        first = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--eval-run-id", "rec",
                                              f"--eval-record={record}")
    first.assert_outcomes(passed=1)
    recorded = list(record.rglob("*.jsonl"))
    assert len(recorded) == 1
    assert "sk-evalrun-test" not in recorded[0].read_text()  # no key written
    # The mock is gone: nothing answers at its address any more.
    again = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--eval-run-id", "rep",
                                          f"--eval-replay={record}")
    again.assert_outcomes(passed=1)
    (rec,) = [m for m in metas(pytester.path) if m["run_id"] == "rec"]
    (rep,) = [m for m in metas(pytester.path) if m["run_id"] == "rep"]
    assert rep["status"] == rec["status"] == "passed"
    keys = ("input_tokens", "output_tokens", "cache_tokens", "cost_usd", "source")
    assert {k: rep["metrics"][k] for k in keys} == {k: rec["metrics"][k] for k in keys}
    assert rec["metrics"]["input_tokens"] == 2500
    # Nothing recorded for this trial: the first model call has no answer, an error naming it.
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--eval-run-id", "none",
                                            f"--eval-replay={empty}")
    missing.assert_outcomes(errors=1)
    (none,) = [m for m in metas(pytester.path) if m["run_id"] == "none"]
    assert none["error_kind"] == "replay_unmatched"
    assert "no recorded answer for POST /v1/messages" in none["message"]
