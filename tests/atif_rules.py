"""Harbor's trajectory rules that its JSON schema cannot express (enforced by its pydantic models).

Harbor itself is not installable here, so these checks restate the validators of
``harbor/models/trajectories/{trajectory,step}.py`` (0.25.0): sequential step ids, observation
results that name a tool call of their own step, agent-only fields, ``llm_call_count == 0``
without metrics or reasoning, parseable timestamps, and (ours) final metrics equal to the sum of
the step metrics when every call has a step.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

AGENT_ONLY = ("model_name", "reasoning_effort", "reasoning_content", "tool_calls", "metrics")


def rule_errors(doc: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    steps = doc.get("steps") or []
    if not steps:
        errors.append("no steps")
    for index, step in enumerate(steps, start=1):
        where = f"step {index}"
        if step.get("step_id") != index:
            errors.append(f"{where}: step_id {step.get('step_id')} (want {index})")
        if step.get("source") != "agent":
            errors += [f"{where}: {key} on a {step.get('source')} step"
                       for key in AGENT_ONLY if step.get(key) is not None]
        if step.get("llm_call_count") == 0 and (step.get("metrics") or
                                                 step.get("reasoning_content")):
            errors.append(f"{where}: llm_call_count 0 with metrics or reasoning")
        stamp = step.get("timestamp")
        if stamp is not None:
            try:
                datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            except ValueError:
                errors.append(f"{where}: bad timestamp {stamp!r}")
        ids = {c.get("tool_call_id") for c in step.get("tool_calls") or []}
        for result in (step.get("observation") or {}).get("results") or []:
            if result.get("source_call_id") is not None and result["source_call_id"] not in ids:
                errors.append(f"{where}: observation for unknown call {result['source_call_id']}")
    return errors


def step_totals(doc: dict[str, Any]) -> tuple[int, int, int]:
    """(prompt, cached, completion) summed over the steps' metrics."""
    metrics = [s["metrics"] for s in doc["steps"] if s.get("metrics")]
    return (sum(m.get("prompt_tokens", 0) for m in metrics),
            sum(m.get("cached_tokens", 0) for m in metrics),
            sum(m.get("completion_tokens", 0) for m in metrics))
