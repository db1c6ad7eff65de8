"""A preset's evidence files, from the CLI's parsed records, into the trial's artifacts dir.

``events.jsonl`` (the CLI's own session events), ``session.md`` (the CLI's own when it writes
one, else rendered here), ``metrics.json`` (tokens and cost, per call too), ``analysis.json``,
``trajectory.json`` (ATIF; the Pier trial's ``agent/trajectory.json``) and, when given, the
OpenTelemetry JSONL. The trial runner promotes events.jsonl, session.md and analysis.json to the
trial root and reads metrics.json into the outcome.

Cost: with a ``pricing:`` table (USD per million tokens: ``input``, ``cached_input``,
``output``, optionally ``cache_write``) every call is priced and the total is their sum; without
one, only money the CLI reported itself is kept (Claude Code's, opencode's).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..gateway import Tokens
from ..gateway import call_cost as gateway_cost
from ..store.atomic import strict_dumps, write_text_atomic
from .agentrun import AgentRun, ModelCall, Step
from .atif import trajectory
from .preset import Records
from .route import Routed, gateway_doc, merge_usage

#: Longest tool output shown in a rendered session.md (characters).
MAX_SHOWN = 2000
PRICING_KEYS = ("input", "cached_input", "output", "cache_write")


def call_cost(call: ModelCall, pricing: Mapping[str, Any]) -> float:
    """USD of one call at ``pricing`` (per million tokens; its ``long_context`` tier too)."""
    u = call.usage
    return gateway_cost(Tokens(u.input, u.cache_read, u.cache_write, u.output, u.reasoning),
                        pricing)


def apply_pricing(run: AgentRun, pricing: Mapping[str, float] | None) -> str | None:
    """Price ``run``'s calls with ``pricing`` (when given); return where the cost comes from:
    ``"pricing"``, ``"cli"`` (money the CLI reported) or None (no cost)."""
    if pricing:
        for call in run.calls:
            call.cost_usd = call_cost(call, pricing)
        run.cost_usd = round(sum(c.cost_usd or 0.0 for c in run.calls), 10)
        return "pricing"
    return "cli" if run.cost_usd is not None else None


def metrics_doc(run: AgentRun, preset: str, cost_source: str | None,
                token_source: str = "cli") -> dict[str, Any]:
    """metrics.json: the totals the trial reads (input includes cache reads), per call too.
    ``token_source``: ``gateway`` (counted by the trial's model gateway) or ``cli`` (the
    CLI's own records)."""
    doc = run.metrics()
    doc.update({"source": "preset", "token_source": token_source, "preset": preset,
                "session_id": run.session_id,
                "model": run.model, "cost_source": cost_source,
                "model_calls": len(run.calls),
                "per_call_usage": run.extra.get("per_call_usage", True)})
    for key in ("cost_multiplier_total", "totalPremiumRequests", "totalNanoAiu"):
        if key in run.extra:
            doc.setdefault("extra", {})[key] = run.extra[key]
    return doc


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _fence(text: str) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}\n{text}\n{ticks}"


def _shown(text: str | None) -> str:
    text = text or ""
    if len(text) > MAX_SHOWN:
        return text[:MAX_SHOWN] + f"\n... ({len(text) - MAX_SHOWN} more characters)"
    return text


def _render_step(step: Step, agent: str) -> list[str]:
    title = {"user": "User", "system": "System"}.get(step.source, agent)
    out = [f"### {title}", ""]
    if step.reasoning:
        out += ["> " + line for line in step.reasoning.splitlines()] + [""]
    if step.text:
        out += [step.text, ""]
    for call in step.tool_calls:
        status = {True: "ok", False: "failed", None: "no result"}[call.ok]
        out += [f"#### `{call.name}` ({status})", "",
                _fence(json.dumps(call.arguments, indent=2, ensure_ascii=False)), ""]
        result = call.error if call.ok is False and call.error else call.output
        if result:
            out += [_fence(_shown(result)), ""]
    if step.call is not None:
        u = step.call.usage
        out += [f"*tokens: input {u.input} (cache read {u.cache_read}), output {u.output}*", ""]
    return out


def render_session(run: AgentRun) -> str:
    """A readable transcript: ``### User`` / ``### <agent>`` / ``#### `tool` `` sections."""
    out = [f"# {run.cli} session {run.session_id or '(no id)'}", ""]
    if run.model:
        out += [f"model: {run.model}", ""]
    for step in run.steps:
        out += _render_step(step, run.cli)
    if run.errors:
        out += ["### Errors", ""] + [f"- {e}" for e in run.errors] + [""]
    total = run.totals()
    out += ["---", "", f"{len(run.calls)} model calls; tokens: input {total.input} "
            f"(cache read {total.cache_read}), output {total.output}"
            + (f"; cost ${run.cost_usd:.6f}" if run.cost_usd is not None else ""), ""]
    return "\n".join(out)


def _dump(path: Path, doc: Any) -> None:
    _write(path, strict_dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _write(path: Path, text: str) -> None:
    """Replace ``path`` (atomically): whatever the agent left there (a FIFO, which a plain
    write would block on, or a link outside) is replaced, never written through."""
    write_text_atomic(path, text)


def write_evidence(artifacts: Path, records: Records, *, preset: str, otel_name: str = "",
                   pricing: Mapping[str, float] | None = None,
                   agent_version: str | None = None, routed: Routed | None = None,
                   only_metrics: bool = False) -> dict[str, Any]:
    """Write the evidence files; return metrics.json's content. With ``routed`` (the trial's
    model gateway), tokens and cost are the gateway's and the CLI's own figures are kept
    beside them (``cli``); ``only_metrics``: metrics.json alone."""
    artifacts.mkdir(parents=True, exist_ok=True)
    run = records.run
    cost_source = apply_pricing(run, pricing)
    cli: dict[str, Any] | None = None
    if routed is not None:
        cli = dict(merge_usage(run, routed), cost_source=cost_source)
        cost_source = "pricing" if pricing else None
    metrics = metrics_doc(run, preset, cost_source,
                          "gateway" if routed is not None else "cli")
    if routed is not None:
        metrics["cli"] = cli
        metrics["gateway"] = gateway_doc(routed)
    if only_metrics:
        _dump(artifacts / "metrics.json", metrics)
        return metrics
    if records.events is not None:
        _write(artifacts / "events.jsonl", records.events)
    session = artifacts / "session.md"
    if records.session_md is None or not _regular(session):
        _write(session, render_session(run))
    if records.otel and otel_name:
        _write(artifacts / otel_name, records.otel)
    _dump(artifacts / "metrics.json", metrics)
    _dump(artifacts / "analysis.json", run.analysis())
    doc = trajectory(run, agent_version)
    doc["final_metrics"].setdefault("extra", {})["token_source"] = metrics["token_source"]
    _dump(artifacts / "trajectory.json", doc)
    return metrics
