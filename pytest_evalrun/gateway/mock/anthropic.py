"""Anthropic Messages API (``POST /v1/messages``, also with ``?beta=true``), streaming and not.

Streaming follows the documented event sequence: ``message_start`` (usage with output_tokens 1),
``content_block_start`` / ``ping`` / ``content_block_delta`` (``text_delta`` or
``input_json_delta``) / ``content_block_stop`` per block, ``message_delta`` (stop_reason and the
final output_tokens), ``message_stop``. ``input_tokens`` excludes cache reads and writes.
"""

from __future__ import annotations

import json
from typing import Any

from .script import Turn, Usage
from .wire import Answer, json_answer, new_id, pieces, sse_answer, sse_event


def tool_names(body: dict[str, Any]) -> list[str]:
    return [str(t.get("name")) for t in body.get("tools") or [] if isinstance(t, dict)]


def is_aux(body: dict[str, Any]) -> bool:
    return not body.get("tools")


def usage_json(usage: Usage, output: int | None = None) -> dict[str, Any]:
    return {
        "input_tokens": usage.uncached_input,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cache_read,
        "output_tokens": usage.output if output is None else output,
        "service_tier": "standard",
    }


def _blocks(turn: Turn) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if turn.text:
        blocks.append({"type": "text", "text": turn.text})
    for call in turn.calls:
        blocks.append({"type": "tool_use", "id": new_id("toolu_"), "name": call.name,
                       "input": call.input})
    return blocks


def error(status: int, message: str) -> Answer:
    kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error",
            529: "overloaded_error"}.get(status, "api_error")
    return json_answer({"type": "error", "error": {"type": kind, "message": message}}, status,
                       {"request-id": new_id("req_")})


def answer(turn: Turn, body: dict[str, Any]) -> Answer:
    if turn.error_status:
        return error(turn.error_status, turn.text)
    model = str(body.get("model", "claude-mock"))
    blocks = _blocks(turn)
    stop = "tool_use" if turn.calls else "end_turn"
    message: dict[str, Any] = {
        "id": new_id("msg_"), "type": "message", "role": "assistant", "model": model,
        "content": blocks, "stop_reason": stop, "stop_sequence": None,
        "usage": usage_json(turn.usage),
    }
    headers = {"request-id": new_id("req_")}
    if not body.get("stream"):
        return json_answer(message, headers=headers)
    start = dict(message, content=[], stop_reason=None, usage=usage_json(turn.usage, output=1))
    events = [sse_event({"type": "message_start", "message": start}, "message_start")]
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            first: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"])]
        else:
            first = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            raw = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": ""}]
            deltas += [{"type": "input_json_delta", "partial_json": p} for p in pieces(raw, 24)]
        events.append(sse_event({"type": "content_block_start", "index": index,
                                 "content_block": first}, "content_block_start"))
        if index == 0:
            events.append(sse_event({"type": "ping"}, "ping"))
        for delta in deltas:
            events.append(sse_event({"type": "content_block_delta", "index": index,
                                     "delta": delta}, "content_block_delta"))
        events.append(sse_event({"type": "content_block_stop", "index": index},
                                "content_block_stop"))
    events.append(sse_event({"type": "message_delta",
                             "delta": {"stop_reason": stop, "stop_sequence": None},
                             "usage": {"output_tokens": turn.usage.output}}, "message_delta"))
    events.append(sse_event({"type": "message_stop"}, "message_stop"))
    return sse_answer(events, headers)


def count_tokens(body: dict[str, Any]) -> Answer:
    """``POST /v1/messages/count_tokens``: a rough count (never scripted)."""
    return json_answer({"input_tokens": max(1, len(json.dumps(body)) // 4)})
