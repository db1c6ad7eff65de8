"""Harbor's trajectory format (ATIF-v1.6), in one place: its version, its timestamps and the
document's shape (:func:`atif_document`), and an agent's ``events.jsonl`` (the evalrun event
convention) as a trajectory.

Both trajectories evalrun writes are built here: a preset's (``agents/atif.py`` maps its
:class:`AgentRun` to steps and calls :func:`atif_document`) and a command agent's events
(:func:`read_events` reads the file, :func:`events_to_trajectory` builds the
``agent/trajectory.json`` content; writing it is the job's business).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_evalrun.store.atomic import read_regular
from pytest_evalrun.store.pier.harborvalues import float_or_none, fmt_time, int_or_none, parse_time

#: The ATIF version of the trajectories written.
ATIF_SCHEMA_VERSION = "ATIF-v1.6"
#: Epoch numbers above this are milliseconds (1e11 seconds is the year 5138).
_EPOCH_MS = 1e11


def atif_timestamp(value: Any) -> str | None:
    """An ATIF (ISO 8601, UTC) timestamp from ISO 8601 text or epoch seconds or milliseconds;
    None when ``value`` is neither (the step then has no timestamp)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > _EPOCH_MS:
        value = value / 1000
    try:
        return fmt_time(parse_time(value))
    except (OverflowError, ValueError, OSError):
        return None


def atif_document(
    agent: Mapping[str, Any],
    steps: list[dict[str, Any]],
    final_metrics: Mapping[str, Any],
    session_id: str | None = None,
) -> dict[str, Any]:
    """The trajectory document (a dict ready for ``json.dump``)."""
    trajectory: dict[str, Any] = {"schema_version": ATIF_SCHEMA_VERSION}
    if session_id:
        trajectory["session_id"] = session_id
    trajectory.update(
        {"agent": dict(agent), "steps": steps, "final_metrics": dict(final_metrics)}
    )
    return trajectory

_ROLE_SOURCES = {"user": "user", "system": "system", "assistant": "agent", "agent": "agent"}


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                parts.append(json.dumps(part, ensure_ascii=False, default=str))
        return "\n".join(parts)
    return json.dumps(content, ensure_ascii=False, default=str)


