"""OpenAI Responses API (``POST /v1/responses``), streaming and not.

Streaming emits semantic events, each with a ``sequence_number``: ``response.created``,
``response.in_progress``, then per output item ``response.output_item.added``, its deltas
(``response.content_part.added`` / ``response.output_text.delta`` / ``.done`` /
``response.content_part.done`` for a message; ``response.function_call_arguments.delta`` / ``.done``
for a function call; ``response.custom_tool_call_input.delta`` / ``.done`` for a custom tool call),
``response.output_item.done``, and finally ``response.completed`` carrying the usage. There is no
``[DONE]`` sentinel. ``input_tokens`` includes the cached tokens.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .script import Turn, Usage
from .wire import Answer, json_answer, new_id, openai_error, pieces, sse_answer, sse_event


def tool_names(body: dict[str, Any]) -> list[str]:
    return [str(t["name"]) for t in body.get("tools") or [] if isinstance(t, dict) and "name" in t]


def is_aux(body: dict[str, Any]) -> bool:
    return not body.get("tools")


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input,
        "input_tokens_details": {"cached_tokens": usage.cache_read},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.input + usage.output,
    }


def _items(turn: Turn) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if turn.text:
        items.append({"id": new_id("msg_"), "type": "message", "status": "completed",
                      "role": "assistant",
                      "content": [{"type": "output_text", "text": turn.text, "annotations": []}]})
    for call in turn.calls:
        if call.custom:
            items.append({"id": new_id("ctc_"), "type": "custom_tool_call", "status": "completed",
                          "call_id": new_id("call_"), "name": call.name, "input": call.input})
        else:
            items.append({"id": new_id("fc_"), "type": "function_call", "status": "completed",
                          "call_id": new_id("call_"), "name": call.name,
                          "arguments": json.dumps(call.input)})
    return items


def answer(turn: Turn, body: dict[str, Any]) -> Answer:
    if turn.error_status:
        return openai_error(turn.error_status, turn.text)
    items = _items(turn)
    response: dict[str, Any] = {
        "id": new_id("resp_"), "object": "response", "created_at": int(time.time()),
        "status": "completed", "model": str(body.get("model", "gpt-mock")), "output": items,
        "parallel_tool_calls": bool(body.get("parallel_tool_calls", False)),
        "usage": usage_json(turn.usage), "error": None, "incomplete_details": None,
    }
    if not body.get("stream"):
        return json_answer(response)
    seq = iter(range(1_000_000))
    events: list[bytes] = []

    def emit(kind: str, **data: Any) -> None:
        events.append(sse_event({"type": kind, "sequence_number": next(seq), **data}, kind))

    pending = dict(response, status="in_progress", output=[], usage=None)
    emit("response.created", response=pending)
    emit("response.in_progress", response=pending)
    for index, item in enumerate(items):
        ids = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            emit("response.output_item.added", output_index=index,
                 item=dict(item, status="in_progress", content=[]))
            part = {"type": "output_text", "text": "", "annotations": []}
            emit("response.content_part.added", **ids, content_index=0, part=part)
            text = item["content"][0]["text"]
            for piece in pieces(text):
                emit("response.output_text.delta", **ids, content_index=0, delta=piece,
                     logprobs=[])
            emit("response.output_text.done", **ids, content_index=0, text=text, logprobs=[])
            emit("response.content_part.done", **ids, content_index=0, part=item["content"][0])
        elif item["type"] == "function_call":
            emit("response.output_item.added", output_index=index,
                 item=dict(item, status="in_progress", arguments=""))
            for piece in pieces(item["arguments"], 24):
                emit("response.function_call_arguments.delta", **ids, delta=piece)
            emit("response.function_call_arguments.done", **ids, name=item["name"],
                 arguments=item["arguments"])
        else:
            emit("response.output_item.added", output_index=index,
                 item=dict(item, status="in_progress", input=""))
            for piece in pieces(item["input"], 24):
                emit("response.custom_tool_call_input.delta", **ids, delta=piece)
            emit("response.custom_tool_call_input.done", **ids, input=item["input"])
        emit("response.output_item.done", output_index=index, item=item)
    emit("response.completed", response=response)
    return sse_answer(events)
