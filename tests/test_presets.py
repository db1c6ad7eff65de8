"""Each real coding-agent CLI through the plugin: ``agent: {preset: ...}`` against the mock model.

Per CLI one pytest session (xdist, two workers) runs an experiment with two tasks, each against
its own mock model server: ``edit`` (the model writes hello.txt through the CLI's own file tool,
runs a failing shell command, answers; verify passes) and ``refuse`` (the model only answers;
verify fails). Checked for both: the trial's evidence files (events.jsonl, session.md,
<cli>-otel.jsonl where the CLI emits OpenTelemetry, metrics.json, analysis.json, meta.json's
session_id, the Pier trial's agent/trajectory.json), token numbers equal to what the mock served
call by call, cost from the variant's ``pricing:``, no connection attempted to another host, no
secret written, and the trajectory accepted by Harbor's own validator (its venv, when built) or
by the JSON schema and the rules of ``atif_rules``.

Skips name what is missing: node/npm, or the CLI cache (``python
tests/tools/install_agent_clis.py``). With ``EVALRUN_REQUIRE_AGENT_CLIS=1`` a missing CLI fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentcli_env import DEFAULT_MODELS
from agentcli_pins import CLIS as CLI_PACKAGES
from agentcli_pins import PINS
from atif_rules import rule_errors, step_totals
from harbor_schemas import find_reference, schema_errors
from mockllm import MockLLM, Script, Usage, say
from test_agent_clis_mock import WRITE, edit_script, require_cli

from pytest_evalrun import __version__ as evalrun_version

TESTS = Path(__file__).resolve().parent
#: The CLIs whose records carry their version (the others' trials show the plugin's).
PRESETS = {"claude": "claude-code", "codex": "codex", "copilot": "copilot-cli",
           "gemini": "gemini-cli", "opencode": "opencode"}
#: The OpenTelemetry file each preset leaves (opencode emits none).
OTEL = {"claude": "claude-code-otel.jsonl", "codex": "codex-otel.jsonl",
        "copilot": "copilot-otel.jsonl", "gemini": "gemini-cli-otel.jsonl"}
#: An OpenTelemetry attribute holding each call's input tokens, and whether that count leaves
#: the cache reads out (Anthropic's convention).
OTEL_INPUT = {"claude": ("input_tokens", True), "codex": ("gen_ai.usage.input_tokens", False),
              "copilot": ("gen_ai.usage.input_tokens", False),
              "gemini": ("input_token_count", False)}
#: Calls each CLI makes besides the scripted ones (opencode titles the session first; that call
#: is in none of its records).
AUX_CALLS = {"opencode": 1}
SECRET = "sk-evalrun-test-4f2c9a17"
PRICING = {"input": 3.0, "cached_input": 0.3, "output": 15.0}
PROMPT = "Create a file hello.txt containing 'hi', then list missing.txt, then report."
VERIFY = ["{python}", "-c", "import pathlib, sys; p = pathlib.Path('hello.txt'); "
          "sys.exit(0 if p.is_file() and p.read_text().strip() == 'hi' else 1)"]

U4 = Usage(input=900, output=20, cache_read=100)


#: Found at import, before pytester points HOME elsewhere.


def refuse_script() -> Script:
    return Script([say("I will not create any file.", U4)])


def endpoint_env(cli: str, url: str) -> dict[str, str]:
    """The variables that point ``cli``'s preset at the model server at ``url``."""
    return {
        "claude": {"ANTHROPIC_BASE_URL": url},
        "codex": {"OPENAI_BASE_URL": f"{url}/v1"},
        "opencode": {"OPENAI_BASE_URL": f"{url}/v1"},
        "copilot": {"COPILOT_PROVIDER_BASE_URL": f"{url}/v1", "COPILOT_PROVIDER_TYPE": "openai",
                    "COPILOT_PROVIDER_WIRE_API": "completions"},
        "gemini": {"GOOGLE_GEMINI_BASE_URL": url},
    }[cli]


def key_env(cli: str) -> dict[str, str]:
    name = {"claude": "ANTHROPIC_API_KEY", "codex": "OPENAI_API_KEY",
            "opencode": "OPENAI_API_KEY", "copilot": "COPILOT_PROVIDER_API_KEY",
            "gemini": "GEMINI_API_KEY"}[cli]
    return {name: SECRET}


def experiment(cli: str, exe: str, edit: MockLLM, refuse: MockLLM) -> Any:
    preset = PRESETS[cli]
    return {
        "experiment": f"presets-{cli}",
        "timeout": 240,
        "variants": {preset: {
            "agent": {"preset": preset, "executable": exe},
            "model": DEFAULT_MODELS[cli],
            "pricing": PRICING,
            "env": key_env(cli),
        }},
        "tasks": [
            {"name": "edit", "prompt": PROMPT, "verify": VERIFY,
             "env": {**endpoint_env(cli, edit.url), **edit.proxy_env()}},
            {"name": "refuse", "prompt": PROMPT, "verify": VERIFY,
             "env": {**endpoint_env(cli, refuse.url), **refuse.proxy_env()}},
        ],
    }


