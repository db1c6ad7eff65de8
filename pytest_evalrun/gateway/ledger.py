"""What the gateway counted: one :class:`CallRecord` per model call, the trial's totals, its
budget and the cost of a call at a variant's ``pricing:``.

Pricing (USD per million tokens): ``input``, ``cached_input`` (default: ``input``), ``cache_write``
(default: ``input``), ``output``; and optionally ``long_context: {above: N, input: ..., ...}``:
a call whose prompt (``input``, cache included) exceeds ``above`` tokens is priced at those rates
instead (Anthropic's and Google's long-prompt tiers price the whole call so).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .usage import Tokens

#: Keys of a ``budget:`` mapping.
BUDGET_KEYS = ("max_cost_usd", "max_tokens", "max_calls")


@dataclass(frozen=True)
class Budget:
    """A trial's limits (None: no limit)."""

    max_cost_usd: float | None = None
    max_tokens: int | None = None
    max_calls: int | None = None

    @classmethod
    def of(cls, value: Mapping[str, Any] | None) -> Budget | None:
        if not value:
            return None
        return cls(
            max_cost_usd=float(value["max_cost_usd"]) if value.get("max_cost_usd") is not None
            else None,
            max_tokens=int(value["max_tokens"]) if value.get("max_tokens") is not None else None,
            max_calls=int(value["max_calls"]) if value.get("max_calls") is not None else None)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in BUDGET_KEYS if getattr(self, k) is not None}


def _rate(pricing: Mapping[str, Any], key: str, default: float) -> float:
    value = pricing.get(key)
    return float(value) if isinstance(value, (int, float)) else default


def call_cost(tokens: Tokens, pricing: Mapping[str, Any]) -> float:
    """USD of one call at ``pricing`` (per million tokens; long-prompt tier applied)."""
    tier = pricing.get("long_context")
    if isinstance(tier, Mapping) and isinstance(tier.get("above"), (int, float)) \
            and tokens.input > tier["above"]:
        pricing = {**{k: v for k, v in pricing.items() if k != "long_context"},
                   **{k: v for k, v in tier.items() if k != "above"}}
    per_input = _rate(pricing, "input", 0.0)
    cached = _rate(pricing, "cached_input", per_input)
    write = _rate(pricing, "cache_write", per_input)
    fresh = max(tokens.input - tokens.cache_read - tokens.cache_write, 0)
    total = (fresh * per_input + tokens.cache_read * cached + tokens.cache_write * write
             + tokens.output * _rate(pricing, "output", 0.0))
    return round(total / 1_000_000, 10)


@dataclass
class CallRecord:
    """One request the gateway handled."""

    seq: int
    method: str
    path: str
    #: The model API called (None: another request, e.g. a model list or count_tokens).
    api: str | None
    status: int | None = None
    model: str | None = None
    streamed: bool = False
    #: Did the request offer tools (False: a title or other background call)?
    tools: bool = False
    tokens: Tokens | None = None
    cost_usd: float | None = None
    #: Seconds from the request received to the response's first byte, and to its end.
    first_byte_s: float | None = None
    latency_s: float | None = None
    #: The upstream's (or the gateway's) error message.
    error: str | None = None
    #: Why the gateway answered itself: "budget", "key", "unreachable", "replay_unmatched".
    refused: str | None = None
    note: str | None = None

    @property
    def model_call(self) -> bool:
        """A model call the model answered (tokens counted)?"""
        return self.api is not None and self.tokens is not None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "seq": self.seq, "method": self.method, "path": self.path.split("?", 1)[0],
            "api": self.api, "status": self.status, "model": self.model,
            "streamed": self.streamed, "tools": self.tools,
            "first_byte_ms": None if self.first_byte_s is None else round(self.first_byte_s * 1e3,
                                                                           3),
            "latency_ms": None if self.latency_s is None else round(self.latency_s * 1e3, 3),
        }
        if self.tokens is not None:
            doc.update({"input_tokens": self.tokens.input,
                        "cache_read_tokens": self.tokens.cache_read,
                        "cache_write_tokens": self.tokens.cache_write,
                        "output_tokens": self.tokens.output,
                        "reasoning_tokens": self.tokens.reasoning})
        doc["cost_usd"] = self.cost_usd
        for key in ("error", "refused", "note"):
            if getattr(self, key):
                doc[key] = getattr(self, key)
        return doc


@dataclass
class Ledger:
    """Every request of one trial, in arrival order, and the budget they spend."""

    pricing: Mapping[str, Any] | None = None
    budget: Budget | None = None
    records: list[CallRecord] = field(default_factory=list)
    #: Set when the budget refused a call: what was exceeded.
    budget_stop: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def open(self, method: str, path: str, api: str | None) -> CallRecord:
        with self._lock:
            record = CallRecord(len(self.records) + 1, method, path, api)
            self.records.append(record)
            return record

    def close(self, record: CallRecord) -> None:
        if record.tokens is not None and self.pricing:
            record.cost_usd = call_cost(record.tokens, self.pricing)

    @property
    def calls(self) -> list[CallRecord]:
        """The model calls answered with usage, in order."""
        return [r for r in self.records if r.model_call]

    def totals(self) -> Tokens:
        total = Tokens()
        for r in self.calls:
            assert r.tokens is not None
            total = Tokens(total.input + r.tokens.input, total.cache_read + r.tokens.cache_read,
                           total.cache_write + r.tokens.cache_write,
                           total.output + r.tokens.output, total.reasoning + r.tokens.reasoning)
        return total

    def cost(self) -> float | None:
        if not self.pricing:
            return None
        return round(sum(r.cost_usd or 0.0 for r in self.calls), 10)

    def over_budget(self, current: CallRecord | None = None) -> str | None:
        """What of the budget is spent (a sentence), None while calls may go on (``current``:
        the call being decided, not counted)."""
        b = self.budget
        if b is None:
            return None
        with self._lock:
            calls = [r for r in self.records
                     if r.api is not None and r.refused is None and r is not current]
        total = self.totals()
        spent_tokens = total.input + total.output
        cost = self.cost()
        if b.max_calls is not None and len(calls) >= b.max_calls:
            return f"max_calls {b.max_calls} reached ({len(calls)} model calls made)"
        if b.max_tokens is not None and spent_tokens >= b.max_tokens:
            return f"max_tokens {b.max_tokens} reached ({spent_tokens} tokens used)"
        if b.max_cost_usd is not None and cost is not None and cost >= b.max_cost_usd:
            return f"max_cost_usd {b.max_cost_usd:g} reached (${cost:.6f} spent)"
        return None
