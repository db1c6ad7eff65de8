"""Gemini API: ``POST /v1beta/models/<model>:generateContent`` and ``:streamGenerateContent``.

``streamGenerateContent?alt=sse`` sends ``GenerateContentResponse`` objects as bare ``data:`` lines
(no event names, no ``[DONE]``); without ``alt=sse`` it returns them as one JSON array. Every chunk
carries ``usageMetadata`` (prompt counts from the first chunk on); the last one has the
``finishReason`` and the candidates count. ``promptTokenCount`` includes
``cachedContentTokenCount``.
"""

from __future__ import annotations

import json
from typing import Any

from .script import Turn, Usage
from .wire import Answer, json_answer, new_id, pieces, sse_event


def tool_names(body: dict[str, Any]) -> list[str]:
    names = []
    for spec in body.get("tools") or []:
        for decl in (spec or {}).get("functionDeclarations") or []:
            names.append(str(decl.get("name")))
    return names


def is_aux(body: dict[str, Any]) -> bool:
    return not tool_names(body)


def wants_json(body: dict[str, Any]) -> bool:
    config = body.get("generationConfig") or {}
    return config.get("responseMimeType") == "application/json" or any(
        k in config for k in ("responseSchema", "responseJsonSchema"))


def usage_json(usage: Usage, output: int | None = None) -> dict[str, Any]:
    out = usage.output if output is None else output
    meta: dict[str, Any] = {
        "promptTokenCount": usage.input,
        "candidatesTokenCount": out,
        "totalTokenCount": usage.input + out + usage.reasoning,
    }
    if usage.cache_read:
        meta["cachedContentTokenCount"] = usage.cache_read
    if usage.reasoning:
        meta["thoughtsTokenCount"] = usage.reasoning
    return meta


def error(status: int, message: str) -> Answer:
    names = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED"}
    return json_answer({"error": {"code": status, "message": message,
                                  "status": names.get(status, "INTERNAL")}}, status)


def answer(turn: Turn, body: dict[str, Any], model: str, stream: bool, sse: bool) -> Answer:
    if turn.error_status:
        return error(turn.error_status, turn.text)
    response_id = new_id("", 22)
    parts_list: list[list[dict[str, Any]]] = []
    if turn.text:
        parts_list += [[{"text": p}] for p in pieces(turn.text, 16)]
    calls = [{"functionCall": {"name": c.name, "args": c.input}} for c in turn.calls]
    if calls:
        parts_list.append(calls)
    if not parts_list:
        parts_list = [[{"text": ""}]]

    def chunk(parts: list[dict[str, Any]], last: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = "STOP"
        return {"candidates": [candidate],
                "usageMetadata": usage_json(turn.usage, None if last else 0),
                "modelVersion": model, "responseId": response_id}

    if not stream:
        whole = [part for parts in parts_list for part in parts]
        if turn.text and not calls:
            whole = [{"text": turn.text}]
        return json_answer(chunk(whole, True))
    chunks = [chunk(parts, i == len(parts_list) - 1) for i, parts in enumerate(parts_list)]
    if not sse:
        return json_answer(chunks)
    return Answer(200, [sse_event(c) for c in chunks], "text/event-stream", True)


def aux_text(body: dict[str, Any], text: str, data: dict[str, Any]) -> str:
    """What an auxiliary request (no tools) is answered: JSON when it asks for JSON."""
    return json.dumps(data) if wants_json(body) else text
