"""The CLI record parsers (pytest_evalrun.agents) on captured records.

``tests/data/agent_samples/<cli>/``: the reference captures (every call 1234 in / 7 cached / 56 out
in the API's own convention: Anthropic input excludes the cache, OpenAI and Gemini include it),
and ``mockrun_*``: records of the real CLIs driven by tests/mockllm with distinct numbers per call
(``mockrun_served.json``: what the mock served, input including cache reads).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from atif_rules import rule_errors, step_totals
from harbor_schemas import find_reference, schema_errors

from pytest_evalrun.agents import AgentRun, claude, codex, copilot, gemini, load, opencode, parse
from pytest_evalrun.agents.agentrun import read_jsonl
from pytest_evalrun.agents.atif import trajectory

DATA = Path(__file__).parent / "data" / "agent_samples"
#: The transcript file of each CLI's mock-driven run.
MOCKRUN = {"claude": "mockrun_transcript.jsonl", "codex": "mockrun_rollout.jsonl",
           "copilot": "mockrun_events.jsonl", "gemini": "mockrun_chat.jsonl",
           "opencode": "mockrun_export.json"}


def jsonl(cli: str, name: str) -> list[dict[str, Any]]:
    return read_jsonl((DATA / cli / name).read_text())


def calls(run: AgentRun) -> list[tuple[int, int, int]]:
    return [(c.usage.input, c.usage.cache_read, c.usage.output) for c in run.calls]


def totals(run: AgentRun) -> tuple[int, int, int]:
    t = run.totals()
    return t.input, t.cache_read, t.output


def mockrun(cli: str) -> AgentRun:
    name = MOCKRUN[cli]
    transcript: Any = (json.loads((DATA / cli / name).read_text()) if name.endswith(".json")
                       else jsonl(cli, name))
    return parse(cli, jsonl(cli, "mockrun_stdout.jsonl"), transcript)


def check_trajectory(run: AgentRun) -> dict[str, Any]:
    doc = trajectory(run)
    assert rule_errors(doc) == []
    if find_reference() is not None:
        assert schema_errors("Trajectory", doc) == []
    final = doc["final_metrics"]
    assert (final["total_prompt_tokens"], final["total_cached_tokens"],
            final["total_completion_tokens"]) == totals(run)
    return doc


@pytest.mark.parametrize("cli", sorted(MOCKRUN))
def test_mock_driven_run_parses_to_the_served_numbers(cli: str) -> None:
    served = json.loads((DATA / cli / "mockrun_served.json").read_text())
    run = mockrun(cli)
    assert calls(run) == [(u["input"], u["cache_read"], u["output"]) for u in served]
    assert run.session_id
    assert run.final_text == "Created hello.txt; missing.txt does not exist."
    assert len(run.tool_calls) == 2
    assert [c.ok for c in run.tool_calls] == [True, False]
    assert run.failed_tool_calls()[0].error
    assert any(f.endswith("/work/hello.txt") for f in run.files_touched), run.files_touched
    assert run.errors == []
    doc = check_trajectory(run)
    assert step_totals(doc) == totals(run)
    analysis = run.analysis()
    assert analysis["model_calls"] == 3
    assert sum(analysis["tool_calls"].values()) == 2


def test_claude_repeated_usage_is_counted_once() -> None:
    lines = jsonl("claude", "transcript.jsonl")
    naive = sum(line["message"]["usage"]["input_tokens"] for line in lines
                if line.get("type") == "assistant")
    assert naive == 3702  # three content blocks, two API messages
    run = claude.parse(jsonl("claude", "stdout_stream-json.jsonl"), lines)
    # Anthropic input 1234 excludes the 7 cache reads: 1241 per call.
    assert calls(run) == [(1241, 7, 56), (1241, 7, 56)]
    assert run.cost_usd == pytest.approx(0.0121148)
    assert run.tool_counts() == {"Write": 1}
    assert run.session_id == "54f07f41-158e-447d-9e4d-869ebeda97ca"
    check_trajectory(run)


def test_claude_stdout_alone_gives_totals_per_model() -> None:
    run = claude.parse(jsonl("claude", "stdout_stream-json.jsonl"), None)
    assert calls(run) == [(2482, 14, 112)]
    assert run.extra["per_call_usage"] is False
    assert run.final_text == "Created hello.txt containing 'hi'."


def test_claude_synthetic_api_error_is_an_error_not_a_call() -> None:
    line = {"type": "assistant", "isApiErrorMessage": True,
            "message": {"id": "x", "model": "<synthetic>", "role": "assistant",
                        "content": [{"type": "text", "text": "API Error: 400 bad"}],
                        "usage": {"input_tokens": 0, "output_tokens": 0}}}
    run = claude.parse(None, [line])
    assert run.calls == []
    assert run.errors == ["API Error: 400 bad"]


@pytest.mark.parametrize("kind", ["shell", "apply_patch"])
def test_codex_rollout_and_stdout(kind: str) -> None:
    stdout = jsonl("codex", f"stdout_exec_json_{kind}.jsonl")
    run = codex.parse(stdout, jsonl("codex", f"rollout_{kind}.jsonl"))
    assert calls(run) == [(1234, 7, 56), (1234, 7, 56)]  # OpenAI: input includes cached
    assert run.cost_usd is None
    assert run.model == "gpt-5.5"
    assert run.tool_counts() == {"exec_command" if kind == "shell" else "apply_patch": 1}
    if kind == "apply_patch":
        assert run.files_touched == ["$SCRATCH/work/hello.txt"]
    check_trajectory(run)
    alone = codex.parse(stdout, None)
    assert calls(alone) == [(2468, 14, 112)]
    assert alone.session_id == run.session_id


def test_codex_old_rollouts_count_token_count_events_once() -> None:
    usage = {"input_tokens": 10, "cached_input_tokens": 2, "output_tokens": 3}
    event = {"type": "event_msg", "payload": {"type": "token_count", "info": {
        "total_token_usage": usage, "last_token_usage": usage}}}
    later = {"input_tokens": 30, "cached_input_tokens": 4, "output_tokens": 5}
    second = {"type": "event_msg", "payload": {"type": "token_count", "info": {
        "total_token_usage": later, "last_token_usage": {"input_tokens": 20,
                                                         "cached_input_tokens": 2,
                                                         "output_tokens": 2}}}}
    run = codex.parse(None, [event, event, second, second])
    assert calls(run) == [(10, 2, 3), (20, 2, 2)]


@pytest.mark.parametrize("name, per_call", [("session-state_events.jsonl", 1234),
                                            ("session-state_events_anthropic.jsonl", 1241)])
def test_copilot_usage_records_and_multiplier(name: str, per_call: int) -> None:
    run = copilot.parse(jsonl("copilot", "stdout_output-format_json.jsonl"), jsonl("copilot", name))
    # Copilot's inputTokens include cache reads; with an Anthropic provider it adds them itself.
    assert calls(run) == [(per_call, 7, 56), (per_call, 7, 56)]
    assert run.cost_usd is None
    assert run.extra["cost_multiplier_total"] == 0.0
    assert all(step.call is not None for step in run.steps if step.source == "agent")
    check_trajectory(run)


def test_copilot_stdout_has_no_token_counts() -> None:
    run = copilot.parse(jsonl("copilot", "stdout_output-format_json.jsonl"), None)
    assert run.calls == []
    assert run.session_id == "2e343571-cd21-438f-becf-8a2362b1a410"
    assert run.tool_counts() == {"bash": 1}


def test_opencode_export_and_stdout_agree() -> None:
    export = json.loads((DATA / "opencode" / "export_session.json").read_text())
    run = opencode.parse(None, export)
    # opencode's tokens.input (1227) excludes the 7 cached tokens.
    assert calls(run) == [(1234, 7, 56), (1234, 7, 56)]
    assert run.cost_usd == pytest.approx(0.0090462)
    assert export["info"]["tokens"]["input"] + export["info"]["tokens"]["cache"]["read"] == 2468
    assert run.model == "mock-model"
    check_trajectory(run)
    alone = opencode.parse(jsonl("opencode", "stdout_format_json_write.jsonl"), None)
    assert totals(alone) == totals(run)
    assert alone.tool_counts() == {"write": 1}


def test_opencode_failed_model_call_is_an_error() -> None:
    export = {"info": {"id": "ses_1"}, "messages": [
        {"info": {"role": "user"}, "parts": [{"type": "text", "text": "go"}]},
        {"info": {"role": "assistant", "error": {"name": "APIError",
                                                  "data": {"message": "bad request"}}},
         "parts": []}]}
    run = opencode.parse(None, export)
    assert run.errors == ["bad request"]
    assert run.calls == []


def test_gemini_message_written_twice_is_counted_once() -> None:
    chat = jsonl("gemini", "chat_session.jsonl")
    naive = sum(line["tokens"]["input"] for line in chat if line.get("type") == "gemini")
    assert naive == 3702
    run = gemini.parse(jsonl("gemini", "stdout_stream-json.jsonl"), chat)
    assert calls(run) == [(1234, 7, 56), (1234, 7, 56)]  # promptTokenCount includes cached
    assert run.tool_counts() == {"write_file": 1}
    assert [s.source for s in run.steps] == ["system", "user", "agent", "agent"]
    check_trajectory(run)
    alone = gemini.parse(jsonl("gemini", "stdout_stream-json.jsonl"), None)
    assert totals(alone) == (2468, 14, 112)


#: (cli, stdout file, transcript file) of every capture.
CAPTURES = [
    ("claude", "stdout_stream-json.jsonl", "transcript.jsonl"),
    ("claude", "mockrun_stdout.jsonl", "mockrun_transcript.jsonl"),
    ("codex", "stdout_exec_json_shell.jsonl", "rollout_shell.jsonl"),
    ("codex", "stdout_exec_json_apply_patch.jsonl", "rollout_apply_patch.jsonl"),
    ("codex", "mockrun_stdout.jsonl", "mockrun_rollout.jsonl"),
    ("copilot", "stdout_output-format_json.jsonl", "session-state_events.jsonl"),
    ("copilot", "mockrun_stdout.jsonl", "mockrun_events.jsonl"),
    ("opencode", "stdout_format_json_bash.jsonl", "export_session.json"),
    ("opencode", "mockrun_stdout.jsonl", "mockrun_export.json"),
    ("gemini", "stdout_stream-json.jsonl", "chat_session.jsonl"),
    ("gemini", "mockrun_stdout.jsonl", "mockrun_chat.jsonl"),
]


@pytest.mark.parametrize("cli, out, transcript", CAPTURES)
def test_load_decodes_only_what_the_parser_reads(cli: str, out: str, transcript: str) -> None:
    stdout_text = (DATA / cli / out).read_text()
    text = (DATA / cli / transcript).read_text()
    full = parse(cli, read_jsonl(stdout_text),
                 json.loads(text) if transcript.endswith(".json") else read_jsonl(text))
    assert load(cli, stdout_text, text) == full
    assert load(cli, stdout_text) == parse(cli, read_jsonl(stdout_text), None)


def test_read_jsonl_skips_noise() -> None:
    text = 'warning: x\n{"a": 1}\n{broken\n[1]\n{"b": 2}\n'
    assert read_jsonl(text) == [{"a": 1}, {"b": 2}]
    typed = '{"type": "x", "v": 1}\n{"type":"y"}\n{"type": "z", "note": "y"}\n'
    assert read_jsonl(typed, ["y"]) == [{"type": "y"}, {"type": "z", "note": "y"}]


def test_empty_records_still_make_a_valid_trajectory() -> None:
    doc = check_trajectory(codex.parse(None, None))
    assert doc["steps"][0]["source"] == "system"
