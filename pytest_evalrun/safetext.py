"""Text an agent or a verifier wrote, made safe to show: the one escaping function every
section the plugin and the ``evalrun`` command print goes through.

An agent controls what its verify output, messages, model names and (within the spec's rules)
file names say. Shown raw, a control sequence acts on the reader's terminal: ESC ] 0 sets the
window title, ESC ] 52 writes the clipboard, ESC ] 8 plants a link whose text lies about its
target, ESC [ 2 J clears the screen and lets the agent draw its own "10 passed"; CR and
backspace overwrite what was printed; bidi controls (U+202E) and invisible characters (U+200B,
U+2028) make a name read as another. :func:`escape` shows every such character as a Python-style
escape (``\\x1b``, ``\\u202e``) instead, so it is visible and inert.

Lines and sections are bounded by size as well as by count: :func:`bounded` cuts a long line in
its middle and keeps a section's last lines that fit, saying what it cut.
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "MAX_LINE",
    "MAX_SECTION",
    "bounded",
    "escape",
    "escape_lines",
    "json_inert",
    "needs_escape",
]

#: Unicode categories shown escaped: controls (C0, DEL, C1: ESC, CR, BS, ...), format
#: characters (bidi overrides and isolates, zero-width spaces and joiners, BOM, soft hyphen),
#: line and paragraph separators, surrogates (undecodable bytes), private use and unassigned.
_ESCAPED = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})

#: A line longer than this many characters is cut in its middle.
MAX_LINE = 500
#: A section (an output tail, a message) keeps its last lines up to this many characters.
MAX_SECTION = 16_000


def needs_escape(ch: str) -> bool:
    """Whether one character is shown escaped (see :data:`_ESCAPED`)."""
    return unicodedata.category(ch) in _ESCAPED


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _escape(text: str, keep: str) -> str:
    if text.isprintable():  # the common case, in C: no letter, mark or space to escape
        return text
    return "".join(ch if ch in keep or not needs_escape(ch) else _escaped(ch) for ch in text)


def escape(text: object) -> str:
    """One line: every control, format, separator, surrogate, private-use or unassigned
    character (newline and tab too) shown as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``."""
    return _escape(str(text), "")


def escape_lines(text: object) -> str:
    """Like :func:`escape` but newlines and tabs are kept (CRLF becomes a newline)."""
    return _escape(str(text).replace("\r\n", "\n"), "\n\t")


def _cut_line(line: str, limit: int) -> str:
    if len(line) <= limit:
        return line
    cut = len(line) - limit
    head = limit // 2
    return f"{line[:head]} …[{cut:,} characters cut]… {line[len(line) - (limit - head) :]}"


def bounded(
    text: object,
    *,
    max_lines: int | None = None,
    max_line: int = MAX_LINE,
    max_chars: int = MAX_SECTION,
    shown: bool = True,
) -> str:
    """``text`` escaped (newlines and tabs kept) and bounded: each line cut in its middle to
    ``max_line`` characters (before escaping, which at most multiplies a line by ten), and only
    the last ``max_lines`` lines and the last lines that fit in ``max_chars`` characters kept,
    after a line saying how many were cut. ``shown=False``: bounded the same way but not
    escaped (for a record such as meta.json's output tail, escaped when shown)."""
    lines = str(text).replace("\r\n", "\n").split("\n")
    total = len(lines)
    if max_lines is not None and total > max_lines:
        lines = lines[total - max_lines :]
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        cut = _cut_line(line, max_line)
        cut = escape_lines(cut) if shown else cut
        if kept and size + len(cut) + 1 > max_chars:
            break
        kept.append(cut)
        size += len(cut) + 1
    kept.reverse()
    if len(kept) < total:
        dropped = total - len(kept)
        kept.insert(0, f"…[{dropped:,} earlier line{'s' if dropped != 1 else ''} cut]…")
    return "\n".join(kept)


def _json_escaped(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_inert(text: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``, which escapes C0 controls only)
    with every other character :func:`escape` would escape written as a ``\\uXXXX`` escape:
    the same JSON value, inert on a terminal."""
    if text.isprintable():
        return text
    return "".join(
        _json_escaped(ch) if ch not in "\n\t" and needs_escape(ch) else ch for ch in text
    )
