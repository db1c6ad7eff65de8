"""The model gateway on its own, against the mock model server: every wire format streamed and not,
usage counted from the API's own fields, the stand-in key swapped for the real one (never the
other way), errors passed through, a spent budget refusing further calls, an unreachable
endpoint, and a long stream forwarded piece by piece."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mockllm import MockLLM, Script, Usage, api_error, say, shell

from pytest_evalrun.gateway import Budget, Gateway

REAL_KEY = "sk-real-key-9d1e0c55"
TOOLS_CHAT = [{"type": "function", "function": {"name": "bash", "parameters": {}}}]
TOOLS_ANTHROPIC = [{"name": "Bash", "input_schema": {"type": "object"}}]
TOOLS_RESPONSES = [{"type": "function", "name": "exec_command", "parameters": {}}]
TOOLS_GEMINI = [{"functionDeclarations": [{"name": "run_shell_command"}]}]

#: api -> (path, key header, body builder(stream))
APIS: dict[str, tuple[str, str, Any]] = {
    "anthropic": ("/v1/messages", "x-api-key", lambda s: {
        "model": "claude-x", "stream": s, "tools": TOOLS_ANTHROPIC,
        "messages": [{"role": "user", "content": "hi"}]}),
    "openai-responses": ("/v1/responses", "authorization", lambda s: {
        "model": "gpt-x", "stream": s, "tools": TOOLS_RESPONSES, "input": "hi"}),
    "openai-chat": ("/v1/chat/completions", "authorization", lambda s: {
        "model": "gpt-x", "stream": s, "tools": TOOLS_CHAT,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}]}),
    "gemini": ("/v1beta/models/gemini-x:{verb}", "x-goog-api-key", lambda s: {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}], "tools": TOOLS_GEMINI}),
}


def post(gw: Gateway, path: str, body: Any, headers: dict[str, str]) -> tuple[int, bytes, list[
        bytes]]:
    """POST through the gateway; (status, body, the body's pieces as they arrived)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **headers})
    response = conn.getresponse()
    pieces = []
    while chunk := response.read1(65536):
        pieces.append(chunk)
    conn.close()
    return response.status, b"".join(pieces), pieces


def key_headers(api: str, key: str) -> dict[str, str]:
    header = APIS[api][1]
    return {header: f"Bearer {key}" if header == "authorization" else key}


@pytest.fixture
def mock(tmp_path: Path) -> Iterator[MockLLM]:
    with MockLLM(log_path=tmp_path / "mock.jsonl") as server:
        yield server


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("api", list(APIS))
def test_usage_per_call_equals_what_the_model_api_said(mock: MockLLM, api: str,
                                                       stream: bool) -> None:
    u1 = Usage(input=1241, output=56, cache_read=7)
    u2 = Usage(input=1502, output=33, cache_read=1000,
               cache_write=100 if api == "anthropic" else 0)
    mock.load(Script([shell("ls", u1), say("done", u2)]))
    pricing = {"input": 3.0, "cached_input": 0.3, "output": 15.0}
    with Gateway(mock.url, REAL_KEY, pricing=pricing) as gw:
        path, _, body = APIS[api]
        if api == "gemini":
            path = path.format(verb="streamGenerateContent?alt=sse" if stream
                               else "generateContent")
        for _ in range(2):
            status, data, _ = post(gw, path, body(stream), key_headers(api, gw.stand_in))
            assert status == 200, data
    calls = gw.ledger.calls
    got = [(c.tokens.input, c.tokens.cache_read, c.tokens.cache_write, c.tokens.output)
           for c in calls if c.tokens is not None]
    assert got == [(u.input, u.cache_read, u.cache_write, u.output) for u in (u1, u2)]
    assert all(c.api == api and c.status == 200 and c.tools for c in calls)
    assert [c.streamed for c in calls] == [stream, stream]
    assert calls[0].model
    fresh = u1.input - u1.cache_read
    assert calls[0].cost_usd == pytest.approx((fresh * 3 + u1.cache_read * 0.3 + u1.output * 15)
                                              / 1e6)
    # the real key went upstream, the stand-in never did
    sent = json.dumps([r["headers"] for r in mock.requests])
    assert gw.stand_in not in sent
    assert all("<redacted>" in json.dumps(r["headers"]) for r in mock.requests)


def test_the_real_key_replaces_the_stand_in_upstream(tmp_path: Path) -> None:
    seen: list[str] = []
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        seen.append(data.decode("latin-1"))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    with Gateway(f"http://127.0.0.1:{server.getsockname()[1]}", REAL_KEY) as gw:
        status, _, _ = post(gw, "/v1/models?key=" + gw.stand_in, {}, {})
    thread.join(10)
    server.close()
    assert status == 200
    assert f"key={REAL_KEY}" in seen[0] and gw.stand_in not in seen[0]


def test_a_wrong_key_is_refused_and_nothing_goes_upstream(mock: MockLLM) -> None:
    mock.load(Script([say("hi", Usage(input=10, output=2))]))
    with Gateway(mock.url, REAL_KEY) as gw:
        status, data, _ = post(gw, "/v1/messages", APIS["anthropic"][2](False),
                               {"x-api-key": "someone-else"})
    assert status == 401
    assert json.loads(data)["error"]["message"]
    assert mock.requests == []
    assert gw.ledger.records[0].refused == "key"


def test_an_api_error_passes_through_with_its_message(mock: MockLLM) -> None:
    mock.load(Script([api_error(400, "mock: bad request")], exhausted_status=400))
    with Gateway(mock.url, REAL_KEY) as gw:
        status, data, _ = post(gw, "/v1/chat/completions", APIS["openai-chat"][2](True),
                               key_headers("openai-chat", gw.stand_in))
    assert status == 400
    assert json.loads(data)["error"]["message"] == "mock: bad request"
    (record,) = gw.ledger.records
    assert record.error == "mock: bad request" and record.tokens is None
    assert gw.ledger.calls == []


def test_a_spent_budget_refuses_the_next_call(mock: MockLLM) -> None:
    mock.load(Script([shell("ls", Usage(input=100, output=10))] * 5))
    with Gateway(mock.url, REAL_KEY, budget=Budget(max_calls=2)) as gw:
        statuses = [post(gw, "/v1/chat/completions", APIS["openai-chat"][2](True),
                         key_headers("openai-chat", gw.stand_in))[0] for _ in range(4)]
    assert statuses == [200, 200, 402, 402]
    assert len(mock.model_requests()) == 2
    assert gw.ledger.budget_stop is not None and "max_calls 2" in gw.ledger.budget_stop


def test_an_unreachable_endpoint_is_a_502_naming_it() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Gateway(f"http://127.0.0.1:{port}", REAL_KEY) as gw:
        status, data, _ = post(gw, "/v1/messages", APIS["anthropic"][2](True),
                               key_headers("anthropic", gw.stand_in))
    assert status == 502
    assert f"127.0.0.1:{port}" in json.loads(data)["error"]["message"]
    assert gw.ledger.records[0].refused == "unreachable"


def test_a_long_stream_is_forwarded_piece_by_piece(mock: MockLLM) -> None:
    text = "x" * 300_000  # 25,000 SSE events of 12 characters
    mock.load(Script([say(text, Usage(input=5, output=70_000))]))
    with Gateway(mock.url, REAL_KEY) as gw:
        status, data, pieces = post(gw, "/v1/messages", APIS["anthropic"][2](True),
                                    key_headers("anthropic", gw.stand_in))
    assert status == 200
    assert len(pieces) > 10  # not gathered into one body
    assert data.count(b"content_block_delta") > 20_000
    (call,) = gw.ledger.calls
    assert call.tokens is not None and call.tokens.output == 70_000


def test_long_prompts_are_priced_at_the_long_context_tier() -> None:
    from pytest_evalrun.experiment.load import load_experiment_text
    from pytest_evalrun.gateway import Tokens, call_cost

    text = """\
experiment: x
variants:
  v:
    agent: {command: "true"}
    pricing: {input: 1.25, cached_input: 0.31, output: 10,
              long_context: {above: 200000, input: 2.5, cached_input: 0.625, output: 15}}
tasks:
  - {name: t, prompt: hi, verify: "true"}
"""
    pricing = load_experiment_text(text, "/x/e.eval.yaml", environ={}).variants[0].pricing
    assert pricing is not None
    short = Tokens(input=200_000, cache_read=100_000, output=1000)
    long = Tokens(input=200_001, cache_read=100_000, output=1000)
    assert call_cost(short, pricing) == pytest.approx((100_000 * 1.25 + 100_000 * 0.31
                                                       + 1000 * 10) / 1e6)
    assert call_cost(long, pricing) == pytest.approx((100_001 * 2.5 + 100_000 * 0.625
                                                      + 1000 * 15) / 1e6)


def test_record_then_replay_with_the_upstream_gone(mock: MockLLM, tmp_path: Path) -> None:
    from pytest_evalrun.gateway.recording import Recording

    mock.load(Script([shell("ls", Usage(input=1241, output=56, cache_read=7)),
                      say("done", Usage(input=1502, output=33, cache_read=1000))]))
    path = "/v1beta/models/gemini-x:streamGenerateContent?alt=sse"
    recording = Recording(tmp_path / "rec", "v/t/001", replay=False)
    with Gateway(mock.url, REAL_KEY, recorder=recording.record) as gw:
        first = [post(gw, f"{path}&key={gw.stand_in}", APIS["gemini"][2](True), {})[1]
                 for _ in range(2)]
    recording.close()
    text = recording.path.read_text()
    assert REAL_KEY not in text and "key=" not in text
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{s.getsockname()[1]}"
    replay = Recording(tmp_path / "rec", "v/t/001", replay=True)
    with Gateway(gone, None, replayer=replay.answer) as gw:
        again = [post(gw, f"{path}&key={gw.stand_in}", APIS["gemini"][2](True), {})
                 for _ in range(3)]
    assert [a[1] for a in again[:2]] == first
    assert [(c.tokens.input, c.tokens.output) for c in gw.ledger.calls
            if c.tokens is not None] == [(1241, 56), (1502, 33)]
    assert again[2][0] == 502
    assert "no recorded answer for POST /v1beta/models/gemini-x:streamGenerateContent (call 3" \
        in json.loads(again[2][1])["error"]["message"]
    assert gw.ledger.records[2].refused == "replay_unmatched"