def otel_values(text: str, key: str) -> set[int]:
    """Every integer value of attribute ``key`` in OTLP/JSON lines (key/value lists or maps)."""
    found: set[int] = set()
    stack: list[Any] = [json.loads(line) for line in text.splitlines()]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            attrs = item.get("attributes")
            pairs = ([(a.get("key"), a.get("value")) for a in attrs if isinstance(a, dict)]
                     if isinstance(attrs, list) else list(attrs.items())
                     if isinstance(attrs, dict) else [])
            for name, value in pairs:
                if name == key:
                    raw = value.get("intValue", value.get("stringValue")) \
                        if isinstance(value, dict) else value
                    found.add(int(raw))
            stack.extend(v for k, v in item.items() if k != "attributes")
    return found


def served(mock: MockLLM) -> list[tuple[int, int, int]]:
    return [(s["usage"]["input"], s["usage"]["cache_read"], s["usage"]["output"])
            for s in mock.served]


def all_served(mock: MockLLM, script: Script) -> list[Usage]:
    """The usage of every model call the mock answered, in order (auxiliary calls too)."""
    out = []
    for request in mock.model_requests():
        if request["answered"] == "aux":
            out.append(script.aux_usage)
        elif request["answered"].startswith("turn "):
            u = request["served"]["usage"]
            out.append(Usage(u["input"], u["output"], u["cache_read"], u["cache_write"]))
    return out


def price(u: Usage) -> float:
    fresh = u.input - u.cache_read
    return (fresh * PRICING["input"] + u.cache_read * PRICING["cached_input"]
            + u.output * PRICING["output"]) / 1e6


def _harbor_python() -> Path | None:
    sys.path.insert(0, str(TESTS / "tools"))
    try:
        import build_harbor
    finally:
        sys.path.pop(0)
    python = build_harbor.harbor_python()
    return Path(python) if python is not None else None


#: Harbor's venv Python (found at import, before pytester points HOME elsewhere), or None.
HARBOR = _harbor_python()


