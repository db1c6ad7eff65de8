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

Provenance (``Metrics.source``): ``gateway`` and ``cli`` only for a preset's metrics.json, which the
plugin itself writes after the CLI exited (:func:`collect` with ``trusted``); everything else an
agent leaves is ``self_reported``.

These files are the agent's: whatever they hold never stops or fails the trial. A file that is not
a regular file (a FIFO, device, socket, symlink) or is too large is not read; a value that is not
a finite, non-negative number (NaN, 1e309, a 400-digit integer, a negative token count or cost, a
boolean) or JSON nested too deep to parse is left out. Each is said in :attr:`Metrics.notes`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..outcome import Metrics
from ..store.atomic import read_regular

#: Largest metrics.json read (bytes).
MAX_METRICS_BYTES = 4 * 1024 * 1024
#: Largest OpenTelemetry JSONL file read (bytes), and most files read.
MAX_OTEL_BYTES = 64 * 1024 * 1024
MAX_OTEL_FILES = 32
#: Largest token count or cost kept: beyond, the value is absurd and left out.
MAX_TOKENS = 10**15
MAX_COST_USD = 1e9
#: Most notes kept per trial.
MAX_NOTES = 20

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
    """A number from a JSON value or a numeric string; None when there is none (or NaN)."""
    if isinstance(value, bool):
        return None
    try:
        n = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return None if math.isnan(n) else n


class Notes:
    """What was left out, said once each, at most :data:`MAX_NOTES`."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        if text not in self.items and len(self.items) < MAX_NOTES:
            self.items.append(text)


def _usable(value: Any, key: str, where: str, notes: Notes, limit: float) -> float | None:
    """``value`` as a finite number in [0, limit]; None, with a note, when it is another
    number (or a string, a boolean, a list...); None without one when it is missing."""
    if value is None:
        return None
    n = _num(value)
    if n is None or not math.isfinite(n) or n < 0 or n > limit:
        shown = repr(value) if not isinstance(value, (list, dict)) else type(value).__name__
        if len(shown) > 40:
            shown = shown[:37] + "..."
        notes.add(f"{where}: {key} = {shown} left out (not a number from 0 to {limit:g})")
        return None
    return n


def _load_json(data: bytes, where: str, notes: Notes) -> Any:
    """The JSON value of ``data`` (NaN and Infinity read as such, checked later); None with a
    note when it is not UTF-8 JSON or nests too deep."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        notes.add(f"{where}: not UTF-8, not read")
    except RecursionError:
        notes.add(f"{where}: JSON nested too deep, not read")
    except ValueError:
        notes.add(f"{where}: not valid JSON, not read")
    return None


def _read(path: Path, limit: int, notes: Notes) -> bytes | None:
    try:
        return read_regular(path, limit)
    except FileNotFoundError:
        return None
    except OSError as exc:
        notes.add(f"{path.name}: not read: {exc.strerror or exc}".replace(str(path), path.name))
        return None


def from_otel(files: list[Path], notes: Notes | None = None) -> Metrics | None:
    notes = notes if notes is not None else Notes()
    tin = tout = tcache = 0
    cost = 0.0
    seen = seen_cost = False
    model: str | None = None
    for path in files[:MAX_OTEL_FILES]:
        data = _read(path, MAX_OTEL_BYTES, notes)
        if data is None:
            continue
        for line in data.decode("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except RecursionError:
                notes.add(f"{path.name}: a line nested too deep, skipped")
                continue
            except ValueError:
                continue
            for attrs in _attribute_sets(record):
                for keys, kind in ((INPUT, "in"), (OUTPUT, "out"), (CACHE, "cache")):
                    for key in keys:
                        n = _usable(attrs.get(key), key, path.name, notes, MAX_TOKENS)
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
                    c = _usable(attrs.get(key), key, path.name, notes, MAX_COST_USD)
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
        input_tokens=tin if seen and tin <= MAX_TOKENS else None,
        output_tokens=tout if seen and tout <= MAX_TOKENS else None,
        cache_tokens=tcache if seen and tcache <= MAX_TOKENS else None,
        cost_usd=cost if seen_cost and cost <= MAX_COST_USD else None,
        model=model,
        source="otel",
    )


def _metrics_doc(path: Path, notes: Notes) -> dict[str, Any] | None:
    """The agent's metrics.json as an object (None, with a note when it exists but cannot be
    used)."""
    data = _read(path, MAX_METRICS_BYTES, notes)
    if data is None:
        return None
    doc = _load_json(data, path.name, notes)
    if doc is not None and not isinstance(doc, dict):
        notes.add(f"{path.name}: not a JSON object, not read")
        return None
    return doc