def events_to_trajectory(
    events: Iterable[Mapping[str, Any]],
    *,
    agent_name: str,
    agent_version: str,
    model_name: str | None = None,
    session_id: str | None = None,
) -> dict[str, Any] | None:
    """Convert events of the evalrun convention to an ATIF-v1.6 trajectory (None if no steps).

    The convention (one JSON object per line of ``events.jsonl``)::

        {"type": "message", "role": "user"|"assistant"|"system", "content": "...",
         "timestamp": "...", "model": "..."}
        {"type": "tool_call", "id": "...", "name": "...", "arguments": {...}, "timestamp": ...}
        {"type": "tool_result", "id": "...", "content": "..."}
        {"type": "usage", "input_tokens": N, "output_tokens": N, "cached_tokens": N,
         "cost_usd": X}

    Messages become steps (assistant -> source ``agent``); tool calls attach to the current
    agent step (a new one, with an empty message, when there is none still open); tool
    results become the observation of the step holding the call; usage adds to the metrics
    of the latest agent step and to ``final_metrics``. Other event types are ignored.
    """
    steps: list[dict[str, Any]] = []
    call_step: dict[str, dict[str, Any]] = {}
    totals = {"prompt": 0, "completion": 0, "cached": 0}
    seen = {"prompt": False, "completion": False, "cached": False}
    total_cost: float | None = None
    n_calls = 0

    def new_step(source: str, message: str, event: Mapping[str, Any]) -> dict[str, Any]:
        step: dict[str, Any] = {"step_id": len(steps) + 1, "source": source, "message": message}
        stamp = atif_timestamp(event.get("timestamp"))
        if stamp is not None:
            step["timestamp"] = stamp
        model = event.get("model")
        if source == "agent" and (isinstance(model, str) or model_name):
            step["model_name"] = model if isinstance(model, str) else model_name
        steps.append(step)
        return step

    def open_agent_step(event: Mapping[str, Any]) -> dict[str, Any]:
        if steps and steps[-1]["source"] == "agent" and "observation" not in steps[-1]:
            return steps[-1]
        return new_step("agent", "", event)

    for event in events:
        kind = event.get("type")
        if kind == "message":
            role = event.get("role")
            if not isinstance(role, str) or role not in _ROLE_SOURCES:
                continue
            step = new_step(_ROLE_SOURCES[role], _text_of(event.get("content")), event)
            reasoning = event.get("reasoning")
            if isinstance(reasoning, str) and step["source"] == "agent":
                step["reasoning_content"] = reasoning
        elif kind == "tool_call":
            step = open_agent_step(event)
            n_calls += 1
            call_id = event.get("id")
            call_id = str(call_id) if call_id not in (None, "") else f"call_{n_calls}"
            arguments = event.get("arguments")
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except ValueError:
                    arguments = {"input": arguments}
            if not isinstance(arguments, Mapping):
                arguments = {} if arguments is None else {"input": arguments}
            step.setdefault("tool_calls", []).append(
                {
                    "tool_call_id": call_id,
                    "function_name": str(event.get("name") or "unknown"),
                    "arguments": dict(arguments),
                }
            )
            call_step[call_id] = step
        elif kind == "tool_result":
            call_id = event.get("id")
            key = str(call_id) if call_id not in (None, "") else None
            target = call_step.get(key) if key is not None else None
            if target is None:
                key = None  # not a call we know: an observation of the latest agent step
                agent_steps = [s for s in steps if s["source"] == "agent"]
                if not agent_steps:
                    continue
                target = agent_steps[-1]
            observation = target.setdefault("observation", {"results": []})
            observation["results"].append(
                {"source_call_id": key, "content": _text_of(event.get("content"))}
            )
        elif kind == "usage":
            values = {
                "prompt": int_or_none(event.get("input_tokens")),
                "completion": int_or_none(event.get("output_tokens")),
                "cached": int_or_none(event.get("cached_tokens", event.get("cache_tokens"))),
            }
            cost = float_or_none(event.get("cost_usd"))
            agent_steps = [s for s in steps if s["source"] == "agent"]
            metrics = agent_steps[-1].setdefault("metrics", {}) if agent_steps else None
            for name, value in values.items():
                if value is None:
                    continue
                totals[name] += value
                seen[name] = True
                if metrics is not None:
                    field = f"{name}_tokens"
                    metrics[field] = (metrics.get(field) or 0) + value
            if cost is not None:
                total_cost = (total_cost or 0.0) + cost
                if metrics is not None:
                    metrics["cost_usd"] = (metrics.get("cost_usd") or 0.0) + cost
    if not steps:
        return None
    final: dict[str, Any] = {"total_steps": len(steps)}
    if seen["prompt"]:
        final["total_prompt_tokens"] = totals["prompt"]
    if seen["completion"]:
        final["total_completion_tokens"] = totals["completion"]
    if seen["cached"]:
        final["total_cached_tokens"] = totals["cached"]
    if total_cost is not None:
        final["total_cost_usd"] = total_cost
    agent: dict[str, Any] = {"name": agent_name, "version": agent_version}
    if model_name:
        agent["model_name"] = model_name
    return atif_document(agent, steps, final, session_id)


#: Largest events.jsonl converted to a trajectory (bytes).
MAX_EVENTS_BYTES = 256 * 1024 * 1024


def read_events(path: Path) -> list[dict[str, Any]] | None:
    """The events of an ``events.jsonl``; None when absent, not a regular file, too large, or
    not JSON objects line by line (also when a line nests too deep: the agent's file)."""
    try:
        text = read_regular(path, MAX_EVENTS_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None
    events = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            return None
        if not isinstance(event, dict):
            return None
        events.append(event)
    return events
