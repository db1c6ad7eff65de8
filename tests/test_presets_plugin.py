"""A third-party preset, added through ``pytest_evalrun_agent_presets`` exactly as docs/agents.md
shows it (the files are taken from that page), and what the spec loader says about presets."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from pytest_evalrun.agents.builtin import BUILTIN
from pytest_evalrun.experiment.errors import ExperimentError, ExperimentErrors
from pytest_evalrun.experiment.load import load_experiment_text

DOC = Path(__file__).resolve().parent.parent / "docs" / "agents.md"


def doc_files() -> dict[str, str]:
    """``<!-- file: NAME -->`` followed by a fenced block, in docs/agents.md."""
    text = DOC.read_text()
    found = re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)\n```", text, re.S)
    return {name: body + "\n" for name, body in found}


def test_doc_example_preset_runs_through_the_plugin(pytester: pytest.Pytester) -> None:
    files = doc_files()
    assert set(files) == {"toycli.py", "conftest.py", "toy.eval.yaml"}
    for name, body in files.items():
        (pytester.path / name).write_text(body)
    cli = pytester.path / "toycli.py"
    cli.write_text(body := files["toycli.py"].replace("/usr/bin/env python3", sys.executable, 1))
    assert body.startswith("#!/")
    os.chmod(cli, 0o755)
    run = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    run.assert_outcomes(passed=1)
    (trial,) = pytester.path.glob("results/toy/*/variants/toy/tasks/hello/trials/001")
    metrics = json.loads((trial / "artifacts" / "metrics.json").read_text())
    assert (metrics["input_tokens"], metrics["cache_read_tokens"], metrics["output_tokens"]) == (
        280, 120, 23)
    assert metrics["cost_usd"] == pytest.approx(0.000861)
    assert [c["input_tokens"] for c in metrics["calls"]] == [120, 160]
    meta = json.loads((trial / "meta.json").read_text())
    assert meta["session_id"] == metrics["session_id"] and len(meta["session_id"]) == 32
    assert meta["metrics"]["input_tokens"] == 280
    assert meta["metrics"]["cost_usd"] == pytest.approx(0.000861)
    analysis = json.loads((trial / "analysis.json").read_text())
    assert analysis["tool_calls"] == {"write": 1}
    assert analysis["files_touched"] == ["hello.txt"]
    assert (trial / "events.jsonl").read_text().count("\n") == 4
    assert "### User" in (trial / "session.md").read_text()
    assert (trial / "agent-home" / "sessions").is_dir()
    trajectory = json.loads(Path(meta["pier_trial_dir"], "agent", "trajectory.json").read_text())
    assert len(trajectory["steps"]) == 3
    assert trajectory["agent"]["name"] == "toy-cli"
    assert trajectory["final_metrics"]["total_prompt_tokens"] == 280
    assert trajectory["final_metrics"]["total_cost_usd"] == pytest.approx(0.000861)


def test_missing_preset_program_is_an_agent_missing_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".eval.yaml", x="""
        experiment: x
        variants:
          v: {agent: {preset: codex, executable: no-such-codex-here}}
        tasks:
          - {name: t, prompt: hi, verify: "true"}
    """)
    run = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    run.assert_outcomes(errors=1)
    (meta,) = pytester.path.glob("results/x/*/variants/v/tasks/t/trials/001/meta.json")
    data = json.loads(meta.read_text())
    assert data["error_kind"] == "agent_missing"
    assert "no-such-codex-here" in data["message"]


YAML = """\
experiment: x
variants:
  v:
    agent: {AGENT}
    pricing: {PRICING}
tasks:
  - {{name: t, prompt: hi, verify: "true"}}
