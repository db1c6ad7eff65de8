"""GitHub Copilot CLI: the session events (``$COPILOT_HOME/session-state/<id>/events.jsonl``) and
the ``--output-format json`` stdout (the same events, plus ephemeral ones and a final ``result``).

Per call: ``session.usage_record`` (on disk only, not on stdout), written just before the
``assistant.message`` it paid for. ``inputTokens`` includes cache reads whatever the provider (with
an Anthropic provider Copilot adds them itself). ``cost`` there is a billing multiplier, not money:
it is kept in ``extra`` (with the premium requests and nano AIU), never as ``cost_usd``.
"""

from __future__ import annotations

from typing import Any

from .agentrun import AgentRun, ModelCall, Record, Step, ToolCall, Usage, as_int, as_text, unique

#: Tools whose arguments name the file they write.
FILE_TOOLS = {"create": "path", "edit": "path", "str_replace_editor": "path", "write": "path"}


def usage_of(raw: dict[str, Any]) -> Usage:
    return Usage(input=as_int(raw.get("inputTokens")),
                 cache_read=as_int(raw.get("cacheReadTokens")),
                 output=as_int(raw.get("outputTokens")),
                 cache_write=as_int(raw.get("cacheWriteTokens")),
                 reasoning=as_int(raw.get("reasoningTokens")))


def parse(stdout: list[Record] | None = None, events: list[Record] | None = None) -> AgentRun:
    """An :class:`AgentRun` from the session's events.jsonl and/or the JSON stdout."""
    run = AgentRun("copilot-cli")
    stdout, events = stdout or [], events or []
    tools: dict[str, ToolCall] = {}
    pending: list[ModelCall] = []
    multiplier = 0.0
    for event in events or stdout:
        kind, data = event.get("type"), event.get("data") or {}
        stamp = event.get("timestamp")
        if kind == "session.start":
            run.session_id = data.get("sessionId")
            run.cli_version = data.get("copilotVersion")
            run.model = data.get("selectedModel")
        elif kind == "session.model_change":
            run.model = data.get("newModel") or run.model
        elif kind == "user.message":
            run.steps.append(Step("user", str(data.get("content", "")), stamp))
        elif kind == "session.usage_record":
            raw = data.get("usage") or {}
            call = ModelCall(usage_of(raw), raw.get("model"), raw.get("apiCallId"), stamp)
            multiplier += float(raw.get("cost") or 0)
            run.calls.append(call)
            pending.append(call)
        elif kind == "assistant.message":
            step = Step("agent", str(data.get("content") or ""), stamp, data.get("model"),
                        data.get("reasoningText") or None)
            for request in data.get("toolRequests") or []:
                args = request.get("arguments")
                call_id = str(request.get("toolCallId"))
                tools[call_id] = ToolCall(call_id, str(request.get("name")),
                                          args if isinstance(args, dict) else {"input": args})
                step.tool_calls.append(tools[call_id])
            if pending:
                step.call = pending.pop(0)
            run.steps.append(step)
        elif kind == "tool.execution_complete":
            tool = tools.get(str(data.get("toolCallId")))
            if tool is not None:
                shell = data.get("shellExecution") or {}
                tool.ok = bool(data.get("success")) and as_int(shell.get("exitCode")) == 0
                result = data.get("result") or {}
                tool.output = as_text(result.get("content")) if isinstance(result, dict) else None
                error = data.get("error")
                if not tool.ok:
                    tool.error = as_text(error.get("message") if isinstance(error, dict)
                                         else error) or tool.output
        elif kind == "session.error":
            run.errors.append(f"{data.get('errorType', 'error')}: {data.get('message', '')}")
        elif kind == "session.shutdown":
            snapshot = data.get("accountingSnapshot") or data
            changes = snapshot.get("codeChanges") or {}
            run.files_touched += [str(f) for f in changes.get("filesModified") or []]
            for key in ("totalPremiumRequests", "totalNanoAiu", "totalPremiumRequestCost"):
                if key in snapshot:
                    run.extra[key] = snapshot[key]
            if data.get("shutdownType") == "error":
                run.errors.append(f"shutdown: {data.get('errorReason', 'error')}")
    result = next((e for e in reversed(stdout) if e.get("type") == "result"), None)
    if result is not None:
        run.session_id = run.session_id or result.get("sessionId")
        run.extra["exit_code"] = result.get("exitCode")
        if result.get("exitCode") not in (None, 0):
            run.errors.append(f"exit code {result.get('exitCode')}")
    if run.calls:
        run.extra["cost_multiplier_total"] = multiplier
    for tool in tools.values():
        field = FILE_TOOLS.get(tool.name)
        if field and isinstance(tool.arguments.get(field), str):
            run.files_touched.append(tool.arguments[field])
    run.final_text = next((s.text for s in reversed(run.steps)
                           if s.source == "agent" and s.text), None)
    run.files_touched = unique(run.files_touched)
    return run
