"""Codex CLI: the rollout (``$CODEX_HOME/sessions/Y/M/D/rollout-<ts>-<thread id>.jsonl``) and the
``codex exec --json`` stdout.

Per call: one ``token_usage_record`` per model response (``response_id``, ``usage``); older rollouts
only have ``event_msg/token_count`` whose ``last_token_usage`` repeats, so those are counted when
``total_token_usage`` changes. Everything the model produced since the previous call's usage forms
that call's agent step. OpenAI convention: ``input_tokens`` includes ``cached_input_tokens``.
Codex reports no cost. Without a rollout, stdout's ``turn.completed`` gives one total per turn.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any

from .agentrun import AgentRun, ModelCall, Record, Step, ToolCall, Usage, as_int, unique

_EXIT = re.compile(r"(?:exited with code|^Exit code:)\s*(-?\d+)", re.MULTILINE)
_PATCH_FILE = re.compile(r"^\*\*\* (?:Add|Update|Delete) File: (.+)$", re.MULTILINE)


def usage_of(raw: dict[str, Any]) -> Usage:
    return Usage(input=as_int(raw.get("input_tokens")),
                 cache_read=as_int(raw.get("cached_input_tokens")),
                 output=as_int(raw.get("output_tokens")),
                 cache_write=as_int(raw.get("cache_write_input_tokens")),
                 reasoning=as_int(raw.get("reasoning_output_tokens")))


def _text(content: Any) -> str:
    parts = content if isinstance(content, list) else []
    return "\n".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


class _Builder:
    def __init__(self, run: AgentRun) -> None:
        self.run = run
        self.step: Step | None = None
        self.tools: dict[str, ToolCall] = {}
        self.model: str | None = None
        #: Files named by apply_patch inputs (relative to the session's cwd).
        self.patched: list[str] = []

    def agent_step(self, stamp: str | None) -> Step:
        if self.step is None:
            self.step = Step("agent", "", stamp, self.model)
            self.run.steps.append(self.step)
        return self.step

    def close(self, call: ModelCall) -> None:
        call.model = call.model or self.model
        self.run.calls.append(call)
        self.agent_step(call.timestamp).call = call
        self.step = None

    def item(self, payload: Record, stamp: str | None) -> None:
        kind = payload.get("type")
        if kind == "message":
            role, text = payload.get("role"), _text(payload.get("content"))
            if role == "assistant":
                step = self.agent_step(stamp)
                step.text = f"{step.text}\n{text}" if step.text else text
            elif role == "user" and not text.lstrip().startswith("<"):
                self.run.steps.append(Step("user", text, stamp))
            else:
                self.run.steps.append(Step("system", text, stamp))
        elif kind == "reasoning":
            summary = payload.get("summary") or []
            text = "\n".join(str(s.get("text", "")) for s in summary if isinstance(s, dict))
            if text:
                step = self.agent_step(stamp)
                step.reasoning = (step.reasoning or "") + text
        elif kind in ("function_call", "custom_tool_call", "local_shell_call", "web_search_call"):
            call_id = str(payload.get("call_id") or payload.get("id"))
            if kind == "function_call":
                try:
                    args = json.loads(payload.get("arguments") or "{}")
                except ValueError:
                    args = {"input": payload.get("arguments")}
            elif kind == "custom_tool_call":
                args = {"input": payload.get("input")}
                self.patched += _PATCH_FILE.findall(str(payload.get("input") or ""))
            else:
                args = {k: v for k, v in payload.items() if k in ("action", "query")}
            name = str(payload.get("name") or kind)
            call = ToolCall(call_id, name, args if isinstance(args, dict) else {"input": args})
            self.tools[call_id] = call
            self.agent_step(stamp).tool_calls.append(call)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            tool = self.tools.get(str(payload.get("call_id")))
            output = payload.get("output")
            text = output if isinstance(output, str) else json.dumps(output)
            if tool is not None:
                tool.output = text
                code = _EXIT.search(text)
                tool.ok = tool.ok if tool.ok is not None else (code is None or code.group(1) == "0")
                if not tool.ok:
                    tool.error = text


def parse(stdout: list[Record] | None = None, rollout: list[Record] | None = None) -> AgentRun:
    """An :class:`AgentRun` from the ``--json`` stdout and/or the rollout lines."""
    run = AgentRun("codex")
    build = _Builder(run)
    stdout, rollout = stdout or [], rollout or []
    has_records = any(r.get("type") == "token_usage_record" for r in rollout)
    last_total: Any = None
    for line in rollout:
        kind, payload, stamp = line.get("type"), line.get("payload") or {}, line.get("timestamp")
        if kind == "session_meta":
            run.session_id = run.session_id or payload.get("id") or payload.get("session_id")
            run.cli_version = payload.get("cli_version")
            run.extra["cwd"] = payload.get("cwd")
        elif kind == "turn_context":
            build.model = payload.get("model") or build.model
            run.model = run.model or build.model
        elif kind == "response_item":
            build.item(payload, stamp)
        elif kind == "token_usage_record":
            build.close(ModelCall(usage_of(payload.get("usage") or {}), None,
                                  payload.get("response_id"), stamp))
        elif kind == "event_msg":
            ptype = payload.get("type")
            info = payload.get("info")
            if ptype == "token_count" and not has_records and isinstance(info, dict):
                total = info.get("total_token_usage")
                if total != last_total and isinstance(info.get("last_token_usage"), dict):
                    last_total = total
                    build.close(ModelCall(usage_of(info["last_token_usage"]), None, None, stamp))
            elif ptype == "item_completed":
                item = payload.get("item") or {}
                if item.get("type") == "FileChange":
                    run.files_touched += list(item.get("changes") or {})
                    call = build.tools.get(str(item.get("id")))
                    if call is not None and item.get("status") not in (None, "completed"):
                        call.ok, call.error = False, str(item.get("stderr") or item.get("status"))
                elif item.get("type") == "CommandExecution":
                    call = build.tools.get(str(item.get("id")))
                    if call is not None and item.get("exit_code") is not None:
                        call.ok = item["exit_code"] == 0
            elif ptype == "task_complete":
                run.final_text = payload.get("last_agent_message") or run.final_text
            elif ptype in ("error", "stream_error", "turn_aborted"):
                run.errors.append(f"{ptype}: {payload.get('message') or payload.get('reason')}")
    for event in stdout:
        kind = event.get("type")
        if kind == "thread.started":
            run.session_id = run.session_id or event.get("thread_id")
        elif kind == "turn.completed" and not rollout:
            run.calls.append(ModelCall(usage_of(event.get("usage") or {})))
            run.extra["per_call_usage"] = False
        elif kind in ("turn.failed", "error"):
            error = event.get("error") or event
            run.errors.append(str(error.get("message") if isinstance(error, dict) else error))
        elif kind == "item.completed" and not rollout:
            _stdout_item(run, event.get("item") or {})
    if run.final_text is None:
        run.final_text = next((s.text for s in reversed(run.steps)
                               if s.source == "agent" and s.text), None)
    cwd = run.extra.get("cwd")
    run.files_touched += [posixpath.join(cwd, f) if isinstance(cwd, str) else f
                          for f in build.patched]
    run.files_touched = unique(run.files_touched)
    run.errors = unique(run.errors)  # a failed turn is reported as an error and as turn.failed
    return run


def _stdout_item(run: AgentRun, item: Record) -> None:
    kind = item.get("type")
    if kind == "agent_message":
        run.steps.append(Step("agent", str(item.get("text", ""))))
    elif kind == "command_execution":
        code = item.get("exit_code")
        call = ToolCall(str(item.get("id")), "exec_command", {"cmd": item.get("command")},
                        ok=None if code is None else code == 0,
                        output=item.get("aggregated_output"))
        run.steps.append(Step("agent", "", tool_calls=[call]))
    elif kind == "file_change":
        changes = item.get("changes") or []
        run.files_touched += [str(c.get("path")) for c in changes if isinstance(c, dict)]
        call = ToolCall(str(item.get("id")), "apply_patch", {"changes": changes},
                        ok=item.get("status") == "completed")
        run.steps.append(Step("agent", "", tool_calls=[call]))
    elif kind == "error":
        run.errors.append(str(item.get("message")))