def from_agent_metrics(path: Path, notes: Notes | None = None,
                       doc: dict[str, Any] | None = None) -> Metrics | None:
    notes = notes if notes is not None else Notes()
    data = doc if doc is not None else _metrics_doc(path, notes)
    if data is None:
        return None

    def integer(key: str) -> int | None:
        n = _usable(data.get(key), key, path.name, notes, MAX_TOKENS)
        return None if n is None else int(n)

    model = data.get("model")
    if model is not None and not isinstance(model, str):
        notes.add(f"{path.name}: model is not a string, left out")
    cache = integer("cache_tokens")
    return Metrics(
        input_tokens=integer("input_tokens"),
        output_tokens=integer("output_tokens"),
        cache_tokens=cache if cache is not None else integer("cache_read_tokens"),
        cost_usd=_usable(data.get("cost_usd"), "cost_usd", path.name, notes, MAX_COST_USD),
        model=model[:200] if isinstance(model, str) else None,
        source="agent-metrics",
    )


def otel_files(artifacts: Path) -> list[Path]:
    """The OpenTelemetry JSONL files in ``artifacts`` (by name; not checked to be regular
    files here: the readers refuse what is not)."""
    try:
        names = sorted(os.listdir(artifacts)) if artifacts.is_dir() else []
    except OSError:
        return []
    return [artifacts / n for n in names if "otel" in n and n.endswith(".jsonl")]


def session_id(artifacts: Path) -> str | None:
    """The agent's session id from its metrics.json (``session_id``), else None."""
    data = _metrics_doc(artifacts / "metrics.json", Notes())
    value = data.get("session_id") if data is not None else None
    return value[:200] if isinstance(value, str) and value else None


#: Sources a preset's metrics.json (written by the plugin after the CLI exited) may name.
TRUSTED_SOURCES = ("gateway", "cli")
#: Numbers of the CLI's own figures kept beside the gateway's.
CLI_FIGURES = ("input_tokens", "cache_tokens", "cache_write_tokens", "output_tokens",
               "reasoning_tokens", "cost_usd", "model_calls")


def _cli_figures(doc: dict[str, Any], path: Path, notes: Notes) -> dict[str, Any] | None:
    raw = doc.get("cli")
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {}
    for key in CLI_FIGURES:
        limit = MAX_COST_USD if key == "cost_usd" else MAX_TOKENS
        n = _usable(raw.get(key), f"cli.{key}", path.name, notes, limit)
        out[key] = None if n is None else (n if key == "cost_usd" else int(n))
    difference = raw.get("difference")
    out["difference"] = difference[:500] if isinstance(difference, str) else None
    return out


def _budget(doc: dict[str, Any]) -> dict[str, Any] | None:
    gateway = doc.get("gateway")
    budget = gateway.get("budget") if isinstance(gateway, dict) else None
    return dict(budget) if isinstance(budget, dict) else None


def collect(artifacts: Path, trusted: bool = False) -> Metrics:
    """Tokens, cost and model of the trial; empty Metrics when nothing reported them.
    What was left out is in the result's ``notes``.

    ``trusted``: the agent is a preset, whose metrics.json the plugin wrote after the CLI
    exited (replacing whatever the agent left there): its ``token_source`` (``gateway`` or
    ``cli``) is the source. Otherwise every figure is the agent's own word: ``self_reported``.
    """
    notes = Notes()
    path = artifacts / "metrics.json"
    doc = _metrics_doc(path, notes)
    agent = from_agent_metrics(path, notes, doc) if doc is not None else None
    if agent is not None:
        agent.source = "self_reported"
    if agent is not None and doc is not None and isinstance(doc.get("calls"), list):
        if trusted:
            source = doc.get("token_source", "cli")
            agent.source = source if source in TRUSTED_SOURCES else "cli"
            agent.cli = _cli_figures(doc, path, notes) if agent.source == "gateway" else None
            agent.budget = _budget(doc)
        agent.notes = notes.items
        return agent
    otel = from_otel(otel_files(artifacts), notes)
    if otel is not None:
        otel.source = "self_reported"
    if otel is None:
        result = agent or Metrics()
        result.notes = notes.items
        return result
    if agent is not None:  # fill gaps in the OTel numbers from the agent's own file
        for field in ("input_tokens", "output_tokens", "cache_tokens", "cost_usd", "model"):
            if getattr(otel, field) is None:
                setattr(otel, field, getattr(agent, field))
    otel.notes = notes.items
    return otel
