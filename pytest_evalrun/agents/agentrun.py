"""The common structure every coding-agent CLI's records are parsed into.

Token convention (one for all CLIs): ``Usage.input`` counts every prompt token, cache reads and
cache writes included (OpenAI's and Gemini's convention; Anthropic's ``input_tokens`` excludes
both, so the Claude parser adds them). ``cache_read`` is the part of ``input`` read from the cache.
``output`` counts every generated token, reasoning included. One :class:`ModelCall` per model API
call, never repeated: the parsers deduplicate what the CLIs write more than once.

``AgentRun.cost_usd`` is money only: set where the CLI reports an amount in USD (Claude Code's
list-price estimate, opencode's configured prices); Copilot's ``cost`` is a billing multiplier and
stays in ``extra``; Codex and Gemini CLI report no cost.

A failed tool call is one the CLI marked as an error, or a shell command that exited non-zero
(Copilot, opencode and Gemini CLI record those as successful tool runs with the exit code aside).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]


@dataclass
class Usage:
    input: int = 0
    cache_read: int = 0
    output: int = 0
    cache_write: int = 0
    reasoning: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input + other.input, self.cache_read + other.cache_read,
                     self.output + other.output, self.cache_write + other.cache_write,
                     self.reasoning + other.reasoning)


@dataclass
class ModelCall:
    """One model API call and what it cost in tokens."""

    usage: Usage
    model: str | None = None
    call_id: str | None = None
    timestamp: str | None = None
    cost_usd: float | None = None


@dataclass
class ToolCall:
    call_id: str
    name: str
    arguments: dict[str, Any]
    #: True/False once a result was seen; None when the CLI recorded no result.
    ok: bool | None = None
    output: str | None = None
    error: str | None = None


@dataclass
class Step:
    """A transcript step: a user or system message, or one agent response (one model call)."""

    source: str  # "user" | "system" | "agent"
    text: str = ""
    timestamp: str | None = None
    model: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    call: ModelCall | None = None


@dataclass
class AgentRun:
    """What one CLI run did, from its own records."""

    cli: str
    session_id: str | None = None
    cli_version: str | None = None
    model: str | None = None
    steps: list[Step] = field(default_factory=list)
    #: Every model call, in order, including any not tied to a step.
    calls: list[ModelCall] = field(default_factory=list)
    final_text: str | None = None
    errors: list[str] = field(default_factory=list)
    files_touched: list[str] = field(default_factory=list)
    cost_usd: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [call for step in self.steps for call in step.tool_calls]

    def totals(self) -> Usage:
        total = Usage()
        for call in self.calls:
            total = total + call.usage
        return total

    def tool_counts(self) -> dict[str, int]:
        return dict(Counter(call.name for call in self.tool_calls))

    def failed_tool_calls(self) -> list[ToolCall]:
        return [call for call in self.tool_calls if call.ok is False]

    def metrics(self) -> dict[str, Any]:
        """Token totals and per-call usage (the shape of a trial's metrics.json)."""
        total = self.totals()
        return {
            "input_tokens": total.input, "cache_read_tokens": total.cache_read,
            "output_tokens": total.output, "cache_write_tokens": total.cache_write,
            "reasoning_tokens": total.reasoning, "cost_usd": self.cost_usd,
            "calls": [{"model": c.model, "id": c.call_id, "input_tokens": c.usage.input,
                       "cache_read_tokens": c.usage.cache_read,
                       "output_tokens": c.usage.output, "cost_usd": c.cost_usd}
                      for c in self.calls],
        }

    def analysis(self) -> dict[str, Any]:
        """Turns, tool calls by name, failed calls, files touched, errors (analysis.json)."""
        return {
            "session_id": self.session_id,
            "turns": sum(1 for s in self.steps if s.source == "agent"),
            "model_calls": len(self.calls),
            "tool_calls": self.tool_counts(),
            "failed_tool_calls": [{"name": c.name, "id": c.call_id, "error": c.error}
                                  for c in self.failed_tool_calls()],
            "files_touched": self.files_touched,
            "errors": self.errors,
        }


def read_jsonl(text: str, wanted: Iterable[str] | None = None) -> list[Record]:
    """JSON objects of a JSONL text; other lines (log noise on a merged stream) are skipped.

    With ``wanted`` (record type values), only lines containing one of them as a JSON string are
    decoded: a cheap pre-filter (a line it keeps may still be of another type), which spares
    decoding the large records a parser ignores.
    """
    markers = [f'"{w}"' for w in wanted] if wanted is not None else None
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        if markers is not None and not any(m in line for m in markers):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def as_int(value: Any) -> int:
    """An int from a token count that may be missing, None, a float or a string."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def as_text(value: Any) -> str:
    """A tool result's content as text (strings, content-part lists, or JSON for the rest)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in value]
        if all(isinstance(p, dict) and "text" in p for p in value):
            return "\n".join(parts)
    return json.dumps(value)


def unique(items: Iterable[str]) -> list[str]:
    """``items`` without repeats, first occurrence order kept, empties dropped."""
    seen: dict[str, None] = {}
    for item in items:
        if item:
            seen.setdefault(item, None)
    return list(seen)