"""


def load(agent: str, pricing: str = "{input: 1}") -> object:
    return load_experiment_text(YAML.format(AGENT=agent, PRICING=pricing), "/x/e.eval.yaml",
                                environ={}, agent_kinds=["preset"], presets=sorted(BUILTIN))


@pytest.mark.parametrize(("agent", "pricing", "message"), [
    ("{preset: claude-cod}", "{input: 1}",
     "e.eval.yaml:4: unknown preset 'claude-cod' in 'agent' in variant 'v'; known presets: "
     "claude-code, codex, copilot-cli, gemini-cli, opencode; did you mean 'claude-code'?"),
    ("{preset: codex, executable: 3}", "{input: 1}",
     "e.eval.yaml:4: 'executable' in 'agent' in variant 'v' must be a program name or path, "
     "got 3 (a number)"),
    ("{preset: codex, args: -x}", "{input: 1}",
     "e.eval.yaml:4: 'args' in 'agent' in variant 'v' must be a list of strings, got '-x' "
     "(a string)"),
    ("{preset: codex, argz: [-x]}", "{input: 1}",
     "e.eval.yaml:4: unknown key 'argz' in 'agent' in variant 'v'; did you mean 'args'?"),
    ("{preset: codex}", "{input: -1}",
     "e.eval.yaml:5: 'pricing' 'input' in variant 'v' must be a number >= 0 (USD per million "
     "tokens), got -1 (a number)"),
    ("{preset: codex}", "{inptu: 1}",
     "e.eval.yaml:5: unknown key 'inptu' in 'pricing' in variant 'v'; did you mean 'input'?"),
])
def test_bad_preset_mappings_are_file_line_errors(agent: str, pricing: str, message: str) -> None:
    with pytest.raises((ExperimentError, ExperimentErrors)) as info:
        load(agent, pricing)
    assert str(info.value).endswith(message), str(info.value)


def test_preset_mapping_loads() -> None:
    exp = load("{preset: gemini-cli, executable: bin/gemini, args: [--debug]}",
               "{input: 1.25, cached_input: 0.125, output: 10}")
    variant = exp.variants[0]  # type: ignore[attr-defined]
    assert variant.agent.kind == "preset"
    assert variant.agent.value == {"preset": "gemini-cli", "executable": "bin/gemini",
                                   "args": ["--debug"]}
    assert variant.pricing == {"input": 1.25, "cached_input": 0.125, "output": 10.0}


@pytest.mark.parametrize("quiet", ["1", "0"])
def test_quiet_traffic_settings_are_on_unless_turned_off(quiet: str, tmp_path: Path) -> None:
    from pytest_evalrun.agents.preset import PresetTrial

    def trial(name: str) -> PresetTrial:
        home = tmp_path / name / "agent-home"
        home.mkdir(parents=True)
        return PresetTrial(name, f"/bin/{name}", (), "hi", "m", tmp_path, home, tmp_path / "a",
                           {"PATH": "/bin", "EVALRUN_PRESET_QUIET": quiet, "PWD": "/elsewhere"})

    on = quiet == "1"
    claude = BUILTIN["claude-code"].launch(trial("claude-code"))
    assert ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC" in claude.env) is on
    assert claude.env["HOME"] == str(tmp_path / "claude-code" / "agent-home")
    assert "EVALRUN_PRESET_QUIET" not in claude.env and "PWD" not in claude.env
    BUILTIN["codex"].launch(trial("codex"))
    config = (tmp_path / "codex" / "agent-home" / ".codex" / "config.toml").read_text()
    assert ("[analytics]\nenabled = false" in config) is on
    opencode = BUILTIN["opencode"].launch(trial("opencode"))
    assert ("OPENCODE_DISABLE_MODELS_FETCH" in opencode.env) is on
    copilot = BUILTIN["copilot-cli"].launch(trial("copilot-cli"))
    assert (copilot.env.get("COPILOT_AUTO_UPDATE") == "false") is on
    BUILTIN["gemini-cli"].launch(trial("gemini-cli"))
    settings = json.loads((tmp_path / "gemini-cli" / "agent-home" / ".gemini" /
                           "settings.json").read_text())
    assert ("privacy" in settings) is on
