"""Gemini CLI: the chat file (``~/.gemini/tmp/<project>/chats/session-*.jsonl``) and the
``--output-format stream-json`` stdout.

The chat file is a log of patches: a header (``sessionId``), ``$set`` lines that replace fields
(``messages``: the initial context), and message lines. A model message is written twice with the
same ``id`` (before and after its tool results): the last copy wins. Per call: the ``gemini``
message's ``tokens`` (``input`` = promptTokenCount, cache reads included; ``output`` plus
``thoughts`` are generated tokens). Gemini CLI reports no cost. Without the chat file, stdout's
``result.stats`` gives one total call.
"""

from __future__ import annotations

import re
from typing import Any

from .agentrun import AgentRun, ModelCall, Record, Step, ToolCall, Usage, as_int, as_text, unique

#: Tools whose arguments name the file they write.
FILE_TOOLS = {"write_file": "file_path", "replace": "file_path", "edit": "file_path"}
#: Shell tools, whose output ends with the command's exit code when it is not 0.
SHELL_TOOLS = {"run_shell_command"}
_EXIT = re.compile(r"^Exit Code: (-?\d+)", re.MULTILINE)


def usage_of(tokens: dict[str, Any]) -> Usage:
    thoughts = as_int(tokens.get("thoughts"))
    return Usage(input=as_int(tokens.get("input")), cache_read=as_int(tokens.get("cached")),
                 output=as_int(tokens.get("output")) + thoughts, reasoning=thoughts)


def messages_of(chat: list[Record]) -> tuple[Record, list[Record]]:
    """The header and the final message list (patches applied, repeated ids deduplicated)."""
    header: Record = {}
    by_id: dict[str, Record] = {}  # insertion order is the message order
    for line in chat:
        if "$set" in line:
            value = line["$set"]
            if isinstance(value, dict) and isinstance(value.get("messages"), list):
                by_id = {str(m.get("id")): dict(m, _context=True) for m in value["messages"]}
        elif "$rewindTo" in line:
            keys = list(by_id)
            target = str(line["$rewindTo"])
            if target in by_id:
                by_id = {k: by_id[k] for k in keys[:keys.index(target)]}
        elif "sessionId" in line and "type" not in line:
            header = line
        elif "type" in line and "id" in line:
            by_id[str(line["id"])] = line
    return header, list(by_id.values())


def parse(stdout: list[Record] | None = None, chat: list[Record] | None = None) -> AgentRun:
    """An :class:`AgentRun` from the stream-json stdout and/or the chat file's lines."""
    run = AgentRun("gemini-cli")
    stdout, chat = stdout or [], chat or []
    header, messages = messages_of(chat)
    run.session_id = header.get("sessionId")
    for message in messages:
        kind, stamp = message.get("type"), message.get("timestamp")
        content = message.get("content")
        if kind == "user":
            text = as_text([p for p in content if isinstance(p, dict) and "text" in p]) \
                if isinstance(content, list) else as_text(content)
            if text:
                run.steps.append(Step("system" if message.get("_context") else "user", text,
                                      stamp))
        elif kind == "gemini":
            thoughts = message.get("thoughts") or []
            reasoning = "\n".join(f"{t.get('subject', '')}: {t.get('description', '')}"
                                  for t in thoughts if isinstance(t, dict)) or None
            step = Step("agent", as_text(content), stamp, message.get("model"), reasoning)
            for raw in message.get("toolCalls") or []:
                status = raw.get("status")
                output = [as_text(((r.get("functionResponse") or {}).get("response") or {})
                                  .get("output") or (r.get("functionResponse") or {})
                                  .get("response")) for r in raw.get("result") or []
                          if isinstance(r, dict)]
                args = raw.get("args")
                call = ToolCall(str(raw.get("id")), str(raw.get("name")),
                                args if isinstance(args, dict) else {"input": args},
                                ok=None if status is None else status == "success",
                                output="\n".join(output) or None)
                code = _EXIT.search(call.output or "") if call.name in SHELL_TOOLS else None
                if call.ok and code and code.group(1) != "0":
                    call.ok = False
                if call.ok is False:
                    call.error = call.output or str(status)
                step.tool_calls.append(call)
                field = FILE_TOOLS.get(call.name)
                if field and call.ok and isinstance(call.arguments.get(field), str):
                    run.files_touched.append(call.arguments[field])
            if isinstance(message.get("tokens"), dict):
                step.call = ModelCall(usage_of(message["tokens"]), message.get("model"),
                                      str(message.get("id")), stamp)
                run.calls.append(step.call)
            run.steps.append(step)
        elif kind == "error":
            run.errors.append(as_text(content))
    for event in stdout:
        kind = event.get("type")
        if kind == "init":
            run.session_id = run.session_id or event.get("session_id")
            run.model = event.get("model")
        elif kind == "error":
            run.errors.append(str(event.get("message") or event.get("error")))
        elif kind == "result":
            if event.get("status") not in (None, "success"):
                error = event.get("error") or {}
                run.errors.append(f"result: {event.get('status')}: "
                                  f"{error.get('message') if isinstance(error, dict) else error}")
            stats = event.get("stats") or {}
            # one total call from the stats, when the model did answer (a run that never
            # reached its model reports zeros: no call)
            if not chat and stats and (as_int(stats.get("input_tokens"))
                                       or as_int(stats.get("output_tokens"))):
                run.calls.append(ModelCall(Usage(input=as_int(stats.get("input_tokens")),
                                                 cache_read=as_int(stats.get("cached")),
                                                 output=as_int(stats.get("output_tokens")))))
                run.extra["per_call_usage"] = False
        elif kind == "tool_use" and not chat:
            args = event.get("parameters")
            run.steps.append(Step("agent", "", event.get("timestamp"), tool_calls=[
                ToolCall(str(event.get("tool_id")), str(event.get("tool_name")),
                         args if isinstance(args, dict) else {})]))
        elif kind == "tool_result" and not chat:
            for call in run.tool_calls:
                if call.call_id == str(event.get("tool_id")):
                    call.ok = event.get("status") == "success"
                    call.output = event.get("output")
    if not chat:
        text = "".join(str(e.get("content", "")) for e in stdout
                       if e.get("type") == "message" and e.get("role") == "assistant")
        if text:
            run.steps.append(Step("agent", text))
    run.model = run.model or next((s.model for s in run.steps if s.model), None)
    run.final_text = next((s.text for s in reversed(run.steps)
                           if s.source == "agent" and s.text), None)
    run.files_touched = unique(run.files_touched)
    return run
