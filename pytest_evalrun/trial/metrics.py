"""Economics of a trial: tokens, cost and model, from what the agent left behind.

Sources, in order: OpenTelemetry JSONL files (``*otel*.jsonl``) with the GenAI semantic
conventions (``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``,
``gen_ai.request.model`` / ``gen_ai.response.model``), both OTLP/JSON export lines
(``resourceSpans`` ... ``attributes: [{key, value: {intValue}}]``) and flat lines
(``{"attributes": {"gen_ai.usage.input_tokens": 12}}``); then a ``metrics.json`` the agent
wrote itself (``input_tokens``, ``output_tokens``, ``cache_tokens`` or ``cache_read_tokens``,
``cost_usd``, ``model``). A metrics.json with per-call numbers (``calls``: a preset's, written
from the CLI's own records) is taken as it is: OpenTelemetry often states the same tokens more
than once (per call and per session), so it only fills gaps there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..outcome import Metrics

INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHE = ("gen_ai.usage.cache_read_input_tokens", "gen_ai.usage.cached_tokens")
COST = ("gen_ai.usage.cost", "gen_ai.usage.cost_usd", "cost_usd")
MODEL = ("gen_ai.response.model", "gen_ai.request.model")


def _otlp_value(value: Any) -> Any:
    if isinstance(value, dict):
        for key in ("intValue", "doubleValue", "stringValue", "boolValue"):
            if key in value:
                return value[key]
    return value


def _attribute_sets(obj: Any) -> Iterator[dict[str, Any]]:
    """Every attribute mapping anywhere in an OTLP/JSON or flat record."""
    stack = [obj]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            attrs = cur.get("attributes")
            if isinstance(attrs, dict):
                yield attrs
            elif isinstance(attrs, list):
                yield {
                    a["key"]: _otlp_value(a.get("value"))
                    for a in attrs
                    if isinstance(a, dict) and isinstance(a.get("key"), str)
                }
            stack.extend(v for k, v in cur.items() if k != "attributes")
        elif isinstance(cur, list):
            stack.extend(cur)


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def from_otel(files: list[Path]) -> Metrics | None:
    tin = tout = tcache = 0
    cost = 0.0
    seen = seen_cost = False
    model: str | None = None
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            for attrs in _attribute_sets(record):
                for keys, kind in ((INPUT, "in"), (OUTPUT, "out"), (CACHE, "cache")):
                    for key in keys:
                        n = _num(attrs.get(key))
                        if n is not None:
                            seen = True
                            if kind == "in":
                                tin += int(n)
                            elif kind == "out":
                                tout += int(n)
                            else:
                                tcache += int(n)
                            break
                for key in COST:
                    c = _num(attrs.get(key))
                    if c is not None:
                        cost += c
                        seen_cost = True
                        break
                for key in MODEL:
                    if isinstance(attrs.get(key), str):
                        model = attrs[key]
                        break
    if not seen and model is None:
        return None
    return Metrics(
        input_tokens=tin if seen else None,
        output_tokens=tout if seen else None,
        cache_tokens=tcache if seen else None,
        cost_usd=cost if seen_cost else None,
        model=model,
        source="otel",
    )


def from_agent_metrics(path: Path) -> Metrics | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None

    def integer(key: str) -> int | None:
        n = _num(data.get(key))
        return None if n is None else int(n)

    model = data.get("model")
    cache = integer("cache_tokens")
    return Metrics(
        input_tokens=integer("input_tokens"),
        output_tokens=integer("output_tokens"),
        cache_tokens=cache if cache is not None else integer("cache_read_tokens"),
        cost_usd=_num(data.get("cost_usd")),
        model=model if isinstance(model, str) else None,
        source="agent-metrics",
    )


def otel_files(artifacts: Path) -> list[Path]:
    if not artifacts.is_dir():
        return []
    return sorted(
        p
        for p in artifacts.iterdir()
        if p.is_file() and "otel" in p.name and p.name.endswith(".jsonl")
    )


def session_id(artifacts: Path) -> str | None:
    """The agent's session id from its metrics.json (``session_id``), else None."""
    try:
        data = json.loads((artifacts / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("session_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def _per_call(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("calls"), list)


def collect(artifacts: Path) -> Metrics:
    """Tokens, cost and model the agent reported; empty Metrics when it reported nothing."""
    agent = from_agent_metrics(artifacts / "metrics.json")
    if agent is not None and _per_call(artifacts / "metrics.json"):
        return agent
    otel = from_otel(otel_files(artifacts))
    if otel is None:
        return agent or Metrics()
    if agent is not None:  # fill gaps in the OTel numbers from the agent's own file
        for field in ("input_tokens", "output_tokens", "cache_tokens", "cost_usd", "model"):
            if getattr(otel, field) is None:
                setattr(otel, field, getattr(agent, field))
    return otel
