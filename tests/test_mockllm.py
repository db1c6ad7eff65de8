"""The mock model server (tests/mockllm): wire formats, script, logging and the refusing proxy."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

import pytest
from mockllm import MockLLM, Script, Usage, api_error, say, shell, tool
from mockllm.fixtures import mock_llm  # noqa: F401  (the fixture)

U = Usage(input=1241, output=56, cache_read=7)
CWD_PROMPT = "You have been invoked in: \n - Primary working directory: /w/x\n"


@pytest.fixture
def mock(mock_llm: MockLLM) -> MockLLM:  # noqa: F811
    return mock_llm


def post(mock: MockLLM, path: str, body: dict[str, Any],
         headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=10)
    conn.request("POST", path, json.dumps(body),
                 {"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, response.getheader("Content-Type") or "", data


def sse(data: bytes) -> list[tuple[str | None, Any]]:
    """(event name, decoded data) of each server-sent event."""
    events = []
    for block in data.decode().split("\n\n"):
        if not block.strip():
            continue
        name, payload = None, ""
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                payload += line[6:]
        events.append((name, payload if payload == "[DONE]" else json.loads(payload)))
    return events


def test_anthropic_stream_events_and_usage(mock: MockLLM) -> None:
    mock.load(Script([tool("Write", {"file_path": "{cwd}/a.txt", "content": "hi"}, U,
                           text="Writing.")]))
    body = {"model": "claude-x", "stream": True, "system": CWD_PROMPT,
            "tools": [{"name": "Write"}], "messages": []}
    status, ctype, data = post(mock, "/v1/messages?beta=true", body, {"x-api-key": "secret"})
    assert status == 200 and ctype.startswith("text/event-stream")
    events = sse(data)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert all(name == payload["type"] for name, payload in events)
    start = events[0][1]["message"]
    assert start["usage"] == {"input_tokens": 1234, "cache_creation_input_tokens": 0,
                              "cache_read_input_tokens": 7, "output_tokens": 1,
                              "service_tier": "standard"}
    assert events[-2][1]["usage"] == {"output_tokens": 56}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    partial = "".join(p["delta"]["partial_json"] for n, p in events
                      if n == "content_block_delta" and p["index"] == 1)
    assert json.loads(partial) == {"file_path": "/w/x/a.txt", "content": "hi"}
    text = "".join(p["delta"]["text"] for n, p in events
                   if n == "content_block_delta" and p["index"] == 0)
    assert text == "Writing."
    logged = mock.requests[0]
    assert logged["headers"]["x-api-key"] == "<redacted>"
    assert logged["answered"] == "turn 0"
    assert mock.log_path is not None
    on_disk = mock.log_path.read_text()
    assert "secret" not in on_disk


def test_anthropic_plain_json_and_error(mock: MockLLM) -> None:
    mock.load(Script([say("done", U), api_error(400, "bad request")]))
    body = {"model": "m", "tools": [{"name": "Bash"}], "messages": []}
    status, _, data = post(mock, "/v1/messages", body)
    message = json.loads(data)
    assert status == 200 and message["content"] == [{"type": "text", "text": "done"}]
    assert message["usage"]["output_tokens"] == 56
    status, _, data = post(mock, "/v1/messages", body)
    assert status == 400 and json.loads(data)["error"]["type"] == "invalid_request_error"


def test_responses_stream_function_call(mock: MockLLM) -> None:
    mock.load(Script([shell("printf hi > a", U)]))
    body = {"model": "gpt-x", "stream": True, "input": [],
            "tools": [{"type": "function", "name": "exec_command"}]}
    _, _, data = post(mock, "/v1/responses", body)
    events = sse(data)
    seq = [payload["sequence_number"] for _, payload in events]
    assert seq == list(range(len(events)))
    assert events[0][0] == "response.created" and events[-1][0] == "response.completed"
    done = next(p for n, p in events if n == "response.function_call_arguments.done")
    assert json.loads(done["arguments"]) == {"cmd": "printf hi > a", "yield_time_ms": 30_000}
    deltas = "".join(p["delta"] for n, p in events
                     if n == "response.function_call_arguments.delta")
    assert deltas == done["arguments"]
    usage = events[-1][1]["response"]["usage"]
    assert (usage["input_tokens"], usage["input_tokens_details"]["cached_tokens"],
            usage["output_tokens"]) == (1241, 7, 56)


def test_chat_stream_tool_call_and_usage_chunk(mock: MockLLM) -> None:
    mock.load(Script([shell("ls", U), say("ok", U)]))
    body = {"model": "gpt-x", "stream": True, "messages": [],
            "tools": [{"type": "function", "function": {"name": "bash"}}],
            "stream_options": {"include_usage": True}}
    events = sse(post(mock, "/v1/chat/completions", body)[2])
    assert events[-1] == (None, "[DONE]")
    usage_chunk = events[-2][1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["prompt_tokens"] == 1241
    assert usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"] == 7
    args = "".join(c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                   for _, c in events[:-2]
                   if c["choices"] and "tool_calls" in c["choices"][0]["delta"])
    assert json.loads(args)["command"] == "ls"
    assert events[-3][1]["choices"][0]["finish_reason"] == "tool_calls"
    body.pop("stream_options")
    events = sse(post(mock, "/v1/chat/completions", body)[2])
    assert all(p == "[DONE]" or "usage" not in p for _, p in events)


def test_gemini_sse_array_and_single(mock: MockLLM) -> None:
    mock.load(Script([say("hello there, a longer answer", U)] * 3))
    body = {"contents": [], "tools": [{"functionDeclarations": [{"name": "write_file"}]}]}
    base = "/v1beta/models/gemini-x:"
    chunks = [p for _, p in sse(post(mock, base + "streamGenerateContent?alt=sse", body)[2])]
    assert len(chunks) > 1
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"] == {"promptTokenCount": 1241, "candidatesTokenCount": 56,
                                           "totalTokenCount": 1297,
                                           "cachedContentTokenCount": 7}
    assert all(c["modelVersion"] == "gemini-x" for c in chunks)
    array = json.loads(post(mock, base + "streamGenerateContent", body)[2])
    assert isinstance(array, list) and array[-1]["usageMetadata"]["promptTokenCount"] == 1241
    single = json.loads(post(mock, base + "generateContent", body)[2])
    assert single["candidates"][0]["content"]["parts"] == [{"text": "hello there, a longer answer"}]


def test_aux_requests_do_not_take_turns_and_exhaustion_is_flagged(mock: MockLLM) -> None:
    mock.load(Script([say("one", U)]))
    router = {"contents": [], "generationConfig": {"responseMimeType": "application/json"}}
    single = json.loads(post(mock, "/v1beta/models/m:generateContent", router)[2])
    assert json.loads(single["candidates"][0]["content"]["parts"][0]["text"]) == {
        "complexity_score": 50}
    tools = {"model": "m", "messages": [], "tools": [{"function": {"name": "bash"}}]}
    post(mock, "/v1/chat/completions", tools)
    post(mock, "/v1/chat/completions", tools)
    assert [r["answered"] for r in mock.model_requests()] == ["aux", "turn 0", "exhausted"]
    assert [s["index"] for s in mock.served] == [0]


def test_otlp_and_unknown_paths(mock: MockLLM) -> None:
    status, _, _ = post(mock, "/v1/logs", {"resourceLogs": []})
    assert status == 200 and mock.otlp == [{"signal": "logs", "body": {"resourceLogs": []}}]
    assert post(mock, "/nope", {})[0] == 404
    assert mock.model_requests() == []


def test_proxy_refuses_connect_and_outside_requests(mock: MockLLM) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", mock.port, timeout=10)
    conn.set_tunnel("api.example.com", 443)
    with pytest.raises(OSError):
        conn.request("GET", "/")
    conn.close()
    with socket.create_connection(("127.0.0.1", mock.port), timeout=10) as sock:
        sock.sendall(b"GET http://example.org/x HTTP/1.1\r\nHost: example.org\r\n"
                     b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 403")
    assert [(o["method"], o["host"]) for o in mock.outside] == [
        ("CONNECT", "api.example.com:443"), ("GET", "example.org")]
    # An absolute-form request for the mock itself is served.
    with socket.create_connection(("127.0.0.1", mock.port), timeout=10) as sock:
        sock.sendall(f"POST {mock.url}/v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                     "Connection: close\r\n\r\n{}".encode())
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200")
    env = mock.proxy_env()
    assert env["HTTPS_PROXY"] == mock.url and "127.0.0.1" in env["NO_PROXY"]
