"""Parsers of coding-agent CLIs' own records into one structure, and an ATIF builder.

Pure functions, no I/O: a parser takes the JSON records a CLI wrote (its JSONL stdout and its
transcript/session file, each decoded with :func:`agentrun.read_jsonl`) and returns an
:class:`agentrun.AgentRun`; :func:`atif.trajectory` turns that into Harbor's trajectory format.
The presets that run the CLIs for a trial are in :mod:`.preset`, :mod:`.builtin`,
:mod:`.runner` and :mod:`.evidence`; :mod:`.plugin` registers them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import claude, codex, copilot, gemini, opencode
from .agentrun import AgentRun, ModelCall, Step, ToolCall, Usage, read_jsonl

#: CLI name -> parser(stdout records, transcript records or document).
PARSERS: dict[str, Callable[..., AgentRun]] = {
    "claude": claude.parse,
    "codex": codex.parse,
    "copilot": copilot.parse,
    "opencode": opencode.parse,
    "gemini": gemini.parse,
}

__all__ = ["PARSERS", "AgentRun", "ModelCall", "Step", "ToolCall", "Usage", "load", "parse",
           "read_jsonl"]

#: Record types each parser reads: (from stdout when the transcript is there, from the transcript).
#: None: every record. Only these lines are decoded by :func:`load`.
WANTED: dict[str, tuple[tuple[str, ...] | None, tuple[str, ...] | None]] = {
    "claude": (("result", "system"), ("user", "assistant", "cost-state")),
    "codex": (("thread.started", "turn.failed", "error"), None),
    "copilot": (("result",), ("session.start", "session.model_change", "user.message",
                              "session.usage_record", "assistant.message",
                              "tool.execution_complete", "session.error", "session.shutdown")),
    "opencode": ((), None),
    "gemini": (("init", "error", "result"), None),
}


def load(cli: str, stdout: str, transcript: str | None = None) -> AgentRun:
    """Parse ``cli``'s records from their text: its JSONL stdout and its transcript (opencode: the
    ``opencode export`` JSON document), decoding only the records the parser reads."""
    from_stdout, from_transcript = WANTED[cli] if transcript else (None, None)
    records = read_jsonl(stdout, from_stdout) if from_stdout != () else []
    if not transcript:
        return PARSERS[cli](records, None)
    if cli == "opencode":
        import json

        return PARSERS[cli](records, json.loads(transcript))
    return PARSERS[cli](records, read_jsonl(transcript, from_transcript))


def parse(cli: str, stdout: list[dict[str, Any]] | None, transcript: Any = None) -> AgentRun:
    """Parse ``cli``'s records (see each module for what ``transcript`` is)."""
    return PARSERS[cli](stdout, transcript)
