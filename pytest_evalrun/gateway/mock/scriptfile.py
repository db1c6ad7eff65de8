"""A mock model script from a YAML or JSON file, for ``evalrun mock-llm SCRIPT``.

::

    turns:
      - say: "The answer is 4."                 # a final answer
        usage: {input: 900, output: 20, cache_read: 100}
      - tool: Write                              # a call of the CLI's own tool ({cwd}: its cwd)
        input: {file_path: "{cwd}/hello.txt", content: "hi"}
      - shell: "ls missing.txt"                  # whatever shell tool the CLI offers
        text: "Let me look."
      - error: 429                               # an HTTP error instead of a response
        message: "slow down"
    exhausted_status: 400                        # past the last turn (default: a text answer)

``usage`` defaults to ``{input: 100, output: 10}``. A problem is a :class:`ScriptError` naming
the file and the turn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .script import Script, Turn, Usage, api_error, custom_tool, say, shell, tool

KINDS = ("say", "tool", "custom_tool", "shell", "error")
USAGE_KEYS = ("input", "output", "cache_read", "cache_write", "reasoning")


class ScriptError(ValueError):
    """A script file that cannot be used (the message names the file and the turn)."""


def _usage(raw: Any, where: str) -> Usage:
    if raw is None:
        return Usage(input=100, output=10)
    if not isinstance(raw, dict) or set(raw) - set(USAGE_KEYS):
        raise ScriptError(f"{where}: 'usage' must be a mapping of {', '.join(USAGE_KEYS)}")
    values = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ScriptError(f"{where}: usage {key!r} must be a whole number >= 0, got "
                              f"{value!r}")
        values[key] = value
    return Usage(input=values.get("input", 0), output=values.get("output", 0),
                 cache_read=values.get("cache_read", 0), cache_write=values.get("cache_write", 0),
                 reasoning=values.get("reasoning", 0))


def _turn(raw: Any, where: str) -> Turn:
    if not isinstance(raw, dict):
        raise ScriptError(f"{where}: a turn must be a mapping with one of {', '.join(KINDS)}")
    kinds = [k for k in KINDS if k in raw]
    if len(kinds) != 1:
        raise ScriptError(f"{where}: a turn needs exactly one of {', '.join(KINDS)}, got "
                          f"{', '.join(kinds) or 'none'}")
    kind = kinds[0]
    usage = _usage(raw.get("usage"), where)
    text = str(raw.get("text") or "")
    if kind == "say":
        return say(str(raw["say"]), usage)
    if kind == "shell":
        return shell(str(raw["shell"]), usage, text)
    if kind == "error":
        status = raw["error"]
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ScriptError(f"{where}: 'error' must be an HTTP status 400-599, got {status!r}")
        return api_error(status, str(raw.get("message") or "mock error"))
    name = str(raw[kind])
    if kind == "custom_tool":
        return custom_tool(name, str(raw.get("input") or ""), usage, text)
    arguments = raw.get("input") or {}
    if not isinstance(arguments, dict):
        raise ScriptError(f"{where}: 'input' of tool {name!r} must be a mapping")
    return tool(name, arguments, usage, text)


def load_script(path: Path) -> Script:
    """The :class:`Script` in the YAML or JSON file ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptError(f"{path}: cannot read: {exc}") from None
    try:
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ScriptError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                          f"{exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("turns"), list):
        raise ScriptError(f"{path}: must be a mapping with a 'turns' list")
    turns = [_turn(raw, f"{path}: turn {i}") for i, raw in enumerate(doc["turns"], start=1)]
    status = doc.get("exhausted_status", 0)
    if isinstance(status, bool) or not isinstance(status, int):
        raise ScriptError(f"{path}: 'exhausted_status' must be an HTTP status")
    return Script(turns, exhausted_status=status)
