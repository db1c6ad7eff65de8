"""Each real coding-agent CLI, at its pinned version, run offline against the mock model server.

Per CLI: a script where the model writes a file through the CLI's own file tool, then runs a
failing shell command, then answers; one where it only answers; one where the model API fails.
Checked: the exit status, the file, that the mock served exactly the scripted turns (plus the
auxiliary calls the CLI is known to make), that nothing tried to leave the machine, and that the
CLI's own records, parsed by ``pytest_evalrun.agents``, show the mock's token numbers call by
call, with a valid trajectory.

Skips name what is missing: node/npm, or the CLI cache (``python
tests/tools/install_agent_clis.py``). With ``EVALRUN_REQUIRE_AGENT_CLIS=1`` a missing CLI fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agentcli_env import APIS, CLIS, Run, prepare, record_texts
from agentcli_pins import CLIS as PACKAGES
from agentcli_pins import PINS, executable, install_dir
from atif_rules import rule_errors, step_totals
from harbor_schemas import find_reference, schema_errors
from mockllm import MockLLM, Script, Turn, Usage, api_error, custom_tool, say, shell, tool

from pytest_evalrun.agents import AgentRun, load
from pytest_evalrun.agents.atif import trajectory

TIMEOUT = 180
PROMPT = "Create a file hello.txt containing 'hi', then list missing.txt, then report."

#: The file-writing call each CLI's own tool makes ({cwd}: the working directory it reports).
WRITE: dict[str, tuple[str, Any]] = {
    "claude": ("Write", {"file_path": "{cwd}/hello.txt", "content": "hi"}),
    "codex": ("apply_patch", "*** Begin Patch\n*** Add File: hello.txt\n+hi\n*** End Patch\n"),
    "copilot": ("apply_patch", "*** Begin Patch\n*** Add File: hello.txt\n+hi\n*** End Patch\n"),
    "opencode": ("write", {"filePath": "{cwd}/hello.txt", "content": "hi"}),
    "gemini": ("write_file", {"file_path": "{cwd}/hello.txt", "content": "hi"}),
}

#: Calls each CLI makes besides the scripted ones (opencode titles the session first).
AUX_CALLS = {"opencode": 1}

#: Distinct numbers per call, so a per-call mix-up or a repeated call shows.
U1 = Usage(input=1241, output=56, cache_read=7)
U2 = Usage(input=1300, output=40, cache_read=200)
U3 = Usage(input=1502, output=33, cache_read=1000)


#: Where the pinned CLIs are, found at import (before a pytester test changes HOME).
INSTALL = install_dir()


def require_cli(cli: str) -> str:
    """The CLI's executable; a skip naming the install command where it is missing (a
    failure with EVALRUN_REQUIRE_AGENT_CLIS, as in CI)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not found: the agent CLIs are npm packages")
    exe = executable(cli, INSTALL)
    if exe is None:
        package = PACKAGES[cli][0]
        message = (f"{package}@{PINS[package]} not in {INSTALL}: "
                   "run python tests/tools/install_agent_clis.py")
        if os.environ.get("EVALRUN_REQUIRE_AGENT_CLIS"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return str(exe)


def edit_script(cli: str) -> Script:
    name, payload = WRITE[cli]
    write = (custom_tool(name, payload, U1, text="I'll create the file.")
             if isinstance(payload, str) else tool(name, payload, U1, text="I'll create the file."))
    return Script([write, shell("ls missing.txt", U2),
                   say("Created hello.txt; missing.txt does not exist.", U3)])


@dataclass
class Outcome:
    run: Run
    proc: subprocess.CompletedProcess[str]
    mock: MockLLM
    parsed: AgentRun


def run_cli(cli: str, script: Script, tmp_path: Path) -> Outcome:
    exe = require_cli(cli)
    work = tmp_path / "work"
    work.mkdir()
    with MockLLM(script, log_path=tmp_path / "mock_requests.jsonl") as mock:
        run = prepare(cli, exe, PROMPT, tmp_path / "home", work, mock.url,
                      proxy_env=mock.proxy_env())
        proc = subprocess.run(run.argv, cwd=run.cwd, env=run.env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=TIMEOUT, check=False)
        (tmp_path / "stdout").write_text(proc.stdout)
        (tmp_path / "stderr").write_text(proc.stderr)
        transcript = record_texts(run, proc.stdout)
    assert transcript, f"{cli}: its own transcript was not found under {run.home}"
    return Outcome(run, proc, mock, load(cli, proc.stdout, transcript))


def served_calls(mock: MockLLM) -> list[tuple[int, int, int]]:
    return [(s["usage"]["input"], s["usage"]["cache_read"], s["usage"]["output"])
            for s in mock.served]


def check_common(cli: str, out: Outcome, script: Script) -> None:
    proc, mock, parsed = out.proc, out.mock, out.parsed
    assert proc.returncode == 0, f"{cli} exit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert mock.outside == [], f"{cli} tried to leave the machine: {mock.outside}"
    answered = [r["answered"] for r in mock.model_requests()]
    assert answered.count("aux") == AUX_CALLS.get(cli, 0), answered
    assert [a for a in answered if a != "aux"] == [f"turn {i}" for i in range(len(script.turns))]
    assert {r["api"] for r in mock.model_requests()} == {APIS[cli]}
    # The mock's numbers, call by call, in the CLI's own records.
    want = [(t.usage.input, t.usage.cache_read, t.usage.output) for t in script.turns]
    assert served_calls(mock) == want
    got = [(c.usage.input, c.usage.cache_read, c.usage.output) for c in parsed.calls]
    assert got == want, f"{cli}: parsed {got}, the mock served {want}"
    total = script.expected_usage()
    assert (parsed.totals().input, parsed.totals().cache_read, parsed.totals().output) == (
        total.input, total.cache_read, total.output)
    assert parsed.session_id
    assert parsed.final_text == script.turns[-1].text
    assert parsed.errors == []
    doc = trajectory(parsed)
    assert rule_errors(doc) == []
    if find_reference() is not None:
        assert schema_errors("Trajectory", doc) == []
    final = doc["final_metrics"]
    assert (final["total_prompt_tokens"], final["total_cached_tokens"],
            final["total_completion_tokens"]) == (total.input, total.cache_read, total.output)
    assert step_totals(doc) == (total.input, total.cache_read, total.output)


@pytest.mark.slow
@pytest.mark.parametrize("cli", CLIS)
def test_cli_edits_a_file(cli: str, tmp_path: Path) -> None:
    script = edit_script(cli)
    out = run_cli(cli, script, tmp_path)
    check_common(cli, out, script)
    assert (out.run.cwd / "hello.txt").read_text().strip() == "hi"
    served = out.mock.served
    write_name = WRITE[cli][0]
    assert [c["name"] for c in served[0]["calls"]] == [write_name]
    shell_name = served[1]["calls"][0]["name"]
    assert out.parsed.tool_counts() == {write_name: 1, shell_name: 1}
    failed = out.parsed.failed_tool_calls()
    assert [c.name for c in failed] == [shell_name], [(c.name, c.ok, c.output)
                                                      for c in out.parsed.tool_calls]
    assert str(out.run.cwd / "hello.txt") in out.parsed.files_touched


@pytest.mark.slow
@pytest.mark.parametrize("cli", CLIS)
def test_cli_answers(cli: str, tmp_path: Path) -> None:
    script = Script([say("The answer is 4.", Usage(input=900, output=20, cache_read=100))])
    out = run_cli(cli, script, tmp_path)
    check_common(cli, out, script)
    assert out.parsed.tool_calls == []
    assert list(out.run.cwd.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("cli", CLIS)
def test_cli_model_error_fails_the_run(cli: str, tmp_path: Path) -> None:
    # Every request answered 400 (Claude Code retries a 400 a few times; the others do not).
    script = Script([api_error(400, "mock: bad request")], exhausted_status=400)
    out = run_cli(cli, script, tmp_path)
    assert out.proc.returncode != 0
    assert out.mock.outside == []
    assert out.mock.served[0]["error_status"] == 400
    assert out.parsed.session_id
    assert out.parsed.calls == []
    assert out.parsed.errors, f"{cli}: the model error is not in its records"
    doc = trajectory(out.parsed)
    assert rule_errors(doc) == []
    assert doc["final_metrics"]["total_prompt_tokens"] == 0


def test_turn_helpers_build_what_the_tests_script() -> None:
    script = edit_script("codex")
    assert isinstance(script.turns[0], Turn)
    assert script.turns[0].calls[0].custom
    assert script.expected_usage() == Usage(input=4043, output=129, cache_read=1207)
