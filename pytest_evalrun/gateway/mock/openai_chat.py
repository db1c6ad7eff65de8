"""OpenAI Chat Completions API (``POST /v1/chat/completions``), streaming and not.

Streaming sends ``chat.completion.chunk`` objects as bare ``data:`` lines: a first chunk with the
role, content deltas, tool-call deltas (the first with id, type and name, then argument pieces), a
chunk with the ``finish_reason``, then, when ``stream_options.include_usage`` is set, a chunk with
empty ``choices`` and the ``usage``, and ``data: [DONE]``. ``prompt_tokens`` includes the cached
tokens (``prompt_tokens_details.cached_tokens``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from .script import Turn, Usage
from .wire import Answer, json_answer, new_id, openai_error, pieces, sse_answer, sse_event


def tool_names(body: dict[str, Any]) -> list[str]:
    names = []
    for spec in body.get("tools") or []:
        if isinstance(spec, dict):
            inner = spec.get("function") or spec.get("custom") or spec
            if isinstance(inner, dict) and "name" in inner:
                names.append(str(inner["name"]))
    return names


def is_aux(body: dict[str, Any]) -> bool:
    return not body.get("tools")


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


def _tool_calls(turn: Turn) -> list[dict[str, Any]]:
    calls = []
    for call in turn.calls:
        if call.custom:
            calls.append({"id": new_id("call_"), "type": "custom",
                          "custom": {"name": call.name, "input": call.input}})
        else:
            calls.append({"id": new_id("call_"), "type": "function",
                          "function": {"name": call.name, "arguments": json.dumps(call.input)}})
    return calls


def answer(turn: Turn, body: dict[str, Any]) -> Answer:
    if turn.error_status:
        return openai_error(turn.error_status, turn.text)
    calls = _tool_calls(turn)
    finish = "tool_calls" if calls else "stop"
    head = {"id": new_id("chatcmpl-"), "created": int(time.time()),
            "model": str(body.get("model", "gpt-mock")), "system_fingerprint": "fp_mock"}
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": turn.text or None,
                                   "refusal": None}
        if calls:
            message["tool_calls"] = calls
        return json_answer(dict(head, object="chat.completion", usage=usage_json(turn.usage),
                                choices=[{"index": 0, "message": message,
                                          "finish_reason": finish, "logprobs": None}]))

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return sse_event(dict(head, object="chat.completion.chunk", choices=[
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]))

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    if turn.text:
        events += [chunk({"content": p}) for p in pieces(turn.text)]
    for index, call in enumerate(calls):
        if call["type"] == "custom":
            events.append(chunk({"tool_calls": [dict(call, index=index)]}))
            continue
        fn = call["function"]
        events.append(chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                             "function": {"name": fn["name"],
                                                          "arguments": ""}}]}))
        events += [chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]})
                   for p in pieces(fn["arguments"], 24)]
    events.append(chunk({}, finish))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append(sse_event(dict(head, object="chat.completion.chunk", choices=[],
                                     usage=usage_json(turn.usage))))
    events.append(sse_event("[DONE]"))
    return sse_answer(events)
