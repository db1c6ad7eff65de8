"""Token usage of one model call, read from the model API's own response as it streams through.

Four wire formats: Anthropic Messages, OpenAI Responses, OpenAI Chat Completions and Gemini
``generateContent`` / ``streamGenerateContent`` (SSE with ``alt=sse``, else a JSON array), each
streamed (server-sent events) or not (one JSON body). A :class:`Meter` is fed the response body
chunk by chunk as the gateway forwards it and keeps only what it needs: the partial last line of a
stream, or a non-streamed body up to :data:`MAX_BODY` bytes (beyond, the usage is not known and
said so).

One convention for every API (the same as :mod:`pytest_evalrun.agents.agentrun`): ``input`` counts
every prompt token, cache reads and writes included (Anthropic's ``input_tokens`` leaves both out:
they are added back); ``output`` counts every generated token, reasoning included (Gemini's
``candidatesTokenCount`` leaves the thoughts out: they are added).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

#: Largest non-streamed response body kept to read its usage (bytes).
MAX_BODY = 32 * 1024 * 1024
#: Longest SSE line kept while looking for the usage (bytes); longer lines are skipped.
MAX_LINE = 8 * 1024 * 1024

ANTHROPIC = "anthropic"
RESPONSES = "openai-responses"
CHAT = "openai-chat"
GEMINI = "gemini"
_GEMINI_PATH = re.compile(r"/models/([^/:]+):(generateContent|streamGenerateContent)$")
#: A streamed line worth decoding: it may carry the usage, the model or an error (most lines
#: of a stream are text deltas, skipped unread).
_WANTED = re.compile(rb'"(?:usage|usageMetadata|error)"\s*:\s*[{"]|"modelVersion"|'
                     rb'"type"\s*:\s*"(?:message_start|response\.failed|error)"')


@dataclass
class Tokens:
    """Tokens of one call (the convention above)."""

    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def api_of(path: str) -> str | None:
    """The model API a request path calls (None: not a model call, e.g. a model list)."""
    path = path.split("?", 1)[0]
    if path.endswith("/messages"):
        return ANTHROPIC
    if path.endswith("/responses"):
        return RESPONSES
    if path.endswith("/chat/completions"):
        return CHAT
    if _GEMINI_PATH.search(path):
        return GEMINI
    return None


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError, OverflowError):
        return 0


def _details(raw: dict[str, Any], key: str, field: str) -> int:
    details = raw.get(key)
    return _int(details.get(field)) if isinstance(details, dict) else 0


class Meter:
    """Reads one response's usage, model and error message from its body, chunk by chunk."""

    def __init__(self, api: str, streamed: bool) -> None:
        self.api = api
        self.streamed = streamed
        self.tokens: Tokens | None = None
        self.model: str | None = None
        self.error: str | None = None
        self.note: str | None = None
        self._line = b""
        self._body = bytearray()
        self._skipping = False
        #: Anthropic streams: message_start's usage, updated by message_delta's.
        self._anthropic: dict[str, Any] = {}

    # ------------------------------------------------------------------ feeding
    def feed(self, data: bytes) -> None:
        if not self.streamed:
            if len(self._body) + len(data) > MAX_BODY:
                self.note = f"response body over {MAX_BODY} bytes: usage not read"
                self._body = bytearray()
                self.streamed = False
                self._skipping = True
            elif not self._skipping:
                self._body += data
            return
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                rest = data[start:]
                if self._skipping or len(self._line) + len(rest) > MAX_LINE:
                    self._skipping, self._line = True, b""
                else:
                    self._line += rest
                return
            if self._skipping:
                self._skipping, self._line = False, b""
            else:
                self._event_line(self._line + data[start:end])
                self._line = b""
            start = end + 1

    def finish(self) -> None:
        if self.streamed:
            if self._line and not self._skipping:
                self._event_line(self._line)
            self._line = b""
            return
        body = bytes(self._body)
        self._body = bytearray()
        if not body.strip():
            return
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            return
        for doc in value if isinstance(value, list) else [value]:
            if isinstance(doc, dict):
                self._document(doc)

    # ------------------------------------------------------------------ reading
    def _event_line(self, line: bytes) -> None:
        if not _WANTED.search(line):
            return  # a text or tool-input delta: no usage, model or error in it
        line = line.strip()
        if not line.startswith(b"data:"):
            # Gemini's streamGenerateContent without alt=sse is a JSON array, one object a line
            # or not: read as a whole when small, else object by object where a line holds one.
            stripped = line.strip(b"[],")
            if stripped.startswith(b"{") and stripped.endswith(b"}"):
                self._json(stripped)
            return
        payload = line[5:].strip()
        if payload and payload != b"[DONE]":
            self._json(payload)

    def _json(self, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):
            return
        if isinstance(doc, dict):
            self._document(doc)

    def _document(self, doc: dict[str, Any]) -> None:
        error = doc.get("error")
        if isinstance(error, dict) and error.get("message"):
            self.error = str(error["message"])[:2000]
        elif isinstance(error, str) and error:
            self.error = error[:2000]
        if self.api == ANTHROPIC:
            self._anthropic_doc(doc)
        elif self.api == RESPONSES:
            response = doc.get("response") if isinstance(doc.get("response"), dict) else doc
            assert isinstance(response, dict)
            if isinstance(response.get("model"), str):
                self.model = response["model"]
            usage = response.get("usage")
            if isinstance(usage, dict):
                self.tokens = Tokens(
                    input=_int(usage.get("input_tokens")),
                    cache_read=_details(usage, "input_tokens_details", "cached_tokens"),
                    cache_write=_int(usage.get("cache_write_input_tokens")),
                    output=_int(usage.get("output_tokens")),
                    reasoning=_details(usage, "output_tokens_details", "reasoning_tokens"))
            failed = response.get("error")
            if doc.get("type") == "response.failed" and isinstance(failed, dict):
                self.error = str(failed.get("message"))[:2000]
        elif self.api == CHAT:
            if isinstance(doc.get("model"), str):
                self.model = doc["model"]
            usage = doc.get("usage")
            if isinstance(usage, dict):
                self.tokens = Tokens(
                    input=_int(usage.get("prompt_tokens")),
                    cache_read=_details(usage, "prompt_tokens_details", "cached_tokens"),
                    output=_int(usage.get("completion_tokens")),
                    reasoning=_details(usage, "completion_tokens_details", "reasoning_tokens"))
        elif self.api == GEMINI:
            if isinstance(doc.get("modelVersion"), str):
                self.model = doc["modelVersion"]
            usage = doc.get("usageMetadata")
            if isinstance(usage, dict):
                thoughts = _int(usage.get("thoughtsTokenCount"))
                self.tokens = Tokens(
                    input=_int(usage.get("promptTokenCount")),
                    cache_read=_int(usage.get("cachedContentTokenCount")),
                    output=_int(usage.get("candidatesTokenCount")) + thoughts,
                    reasoning=thoughts)

    def _anthropic_doc(self, doc: dict[str, Any]) -> None:
        kind = doc.get("type")
        message = doc.get("message") if kind == "message_start" else doc
        if not isinstance(message, dict):
            return
        if isinstance(message.get("model"), str):
            self.model = message["model"]
        usage = message.get("usage")
        if not isinstance(usage, dict):
            return
        if kind == "message_delta":
            self._anthropic.update({k: v for k, v in usage.items() if v is not None})
        else:
            self._anthropic = dict(usage)
        raw = self._anthropic
        read = _int(raw.get("cache_read_input_tokens"))
        write = _int(raw.get("cache_creation_input_tokens"))
        self.tokens = Tokens(input=_int(raw.get("input_tokens")) + read + write,
                             cache_read=read, cache_write=write,
                             output=_int(raw.get("output_tokens")),
                             reasoning=_details(raw, "output_tokens_details", "thinking_tokens"))


def request_facts(api: str, body: bytes) -> tuple[str | None, bool, bool]:
    """``(model asked for, streamed?, offers tools?)`` of a model request body (JSON)."""
    try:
        doc = json.loads(body) if body else {}
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None, False, False
    if not isinstance(doc, dict):
        return None, False, False
    model = doc.get("model") if isinstance(doc.get("model"), str) else None
    tools = bool(doc.get("tools"))
    return model, bool(doc.get("stream")), tools
