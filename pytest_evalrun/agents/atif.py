"""Harbor's trajectory format (ATIF) from an :class:`AgentRun`: its steps and totals; the
version, timestamps and document are :mod:`pytest_evalrun.store.pier.trajectory`'s.

Rules beyond the JSON schema that Harbor's models enforce (and this builder keeps): step ids run
1..N; a tool call and its result are in the same step (each observation result names a tool call
of its step); ``model_name``, ``reasoning_content``, ``tool_calls`` and ``metrics`` only on agent
steps; timestamps are ISO 8601. ``prompt_tokens`` includes cached tokens. ``final_metrics`` are the
run's totals over every model call, so they equal the trial's metrics.json.
"""

from __future__ import annotations

from typing import Any

from ..store.pier.trajectory import atif_document, atif_timestamp
from .agentrun import AgentRun, ModelCall, Step


def _metrics(call: ModelCall) -> dict[str, Any]:
    metrics: dict[str, Any] = {"prompt_tokens": call.usage.input,
                               "completion_tokens": call.usage.output,
                               "cached_tokens": call.usage.cache_read}
    if call.cost_usd is not None:
        metrics["cost_usd"] = call.cost_usd
    extra = {k: v for k, v in (("cache_creation_tokens", call.usage.cache_write),
                               ("reasoning_tokens", call.usage.reasoning)) if v}
    if extra:
        metrics["extra"] = extra
    return metrics


def _step(index: int, step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {"step_id": index, "source": step.source, "message": step.text}
    stamp = atif_timestamp(step.timestamp)
    if stamp:
        out["timestamp"] = stamp
    if step.source != "agent":
        return out
    if step.model:
        out["model_name"] = step.model
    if step.reasoning:
        out["reasoning_content"] = step.reasoning
    if step.tool_calls:
        out["tool_calls"] = [{"tool_call_id": c.call_id, "function_name": c.name,
                              "arguments": c.arguments} for c in step.tool_calls]
        results = []
        for call in step.tool_calls:
            if call.ok is None and call.output is None:
                continue
            result: dict[str, Any] = {"source_call_id": call.call_id,
                                      "content": call.output or call.error or ""}
            if call.ok is False:
                result["extra"] = {"is_error": True}
            results.append(result)
        if results:
            out["observation"] = {"results": results}
    if step.call is not None:
        out["metrics"] = _metrics(step.call)
        out["llm_call_count"] = 1
    else:
        out["llm_call_count"] = 0
        out.pop("reasoning_content", None)
    return out


def trajectory(run: AgentRun, agent_version: str | None = None) -> dict[str, Any]:
    """The ATIF document of ``run`` (a dict ready for ``json.dump``)."""
    steps = [_step(i, s) for i, s in enumerate(run.steps, start=1)]
    if not steps:
        steps = [{"step_id": 1, "source": "system", "message": "(the agent recorded no steps)"}]
    total = run.totals()
    final: dict[str, Any] = {"total_prompt_tokens": total.input,
                             "total_completion_tokens": total.output,
                             "total_cached_tokens": total.cache_read,
                             "total_steps": len(steps)}
    if run.cost_usd is not None:
        final["total_cost_usd"] = run.cost_usd
    extra = {k: v for k, v in (("total_cache_creation_tokens", total.cache_write),
                               ("total_reasoning_tokens", total.reasoning),
                               ("model_calls", len(run.calls))) if v}
    if extra:
        final["extra"] = extra
    agent: dict[str, Any] = {"name": run.cli, "version": agent_version or run.cli_version
                             or "unknown"}
    if run.model:
        agent["model_name"] = run.model
    return atif_document(agent, steps, final, run.session_id)
