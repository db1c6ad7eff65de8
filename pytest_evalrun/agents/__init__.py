"""Parsers of coding-agent CLIs' own records into one structure, and an ATIF builder.

Pure functions, no I/O: a parser takes the JSON records a CLI wrote (its JSONL stdout and its
transcript/session file, each decoded with :func:`common.read_jsonl`) and returns an
:class:`common.AgentRun`; :func:`atif.trajectory` turns that into Harbor's trajectory format.
Not wired into the plugin yet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import claude, codex, copilot, gemini, opencode
from .common import AgentRun, ModelCall, Step, ToolCall, Usage, read_jsonl

#: CLI name -> parser(stdout records, transcript records or document).
PARSERS: dict[str, Callable[..., AgentRun]] = {
    "claude": claude.parse,
    "codex": codex.parse,
    "copilot": copilot.parse,
    "opencode": opencode.parse,
    "gemini": gemini.parse,
}

__all__ = ["PARSERS", "AgentRun", "ModelCall", "Step", "ToolCall", "Usage", "parse", "read_jsonl"]


def parse(cli: str, stdout: list[dict[str, Any]] | None, transcript: Any = None) -> AgentRun:
    """Parse ``cli``'s records (see each module for what ``transcript`` is)."""
    return PARSERS[cli](stdout, transcript)
