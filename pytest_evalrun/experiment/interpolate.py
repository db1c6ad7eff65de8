"""``${VAR}`` and ``${VAR:-default}`` in experiment files.

``${VAR}`` is the value of ``VAR`` in the environment; unset is an error. ``${VAR:-default}``
is ``default`` when ``VAR`` is unset or empty (as in the shell). ``$${`` is a literal ``${``.
Anything else (``$VAR``, ``{prompt}``, a lone ``$``) is left as it is. Values are substituted
once: a value that itself contains ``${`` is not expanded again. The default cannot contain
``{`` or ``}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_TOKEN = re.compile(r"\$\$\{|\$\{([^{}]*)\}|\$\{")
_EXPR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


@dataclass(frozen=True)
class Substitution:
    """One ``${...}`` that was replaced: the variable, its value, and where it came from."""

    name: str
    value: str
    from_environ: bool  # False when the default was used


class InterpolationError(ValueError):
    """One or more ``${...}`` in a string could not be expanded; ``problems`` says why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def interpolate(text: str, environ: Mapping[str, str]) -> tuple[str, list[Substitution]]:
    """Expand ``text``; return it and the substitutions made (in order).

    Raises :class:`InterpolationError` listing every problem in ``text``.
    """
    if "${" not in text:
        return text, []
    out: list[str] = []
    used: list[Substitution] = []
    problems: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        out.append(text[pos : m.start()])
        pos = m.end()
        token = m.group(0)
        if token == "$${":
            out.append("${")
            continue
        expr = m.group(1)
        if expr is None:
            problems.append(
                f"unterminated or nested variable reference {_excerpt(text, m.start())}"
                " (write $${ for a literal ${)"
            )
            continue
        em = _EXPR.fullmatch(expr)
        if em is None:
            problems.append(
                f"invalid variable reference {token!r}: expected ${{NAME}} or "
                "${NAME:-default} (write $${ for a literal ${)"
            )
            continue
        name, default = em.group(1), em.group(2)
        value = environ.get(name)
        if default is not None and not value:
            used.append(Substitution(name, default, from_environ=False))
            out.append(default)
        elif value is None:
            problems.append(
                f"environment variable {name!r} is not set and has no default"
                f" (set it, or write ${{{name}:-default}})"
            )
        else:
            used.append(Substitution(name, value, from_environ=True))
            out.append(value)
    if problems:
        raise InterpolationError(problems)
    out.append(text[pos:])
    return "".join(out), used


def _excerpt(text: str, start: int) -> str:
    piece = text[start : start + 30]
    return repr(piece + "..." if len(text) > start + 30 else piece)
