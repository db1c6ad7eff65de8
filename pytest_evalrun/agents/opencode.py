"""opencode: the ``opencode run --format json`` stdout, or ``opencode export <session id>``.

Both hold message parts; each ``step-finish`` part closes one model call and carries its
``tokens`` and ``cost``. opencode's ``tokens.input`` excludes cache reads and writes (1234 when the
API said 1241 with 7 cached): they are added back. ``cost`` is computed from the prices configured
for the model (0 when none are): it is USD, reported only when non-zero. The session-title call that
opencode makes first (no tools) is in neither record.
"""

from __future__ import annotations

from typing import Any

from .agentrun import AgentRun, ModelCall, Record, Step, ToolCall, Usage, as_int, unique

#: Tools whose input names the file they write.
FILE_TOOLS = {"write": "filePath", "edit": "filePath", "patch": "filePath"}


def usage_of(tokens: dict[str, Any]) -> Usage:
    cache = tokens.get("cache") or {}
    read, write = as_int(cache.get("read")), as_int(cache.get("write"))
    reasoning = as_int(tokens.get("reasoning"))
    return Usage(input=as_int(tokens.get("input")) + read + write, cache_read=read,
                 output=as_int(tokens.get("output")) + reasoning, cache_write=write,
                 reasoning=reasoning)


def parts_of(stdout: list[Record], export: Record | None) -> list[tuple[Record, Record]]:
    """(part, its message info) pairs in order, from the export or else the stdout events."""
    if export:
        pairs = []
        for message in export.get("messages") or []:
            info = message.get("info") or {}
            pairs += [(part, info) for part in message.get("parts") or []]
            if info.get("error"):  # a failed model call: no parts, the error on the message
                pairs.append(({"type": "error", "error": info["error"]}, info))
        return pairs
    pairs = []
    for event in stdout:
        part = event.get("part")
        if isinstance(part, dict):
            pairs.append((dict(part, timestamp=event.get("timestamp")), {"role": "assistant"}))
        elif event.get("type") == "error":
            pairs.append(({"type": "error", "error": event.get("error")}, {}))
    return pairs


def parse(stdout: list[Record] | None = None, export: Record | None = None) -> AgentRun:
    """An :class:`AgentRun` from ``--format json`` stdout events and/or an export document."""
    run = AgentRun("opencode")
    stdout = stdout or []
    info = (export or {}).get("info") or {}
    run.session_id = info.get("id") or next((e.get("sessionID") for e in stdout
                                             if e.get("sessionID")), None)
    run.cli_version = info.get("version")
    model = info.get("model") or {}
    run.model = model.get("id") if isinstance(model, dict) else None
    step: Step | None = None
    cost = 0.0
    for part, message in parts_of(stdout, export):
        kind = part.get("type")
        stamp = part.get("timestamp") or (part.get("time") or {}).get("start") \
            or (message.get("time") or {}).get("created")
        role = message.get("role")
        if role == "user" and kind == "text":
            run.steps.append(Step("user", str(part.get("text", "")), stamp))
            continue
        if kind == "error":
            error = part.get("error") or {}
            data = error.get("data") if isinstance(error, dict) else None
            run.errors.append(str((data or {}).get("message") or error))
            continue
        if kind == "patch":  # the files a step changed (snapshot diff), after its finish
            run.files_touched += [str(f) for f in part.get("files") or []]
            continue
        if kind in ("step-start", "step_start") or (step is None and kind in (
                "text", "reasoning", "tool", "tool_use")):
            step = Step("agent", "", stamp, message.get("modelID") or run.model)
            run.steps.append(step)
            if kind in ("step-start", "step_start"):
                continue
        if step is None:  # another part outside a step (snapshot, file, agent...)
            continue
        if kind == "text":
            text = str(part.get("text", ""))
            step.text = f"{step.text}\n{text}" if step.text else text
        elif kind == "reasoning":
            step.reasoning = (step.reasoning or "") + str(part.get("text", ""))
        elif kind in ("tool", "tool_use"):
            state = part.get("state") or {}
            status = state.get("status")
            args = state.get("input")
            exit_code = as_int((state.get("metadata") or {}).get("exit"))
            ok = None if status not in ("completed", "error") else (
                status == "completed" and exit_code == 0)
            call = ToolCall(str(part.get("callID")), str(part.get("tool")),
                            args if isinstance(args, dict) else {"input": args}, ok=ok,
                            output=state.get("output"), error=state.get("error"))
            if ok is False and call.error is None:
                call.error = call.output
            step.tool_calls.append(call)
            field = FILE_TOOLS.get(call.name)
            if field and call.ok and isinstance(call.arguments.get(field), str):
                run.files_touched.append(call.arguments[field])
        elif kind in ("step-finish", "step_finish"):
            call_cost = float(part.get("cost") or 0)
            cost += call_cost
            step.call = ModelCall(usage_of(part.get("tokens") or {}), step.model,
                                  part.get("messageID"), str(stamp) if stamp else None,
                                  call_cost or None)
            run.calls.append(step.call)
            step = None
    run.cost_usd = cost or None
    run.model = run.model or next((s.model for s in run.steps if s.model), None)
    run.final_text = next((s.text for s in reversed(run.steps)
                           if s.source == "agent" and s.text), None)
    run.files_touched = unique(run.files_touched)
    return run