def validate_trajectory(doc: dict[str, Any], harbor: Path | None, tmp: Path) -> list[str]:
    """Harbor's own validator when its venv is there, else the schema and our rule list."""
    if harbor is not None:
        path = tmp / "trajectory-check.json"
        path.write_text(json.dumps(doc))
        code = ("import json, sys\n"
                "from harbor.utils.trajectory_validator import TrajectoryValidator\n"
                "v = TrajectoryValidator()\n"
                "ok = v.validate(json.load(open(sys.argv[1])))\n"
                "print(json.dumps([] if ok else [str(e) for e in v.errors]))\n")
        done = subprocess.run([str(harbor), "-c", code, str(path)], capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return list(json.loads(done.stdout.strip().splitlines()[-1]))
    errors = rule_errors(doc)
    if find_reference() is not None:
        errors += schema_errors("Trajectory", doc)
    return errors


def trial_dir(root: Path, cli: str, task: str) -> Path:
    (meta,) = root.glob(f"results/presets-{cli}/*/variants/*/tasks/{task}/trials/001/meta.json")
    return meta.parent


def check_trial(cli: str, trial: Path, mock: MockLLM, script: Script, harbor: Path | None,
                tmp: Path) -> dict[str, Any]:
    """Every evidence file of one trial, against what the mock served."""
    meta = json.loads((trial / "meta.json").read_text())
    artifacts = trial / "artifacts"
    problem = artifacts / "preset-error.txt"
    assert not problem.exists(), problem.read_text()
    assert mock.outside == [], f"{cli} tried to leave the machine: {mock.outside}"
    answered = [r["answered"] for r in mock.model_requests()]
    assert answered.count("aux") == AUX_CALLS.get(cli, 0), answered
    want = [(t.usage.input, t.usage.cache_read, t.usage.output) for t in script.turns]
    assert served(mock) == want
    # Every model call the mock answered, in order, the CLI's title/background calls included:
    # the model gateway counts them all (the CLI's own records leave opencode's title out).
    every = all_served(mock, script)

    metrics = json.loads((artifacts / "metrics.json").read_text())
    assert metrics["token_source"] == "gateway"
    got = [(c["input_tokens"], c["cache_read_tokens"], c["output_tokens"])
           for c in metrics["calls"]]
    assert got == [(u.input, u.cache_read, u.output) for u in every], (
        f"{cli}: metrics.json {got}, the mock served {every}")
    total = Usage(sum(u.input for u in every), sum(u.output for u in every),
                  sum(u.cache_read for u in every))
    assert (metrics["input_tokens"], metrics["cache_read_tokens"], metrics["output_tokens"]) == (
        total.input, total.cache_read, total.output)
    assert metrics["cost_source"] == "pricing"
    assert metrics["cost_usd"] == pytest.approx(sum(price(u) for u in every))
    scripted = script.expected_usage()
    assert (metrics["cli"]["input_tokens"], metrics["cli"]["output_tokens"]) == (
        scripted.input, scripted.output)  # the CLI's own figures, kept beside
    assert (metrics["cli"]["difference"] is None) == (len(every) == len(script.turns))
    assert metrics["session_id"] and meta["session_id"] == metrics["session_id"]
    outcome = meta["metrics"]
    assert outcome["source"] == "gateway"
    assert (outcome["input_tokens"], outcome["cache_tokens"], outcome["output_tokens"]) == (
        total.input, total.cache_read, total.output)
    assert outcome["cost_usd"] == pytest.approx(metrics["cost_usd"])
    assert outcome["cli"]["input_tokens"] == scripted.input

    for name in ("events.jsonl", "session.md", "analysis.json"):
        assert (artifacts / name).stat().st_size > 0, name
        assert (trial / name).is_file(), f"{name} not promoted"
    assert metrics["session_id"] in (artifacts / "events.jsonl").read_text()
    if cli in OTEL:
        otel = artifacts / OTEL[cli]
        assert otel.is_file() and otel.stat().st_size > 0, f"no {OTEL[cli]}"
        key, uncached = OTEL_INPUT[cli]
        inputs = {t.usage.input - (t.usage.cache_read if uncached else 0) for t in script.turns}
        assert inputs <= otel_values(otel.read_text(), key), f"{cli}: {OTEL[cli]}"
    analysis = json.loads((artifacts / "analysis.json").read_text())
    assert analysis["session_id"] == metrics["session_id"]
    assert analysis["model_calls"] == len(every)
    assert analysis["errors"] == []

    pier = Path(meta["pier_trial_dir"])
    doc = json.loads((pier / "agent" / "trajectory.json").read_text())
    assert doc == json.loads((artifacts / "trajectory.json").read_text())
    assert doc["session_id"] == metrics["session_id"]
    final = doc["final_metrics"]
    assert (final["total_prompt_tokens"], final["total_cached_tokens"],
            final["total_completion_tokens"]) == (metrics["input_tokens"],
                                                  metrics["cache_read_tokens"],
                                                  metrics["output_tokens"])
    assert final["total_cost_usd"] == pytest.approx(metrics["cost_usd"])
    assert step_totals(doc) == (total.input, total.cache_read, total.output)
    assert final["extra"]["token_source"] == "gateway"
    assert validate_trajectory(doc, harbor, tmp) == []
    # Harbor's viewer shows agent_info as name@version: the CLI's real version, read from its
    # install by the plugin (every CLI, also those whose records name none: Gemini CLI), never
    # from the records the model's tools can edit, nor the plugin's own version
    agent_info = json.loads((pier / "result.json").read_text())["agent_info"]
    assert doc["agent"]["version"] == PINS[CLI_PACKAGES[cli][0]]
    assert agent_info["version"] == PINS[CLI_PACKAGES[cli][0]] != evalrun_version
    for path in trial.rglob("*"):  # the CLI's own home included
        if path.is_file() and not path.is_symlink():
            assert SECRET.encode() not in path.read_bytes(), f"secret in {path}"
    return {"served": want, "metrics": got, "trajectory": (
        final["total_prompt_tokens"], final["total_cached_tokens"],
        final["total_completion_tokens"]), "analysis": analysis}


@pytest.mark.slow
@pytest.mark.parametrize("cli", list(PRESETS))
def test_preset_runs_the_real_cli(cli: str, pytester: pytest.Pytester, tmp_path: Path) -> None:
    exe = require_cli(cli)
    harbor = HARBOR
    edit, refuse = edit_script(cli), refuse_script()
    with MockLLM(edit, log_path=tmp_path / "edit.jsonl") as m1, \
            MockLLM(refuse, log_path=tmp_path / "refuse.jsonl") as m2:
        spec = experiment(cli, exe, m1, m2)
        (pytester.path / f"{cli}.eval.yaml").write_text(yaml.safe_dump(spec))
        run = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    outcomes = run.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("failed")) == (1, 1), run.stdout.str()[-4000:]

    edited = trial_dir(pytester.path, cli, "edit")
    assert (edited / "workspace" / "hello.txt").read_text().strip() == "hi"
    seen = check_trial(cli, edited, m1, edit, harbor, tmp_path)
    write_name = WRITE[cli][0]
    shell_name = m1.served[1]["calls"][0]["name"]
    assert seen["analysis"]["tool_calls"] == {write_name: 1, shell_name: 1}
    assert [c["name"] for c in seen["analysis"]["failed_tool_calls"]] == [shell_name]
    assert any(f.endswith("hello.txt") for f in seen["analysis"]["files_touched"])

    refused = trial_dir(pytester.path, cli, "refuse")
    assert json.loads((refused / "meta.json").read_text())["status"] == "failed"
    seen = check_trial(cli, refused, m2, refuse, harbor, tmp_path)
    assert seen["analysis"]["tool_calls"] == {}
