"""Names (experiment, variant, task) and the slugs made from them.

A name is free text, but not empty, not ``.`` or ``..``, and without ``/``, ``\\`` or control
characters. Its slug is safe as a file name on every common OS, as a pytest node-id part and
in ``-k`` expressions: case-preserving, made of unicode letters and digits (``str.isalnum``)
and ``._-``; every other run of characters becomes ``-``; leading and trailing ``-`` and ``.``
are stripped; an empty result becomes ``x-<8 hex of sha1(name)>``; a slug longer than 100
characters becomes its first 91 characters, ``-`` and 8 hex digits of sha1(name). A slug that
is a Windows device name (``CON``, ``nul.txt``...) gets a ``_`` appended.

Two names whose slugs are equal ignoring case are a collision (case-insensitive file
systems); ``experiment/load.py`` reports it.
"""

from __future__ import annotations

import hashlib
import unicodedata

MAX_SLUG = 100
_HASH_LEN = 8

_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"COM{i}" for i in range(10)]
    + [f"LPT{i}" for i in range(10)]
)


def validate_name(name: object) -> str | None:
    """Return what is wrong with ``name``, or ``None`` when it is a valid name."""
    if not isinstance(name, str):
        return f"must be a string, not {_type_name(name)}"
    if not name.strip():
        return "must not be empty"
    if name in (".", ".."):
        return f"must not be {name!r}"
    for ch in name:
        if ch in "/\\":
            return f"must not contain {ch!r}"
        if unicodedata.category(ch) in ("Cc", "Cs"):
            return f"must not contain control characters ({ch!r})"
    return None


def _sha8(name: str) -> str:
    return hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]


def slugify(name: str) -> str:
    """The slug of ``name`` (see the module docstring)."""
    out: list[str] = []
    dash = False
    for ch in name:
        if ch.isalnum() or ch in "._-":
            out.append(ch)
            dash = False
        elif not dash:
            out.append("-")
            dash = True
    slug = "".join(out).strip("-.")
    if not slug:
        return f"x-{_sha8(name)}"
    head, dot, rest = slug.partition(".")
    if head.upper() in _WINDOWS_DEVICES:
        slug = f"{head}_{dot}{rest}"
    if len(slug) > MAX_SLUG:
        slug = f"{slug[: MAX_SLUG - _HASH_LEN - 1]}-{_sha8(name)}"
    return slug


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)
