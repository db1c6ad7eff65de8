"""A model script: the turns a mock model server answers, in order, with known token usage.

A turn is one model response: optional text, then zero or more tool calls (none: the final answer),
or an API error. Tool inputs are templated: every ``{cwd}`` in a string becomes the working
directory that the CLI reported in its request (see :func:`find_cwd`). A :func:`shell` call is
mapped onto whatever shell tool the CLI offered (``Bash``, ``exec_command``, ``bash``,
``run_shell_command``, ...).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: Marks a tool call whose input is the shell command, resolved against the offered tools.
SHELL = "<shell>"


@dataclass(frozen=True)
class Usage:
    """Token usage of one model call, API-neutral.

    ``input`` counts every prompt token, cache reads and writes included; each API encodes it in
    its own convention (Anthropic's ``input_tokens`` excludes cache reads, OpenAI's and Gemini's
    include them).
    """

    input: int
    output: int
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0

    @property
    def uncached_input(self) -> int:
        """Prompt tokens neither read from nor written to the cache (Anthropic's input_tokens)."""
        return self.input - self.cache_read - self.cache_write


@dataclass(frozen=True)
class Call:
    """A tool call. ``input`` is a dict (function tools) or a string (custom tools: apply_patch)."""

    name: str
    input: dict[str, Any] | str
    custom: bool = False


@dataclass(frozen=True)
class Turn:
    """One model response."""

    usage: Usage
    text: str = ""
    calls: tuple[Call, ...] = ()
    #: An HTTP error status answered instead of a response (the usage is then not served).
    error_status: int = 0


def say(text: str, usage: Usage) -> Turn:
    """A final answer."""
    return Turn(usage=usage, text=text)


def tool(name: str, input: dict[str, Any], usage: Usage, text: str = "") -> Turn:
    """One function-tool call (after optional text)."""
    return Turn(usage=usage, text=text, calls=(Call(name, input),))


def custom_tool(name: str, input: str, usage: Usage, text: str = "") -> Turn:
    """One custom (free-form input) tool call, e.g. Codex's ``apply_patch``."""
    return Turn(usage=usage, text=text, calls=(Call(name, input, custom=True),))


def shell(command: str, usage: Usage, text: str = "") -> Turn:
    """A call of the CLI's own shell tool running ``command``."""
    return Turn(usage=usage, text=text, calls=(Call(SHELL, {"command": command}),))


def api_error(status: int, message: str = "mock error") -> Turn:
    """An HTTP error answered instead of a model response (400 is not retried by the CLIs)."""
    return Turn(usage=Usage(0, 0), text=message, error_status=status)


#: Offered shell tool -> how its input is shaped from a command line.
SHELL_TOOLS: dict[str, Any] = {
    "Bash": lambda cmd: {"command": cmd, "description": "Run a shell command"},
    # Codex returns a command still running after yield_time_ms (10 s by default) and goes
    # on, ending it at exit: a long command (a search of /, at load) asks for Codex's most
    "exec_command": lambda cmd: {"cmd": cmd, "yield_time_ms": 30_000},
    "bash": lambda cmd: {"command": cmd, "description": "Run a shell command"},
    "run_shell_command": lambda cmd: {"command": cmd, "description": "Run a shell command"},
    "shell": lambda cmd: {"command": ["bash", "-lc", cmd], "timeout_ms": 120_000},
}

_CWD_PATTERNS = [
    re.compile(r"Primary working directory: (\S[^\n]*)"),  # Claude Code
    re.compile(r"<cwd>([^<]+)</cwd>"),  # Codex
    re.compile(r"Current working directory: (\S[^\n]*)"),  # Copilot CLI
    re.compile(r"Working directory: (\S[^\n]*)"),  # opencode
    re.compile(r"Workspace Directories:\*\*\n\s*- (\S[^\n]*)"),  # Gemini CLI
]


def walk_strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from walk_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_strings(item)


def find_cwd(body: Any) -> str | None:
    """The working directory a CLI states in its request (system prompt or context), if any."""
    for text in walk_strings(body):
        for pattern in _CWD_PATTERNS:
            match = pattern.search(text)
            if match:
                return match.group(1).strip()
    return None


def _template(value: Any, cwd: str) -> Any:
    if isinstance(value, str):
        return value.replace("{cwd}", cwd)
    if isinstance(value, dict):
        return {k: _template(v, cwd) for k, v in value.items()}
    if isinstance(value, list):
        return [_template(v, cwd) for v in value]
    return value


def resolve(turn: Turn, cwd: str | None, offered: list[str]) -> Turn:
    """``turn`` with ``{cwd}`` filled in and shell calls mapped onto the offered shell tool."""
    calls = []
    for call in turn.calls:
        name, inp = call.name, call.input
        if name == SHELL:
            assert isinstance(inp, dict)
            name = next((t for t in SHELL_TOOLS if t in offered), "bash")
            inp = SHELL_TOOLS[name](inp["command"])
        calls.append(Call(name, _template(inp, cwd or "."), call.custom))
    return Turn(usage=turn.usage, text=_template(turn.text, cwd or "."),
                calls=tuple(calls), error_status=turn.error_status)


@dataclass
class Script:
    """The turns to serve in order; auxiliary requests (no tools offered) get ``aux_text``.

    ``aux_json`` answers an auxiliary request that asks for JSON (Gemini CLI's model router).
    When the turns run out, further requests get ``exhausted_text`` (or the HTTP error
    ``exhausted_status``) and are flagged in the log.
    """

    turns: list[Turn]
    aux_text: str = "Mock session"
    aux_json: dict[str, Any] = field(default_factory=lambda: {"complexity_score": 50})
    aux_usage: Usage = field(default_factory=lambda: Usage(input=21, output=3))
    exhausted_text: str = "(mock script exhausted)"
    #: When set, requests past the script's end get this HTTP error instead of the text.
    exhausted_status: int = 0
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self) -> tuple[int, Turn] | None:
        """The next turn and its index, or None when the script is exhausted."""
        with self._lock:
            if self._next >= len(self.turns):
                return None
            index = self._next
            self._next += 1
            return index, self.turns[index]

    @property
    def served(self) -> int:
        return self._next

    def expected_usage(self) -> Usage:
        """The sum of all scripted (non-error) turns' usage."""
        turns = [t for t in self.turns if not t.error_status]
        return Usage(
            input=sum(t.usage.input for t in turns),
            output=sum(t.usage.output for t in turns),
            cache_read=sum(t.usage.cache_read for t in turns),
            cache_write=sum(t.usage.cache_write for t in turns),
            reasoning=sum(t.usage.reasoning for t in turns),
        )
