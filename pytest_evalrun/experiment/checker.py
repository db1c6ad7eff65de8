"""What the parts of the experiment loader share: the keys each level of the file allows,
the :data:`INVALID` marker, :class:`Checker` (the list the problems go to, and the unknown-key
check) and the wording of problems (:func:`describe`, :func:`did_you_mean`)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from pytest_evalrun.experiment.errors import ExperimentError
from pytest_evalrun.experiment.yamltree import YMap

__all__ = [
    "BUDGET_KEYS",
    "DEFAULTS_KEYS",
    "ENVIRONMENT_KEYS",
    "HARBOR_KEYS",
    "INVALID",
    "ISOLATION_KEYS",
    "PRESET_KEYS",
    "PRICING_KEYS",
    "SANDBOX_KEYS",
    "TASK_KEYS",
    "TOP_KEYS",
    "VARIANT_KEYS",
    "Checker",
    "describe",
    "did_you_mean",
]

TOP_KEYS = (
    "experiment",
    "description",
    "trials",
    "timeout",
    "setup_timeout",
    "verify_timeout",
    "min_pass_rate",
    "pass_threshold",
    "defaults",
    "variants",
    "tasks",
    "secrets",
    "env",
    "retries",
    "env_passthrough",
    "sandbox",
    "network",
    "budget",
    "environment",
)
#: Keys about a variant's isolation: at the top level, in ``defaults`` or in a variant.
ISOLATION_KEYS = ("env_passthrough", "sandbox", "network", "environment")
VARIANT_KEYS = (
    "agent",
    "model",
    "setup",
    "env",
    "description",
    "extends",
    "retries",
    "pricing",
    "budget",
    *ISOLATION_KEYS,
)
DEFAULTS_KEYS = (
    "agent",
    "model",
    "setup",
    "env",
    "description",
    "retries",
    "pricing",
    "budget",
    *ISOLATION_KEYS,
)
SANDBOX_KEYS = ("mode", "read", "write", "unix_sockets")
#: ``environment: {image: NAME}`` or ``{dockerfile: PATH}``, with optional settings.
ENVIRONMENT_KEYS = (
    "image", "dockerfile", "context", "workdir", "cpus", "memory_mb", "pids", "build_timeout",
    "verify",
)
#: ``tasks: {harbor: PATH}`` (or an item ``- harbor: PATH`` of the tasks list).
HARBOR_KEYS = ("harbor", "tags", "trials", "pass_threshold", "min_pass_rate", "retries")
#: ``agent: {preset: NAME, executable: PROGRAM, args: [...]}``; ``pricing:`` USD per 1M tokens.
PRESET_KEYS = ("preset", "executable", "args")
PRICING_KEYS = ("input", "cached_input", "output", "cache_write")
#: ``budget: {max_cost_usd, max_tokens, max_calls}``: a trial's limits, enforced by the gateway.
BUDGET_KEYS = ("max_cost_usd", "max_tokens", "max_calls")
TASK_KEYS = (
    "name",
    "description",
    "prompt",
    "prompt_file",
    "fixture",
    "verify",
    "tags",
    "timeout",
    "setup_timeout",
    "verify_timeout",
    "trials",
    "pass_threshold",
    "min_pass_rate",
    "env",
    "extends",
    "retries",
    "budget",
    "environment",
)

INVALID: Any = object()  # a field that was present but wrong (already reported)


class Checker:
    """Reports problems of one file into ``errors``, a list the loader's parts share (so they
    come out in the order they were found, whichever part found them)."""

    def __init__(self, path_text: str, errors: list[ExperimentError]) -> None:
        self.path_text = path_text
        self.errors = errors

    def error(self, line: int | None, message: str) -> None:
        self.errors.append(ExperimentError(self.path_text, line, message))

    def check_keys(self, m: YMap, allowed: tuple[str, ...], ctx: str) -> set[str]:
        """Report unknown keys; return the allowed keys suggested for misspelt ones."""
        suggested = set()
        for key in m:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                if close:
                    suggested.add(close[0])
                    hint = f"; did you mean {close[0]!r}?"
                else:
                    hint = _misplaced(key, ctx)
                self.error(m.lines[key], f"unknown key {key!r}{ctx}{hint}")
        return suggested


def did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def describe(value: Any, src: str | None) -> str:
    """What a wrong value is, for "..., got X": ``src`` is the value as written, if known."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{src or value} (a boolean)"
    if isinstance(value, (int, float)):
        return f"{src or value} (a number)"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"{shown!r} (a string)"
    return "a list" if isinstance(value, list) else "a mapping"


def _misplaced(key: str, ctx: str) -> str:
    """A hint for a known key at the wrong level."""
    if ctx.startswith(" in task") and key in ("agent", "model", "setup"):
        return f" ({key!r} belongs to a variant or to 'defaults')"
    if ctx.startswith(" at the top") and key in TASK_KEYS:
        return f" ({key!r} belongs to a task, under 'tasks:')"
    if ctx.startswith(" at the top") and key in VARIANT_KEYS:
        return f" ({key!r} belongs to a variant or to 'defaults:')"
    if not ctx.startswith(" in task") and key in TASK_KEYS:
        return f" ({key!r} belongs to a task)"
    return ""
