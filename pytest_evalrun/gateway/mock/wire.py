"""What a mock API answers: a status, headers and body chunks (one per SSE event when streaming)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    status: int
    chunks: list[bytes]
    content_type: str = "application/json"
    #: Sent with chunked transfer encoding, one chunk per event, as the real APIs stream.
    stream: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def json_answer(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, [json.dumps(value).encode()], headers=headers or {})


def openai_error(status: int, message: str) -> Answer:
    """An OpenAI API error (Responses and Chat Completions answer alike)."""
    return json_answer({"error": {"message": message, "type": "invalid_request_error",
                                  "param": None, "code": None}}, status)


def sse_event(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; ``data`` is JSON-encoded unless it is already a string."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def sse_answer(events: list[bytes], headers: dict[str, str] | None = None) -> Answer:
    return Answer(200, events, "text/event-stream; charset=utf-8", True, headers or {})


def new_id(prefix: str, size: int = 24) -> str:
    return prefix + uuid.uuid4().hex[:size]


def pieces(text: str, size: int = 12) -> list[str]:
    """``text`` cut into streaming deltas (at least one, possibly empty)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
