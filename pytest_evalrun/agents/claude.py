"""Claude Code: the session transcript (``<config>/projects/<cwd slug>/<session id>.jsonl``) and the
``--output-format stream-json`` stdout.

One API message becomes one transcript line per content block (text, thinking, tool_use), each
repeating the message's usage: lines are grouped by ``message.id`` and the last usage kept. The
stdout's ``assistant`` events are split the same way and carry the usage of ``message_start``
(output 1), so per-call usage comes from the transcript; without one, the stdout ``result``'s
``modelUsage`` gives one total call per model. Anthropic's ``input_tokens`` excludes cache reads
and writes: they are added back. ``total_cost_usd`` is a list-price estimate in USD.
"""

from __future__ import annotations

from typing import Any

from .agentrun import AgentRun, ModelCall, Record, Step, ToolCall, Usage, as_int, as_text, unique

#: Tools whose input names the file they write.
FILE_TOOLS = {"Write": "file_path", "Edit": "file_path", "MultiEdit": "file_path",
              "NotebookEdit": "notebook_path"}


def usage_of(raw: dict[str, Any]) -> Usage:
    read = as_int(raw.get("cache_read_input_tokens"))
    write = as_int(raw.get("cache_creation_input_tokens"))
    thinking = as_int((raw.get("output_tokens_details") or {}).get("thinking_tokens"))
    return Usage(input=as_int(raw.get("input_tokens")) + read + write, cache_read=read,
                 output=as_int(raw.get("output_tokens")), cache_write=write, reasoning=thinking)


def _message_steps(lines: list[Record], run: AgentRun, with_usage: bool) -> None:
    """Steps from transcript or stdout lines (``user`` / ``assistant`` entries)."""
    by_id: dict[str, Step] = {}
    calls: dict[str, ModelCall] = {}
    tools: dict[str, ToolCall] = {}
    for line in lines:
        kind = line.get("type")
        message = line.get("message")
        if kind not in ("user", "assistant") or not isinstance(message, dict):
            continue
        stamp = line.get("timestamp")
        content = message.get("content")
        if kind == "user":
            if line.get("isMeta") or line.get("isCompactSummary"):
                continue
            texts = [content] if isinstance(content, str) else []
            for block in content if isinstance(content, list) else []:
                if block.get("type") == "text":
                    texts.append(str(block.get("text", "")))
                elif block.get("type") == "tool_result":
                    tool = tools.get(str(block.get("tool_use_id")))
                    if tool is not None:
                        tool.output = as_text(block.get("content"))
                        tool.ok = not block.get("is_error")
                        tool.error = tool.output if block.get("is_error") else None
            result = line.get("toolUseResult") or line.get("tool_use_result")
            if isinstance(result, dict) and result.get("filePath"):
                run.files_touched.append(str(result["filePath"]))
            if texts:
                run.steps.append(Step("user", "\n".join(texts), stamp))
            continue
        if message.get("model") == "<synthetic>" or line.get("isApiErrorMessage"):
            run.errors.append(as_text(content))
            continue
        key = str(message.get("id") or line.get("requestId") or line.get("uuid"))
        step = by_id.get(key)
        if step is None:
            step = by_id[key] = Step("agent", "", stamp, message.get("model"))
            run.steps.append(step)
        for block in content if isinstance(content, list) else []:
            btype = block.get("type")
            if btype == "text":
                step.text = (step.text + "\n" + block["text"]) if step.text else block["text"]
            elif btype == "thinking":
                step.reasoning = (step.reasoning or "") + str(block.get("thinking", ""))
            elif btype == "tool_use":
                call_id = str(block.get("id"))
                if call_id not in tools:
                    args = block.get("input")
                    tools[call_id] = ToolCall(call_id, str(block.get("name")),
                                              args if isinstance(args, dict) else {"input": args})
                    step.tool_calls.append(tools[call_id])
        if with_usage and isinstance(message.get("usage"), dict):
            # Every copy repeats the usage; the last one seen is final.
            model_call = calls.get(key)
            if model_call is None:
                model_call = calls[key] = ModelCall(Usage(), message.get("model"), key, stamp)
                run.calls.append(model_call)
                step.call = model_call
            model_call.usage = usage_of(message["usage"])
    for tool in tools.values():
        field = FILE_TOOLS.get(tool.name)
        if field and tool.ok is not False and isinstance(tool.arguments.get(field), str):
            run.files_touched.append(tool.arguments[field])


def parse(stdout: list[Record] | None = None, transcript: list[Record] | None = None) -> AgentRun:
    """An :class:`AgentRun` from the stream-json stdout and/or the transcript lines."""
    run = AgentRun("claude-code")
    stdout = stdout or []
    transcript = transcript or []
    result = next((r for r in reversed(stdout) if r.get("type") == "result"), None)
    init = next((r for r in stdout if r.get("type") == "system" and r.get("subtype") == "init"),
                None)
    cost_state = next((r for r in reversed(transcript) if r.get("type") == "cost-state"), None)
    _message_steps(transcript or stdout, run, with_usage=bool(transcript))
    for line in transcript:
        if line.get("sessionId") and not run.session_id:
            run.session_id = str(line["sessionId"])
        if line.get("version") and not run.cli_version:
            run.cli_version = str(line["version"])
    if init:
        run.session_id = run.session_id or init.get("session_id")
        run.model = init.get("model")
        run.cli_version = run.cli_version or init.get("claude_code_version")
    if not transcript and result and isinstance(result.get("modelUsage"), dict):
        for model, raw in result["modelUsage"].items():
            usage = usage_of({"input_tokens": raw.get("inputTokens"),
                              "cache_read_input_tokens": raw.get("cacheReadInputTokens"),
                              "cache_creation_input_tokens": raw.get("cacheCreationInputTokens"),
                              "output_tokens": raw.get("outputTokens")})
            run.calls.append(ModelCall(usage, model, None, None, raw.get("costUSD")))
        run.extra["per_call_usage"] = False
    if result:
        run.session_id = run.session_id or result.get("session_id")
        run.final_text = result.get("result")
        run.cost_usd = result.get("total_cost_usd")
        run.extra.update({k: result[k] for k in ("num_turns", "subtype", "terminal_reason",
                                                 "duration_ms", "permission_denials")
                          if k in result})
        if result.get("is_error") or result.get("subtype") not in (None, "success"):
            run.errors.append(f"result: {result.get('subtype')}: {result.get('result', '')}")
    elif cost_state:
        run.cost_usd = cost_state.get("totalCostUSD")
    if run.model is None:
        run.model = next((s.model for s in run.steps if s.model), None)
    if run.final_text is None:
        run.final_text = next((s.text for s in reversed(run.steps)
                               if s.source == "agent" and s.text), None)
    run.files_touched = unique(run.files_touched)
    return run
