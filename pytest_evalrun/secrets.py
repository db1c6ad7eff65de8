"""Which values are secret, and masking them in everything we write or print.

A name (environment variable, ``env`` key) is secret-looking when it contains TOKEN, KEY,
SECRET, PASSWORD, CREDENTIAL or AUTH, ignoring case. ``experiment/load.py`` decides which values
are secret and records them in ``Experiment.secret_values``; a :class:`Redactor` masks them.

Forms matched: the value itself (longest first, so a secret that contains another is masked
whole), in text and in bytes (UTF-8), and its JSON-escaped forms: any of its characters written
as ``\\uXXXX`` (either hex case, surrogate pairs beyond the BMP), ``"`` and ``\\`` and
control characters as JSON's short escapes, in any mix.  :func:`redact_tree` also masks file
names and symlink targets, and never follows a link.

Structure: JSON is masked by walking its values (:meth:`Redactor.redact_obj`, and
:func:`redact_file` for ``*.json`` / ``*.jsonl``), never as bytes, so escaping cannot hide a
secret and masking cannot break the JSON.  A secret shorter than :data:`MIN_SAFE_LENGTH`
characters (``a``, ``1``) would hit statuses, ids and keys by accident (``"st***tus"``): it is
masked in text, but never in dict keys, in the values of ``keep`` keys (statuses, ids, paths)
nor in binary data; :func:`weak_secret_names` names such variables so the caller can warn.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .filewrite import write_bytes_atomic

MASK = "***"
_MASK_BYTES = MASK.encode()
_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|CREDENTIAL|AUTH", re.IGNORECASE)
#: Secrets shorter than this are not masked where structure lives (keys, ``keep`` values,
#: binary data); see the module docstring.
MIN_SAFE_LENGTH = 4
#: Keys whose values are structure in our own files (meta.json, verify.json, run.json):
#: statuses, ids, fingerprints and paths.  Default ``keep`` of :meth:`Redactor.redact_obj`.
STRUCTURAL_KEYS: frozenset[str] = frozenset(
    {
        "status",
        "error_kind",
        "schema_version",
        "id",
        "trial_id",
        "run_id",
        "fingerprint",
        "nodeid",
        "trial_dir",
        "pier_trial_dir",
        "experiment_slug",
        "variant_slug",
        "task_slug",
        "started_at",
        "finished_at",
        "worker",
    }
)

T = TypeVar("T")

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "/": "\\/",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def is_secret_name(name: str) -> bool:
    """True when ``name`` contains TOKEN, KEY, SECRET, PASSWORD, CREDENTIAL or AUTH."""
    return _SECRET_NAME.search(name) is not None


_SECRET_EXTRA = re.compile(r"(^GH_|_TOKEN$|_KEY$|_PAT$)", re.IGNORECASE)
#: Values of secret-looking variables that are flags, not secrets (never masked).
_FLAG_VALUES = frozenset({"0", "1", "true", "false", "yes", "no", "on", "off", "none", ""})


def looks_secret(name: str) -> bool:
    """Does ``name`` look like it holds a secret?  Contains TOKEN, KEY, SECRET, PASSWORD,
    CREDENTIAL or AUTH (any case), or is ``GH_*``, ``*_TOKEN``, ``*_KEY``, ``*_PAT``."""
    return is_secret_name(name) or _SECRET_EXTRA.search(name) is not None


def inherited_secrets(inherited: Mapping[str, str]) -> dict[str, str]:
    """The inherited variables whose names look secret (:func:`looks_secret`), with their
    values: the caller adds the values to the experiment's secrets, whether or not a YAML
    names them.  Flag values (``0``, ``1``, ``true``, ``no``...) are left out: masking ``1``
    everywhere would destroy every output and protect nothing."""
    return {
        name: value
        for name, value in inherited.items()
        if looks_secret(name) and value.strip().lower() not in _FLAG_VALUES
    }


def weak_secret_names(named: Mapping[str, str]) -> list[str]:
    """Names of the secret values in ``named`` too short to mask safely (for a warning that
    never shows the value)."""
    return sorted(name for name, value in named.items() if value and len(value) < MIN_SAFE_LENGTH)


def _escaped_char(c: str) -> str:
    """A regex matching ``c`` as it may appear in JSON text: literally or escaped."""
    alts = [re.escape(c)]
    short = _SHORT_ESCAPES.get(c)
    if short is not None:
        alts.append(re.escape(short))
    cp = ord(c)
    units = [cp] if cp < 0x10000 else [0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + (cp & 0x3FF)]
    alts.append(
        "".join(
            r"\\u" + "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{u:04x}")
            for u in units
        )
    )
    return "(?:" + "|".join(alts) + ")"


def _escaped_pattern(values: Iterable[str]) -> str:
    return "|".join("".join(_escaped_char(c) for c in v) for v in values)


class Redactor:
    """Replaces every occurrence of the given secret values (and their JSON-escaped forms)
    with ``***``.

    With no secrets every method returns its argument unchanged (the same object), at no cost.
    """

    __slots__ = (
        "_bpattern",
        "_bvalues",
        "_ebpattern",
        "_epattern",
        "_pattern",
        "_safe",
        "_safe_values",
        "_special",
        "_values",
    )

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if s}, key=lambda s: (-len(s), s))
        self._values: tuple[str, ...] = tuple(values)
        self._bvalues: tuple[bytes, ...] = tuple(
            v.encode("utf-8", "surrogateescape") for v in values
        )
        self._safe_values = tuple(v for v in values if len(v) >= MIN_SAFE_LENGTH)
        self._pattern: re.Pattern[str] | None = None
        self._bpattern: re.Pattern[bytes] | None = None
        self._epattern: re.Pattern[str] | None = None
        self._ebpattern: re.Pattern[bytes] | None = None
        self._safe: Redactor | None = None
        # secrets with a character JSON escapes short (``"``, ``\\``, ``/``, controls)
        self._special = any(c in _SHORT_ESCAPES for v in values for c in v)
        if values:
            self._pattern = re.compile("|".join(map(re.escape, self._values)))
            self._bpattern = re.compile(b"|".join(map(re.escape, self._bvalues)))
            escaped = _escaped_pattern(values)
            self._epattern = re.compile(escaped)
            self._ebpattern = re.compile(escaped.encode("utf-8", "surrogateescape"))
            if self._safe_values and len(self._safe_values) < len(values):
                self._safe = Redactor(self._safe_values)

    @property
    def values(self) -> tuple[str, ...]:
        """The secret values, longest first."""
        return self._values

    @property
    def too_short(self) -> int:
        """How many secret values are shorter than :data:`MIN_SAFE_LENGTH`."""
        return len(self._values) - len(self._safe_values)

    def __bool__(self) -> bool:
        return bool(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:  # never show the values themselves
        return f"<Redactor of {len(self._values)} secret values>"

    def _safe_redactor(self) -> Redactor:
        """A redactor of the safe-length secrets only."""
        if self._safe is not None:
            return self._safe
        return self if self._safe_values else _NONE

    # -- text and bytes --------------------------------------------------------------
    def redact(self, text: str) -> str:
        """``text`` with every secret value, literal or JSON-escaped, replaced by ``***``."""
        if self._pattern is None:
            return text
        if any(v in text for v in self._values):
            text = self._pattern.sub(MASK, text)
        if self._epattern is not None and ("\\u" in text or (self._special and "\\" in text)):
            text = self._epattern.sub(MASK, text)
        return text

    def redact_bytes(self, data: bytes) -> bytes:
        """Like :meth:`redact` for bytes (secrets matched as UTF-8)."""
        if self._bpattern is None:
            return data
        if any(v in data for v in self._bvalues):
            data = self._bpattern.sub(_MASK_BYTES, data)
        if self._ebpattern is not None and (b"\\u" in data or (self._special and b"\\" in data)):
            data = self._ebpattern.sub(_MASK_BYTES, data)
        return data

    def redact_binary(self, data: bytes) -> bytes:
        """Like :meth:`redact_bytes` for data that is not text: only the safe-length secrets
        (a one-byte secret would hit every file)."""
        return self._safe_redactor().redact_bytes(data)

    def contains(self, data: bytes | str) -> bool:
        """Does ``data`` hold a secret, literal or escaped?"""
        if isinstance(data, str):
            return self.redact(data) != data
        return self.redact_bytes(data) != data

    # -- structures ------------------------------------------------------------------
    def redact_obj(self, obj: T, *, keep: Collection[str] = STRUCTURAL_KEYS) -> T:
        """A copy of a JSON-like structure with every string redacted.

        Dicts, lists and tuples are rebuilt; strings and bytes are redacted; anything else
        is returned as it is.  Dict keys, and the values of the keys in ``keep`` (statuses,
        ids, paths), are masked with the safe-length secrets only, so a one-letter secret
        can never turn ``"status"`` into ``"st***tus"`` nor ``"passed"`` into something
        resume does not know.
        """
        if self._pattern is None:
            return obj
        return self._redact_any(obj, keep)  # type: ignore[no-any-return]

    def _redact_any(self, obj: Any, keep: Collection[str]) -> Any:
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, dict):
            safe = self._safe_redactor()
            out = {}
            for k, v in obj.items():
                if isinstance(k, str) and k in keep:
                    out[k] = safe._redact_any(v, keep) if safe else v
                else:
                    key = safe.redact(k) if isinstance(k, str) else k
                    out[key] = self._redact_any(v, keep)
            return out
        if isinstance(obj, list):
            return [self._redact_any(v, keep) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self._redact_any(v, keep) for v in obj)
        if isinstance(obj, bytes):
            return self.redact_bytes(obj)
        if isinstance(obj, (int, float)) and not isinstance(obj, bool):
            # a secret PIN written as a JSON number: the number becomes the mask string
            text = repr(obj)
            safe = self._safe_redactor()
            return MASK if safe and safe.redact(text) != text else obj
        return obj

    def redact_name(self, name: str) -> str:
        """A file name with the secrets masked (safe-length ones only: a file called
        ``a.txt`` stays).  Masks never contain ``/``."""
        return self._safe_redactor().redact(name)


_NONE = Redactor(())


# --------------------------------------------------------------------------- files


def _open_nofollow(path: str) -> int:
    """Open for reading, never through a symlink and never blocking (a FIFO the agent left
    opens at once; the caller refuses what fstat says is not a regular file)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    return os.open(path, flags | getattr(os, "O_CLOEXEC", 0))


def _replace_content(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file next to ``path`` and rename it over ``path``, keeping its
    ``mode`` (a masked script stays executable): a hard link to a file elsewhere is never
    written through, and a planted symlink is never followed."""
    write_bytes_atomic(path, data, mode=stat.S_IMODE(mode))


def _mask_json(data: bytes, redactor: Redactor, lines: bool) -> bytes | None:
    """Masked JSON (``lines``: JSON Lines) re-serialised, None when it is not valid JSON."""
    try:
        text = data.decode("utf-8")
        if not lines:
            value = json.loads(text)
            masked = redactor.redact_obj(value, keep=())
            return None if masked == value else (json.dumps(masked, indent=2) + "\n").encode()
        out: list[str] = []
        changed = False
        for line in text.splitlines():
            if not line.strip():
                out.append(line)
                continue
            value = json.loads(line)
            masked = redactor.redact_obj(value, keep=())
            changed = changed or masked != value
            out.append(json.dumps(masked) if masked != value else line)
        return ("\n".join(out) + "\n").encode() if changed else data
    except (ValueError, RecursionError):  # not JSON, or nested too deep to mask value by value
        return None


#: Bytes of a file larger than ``max_bytes`` that :func:`redact_file` still scans (in chunks)
#: before it gives up and replaces the file by a note.
MAX_SCAN_BYTES = 512 * 1024 * 1024
_SCAN_CHUNK = 4 * 1024 * 1024


def _holds_secret(f: Any, redactor: Redactor, limit: int) -> bool | None:
    """Does the open file hold a secret? Read in chunks (overlapping by the longest escaped
    form); None when it is longer than ``limit`` bytes."""
    overlap = 12 * max((len(v) for v in redactor.values), default=1)
    tail, seen = b"", 0
    while True:
        chunk = f.read(_SCAN_CHUNK)
        if not chunk:
            return False
        seen += len(chunk)
        if seen > limit:
            return None
        window = tail + chunk
        if redactor.contains(window):
            return True
        tail = window[-overlap:]


def redact_file(
    path: Path,
    redactor: Redactor,
    *,
    max_bytes: int | None = None,
    scan_bytes: int = MAX_SCAN_BYTES,
) -> bool:
    """Mask the secrets in one regular file (never through a symlink); True when it changed.

    ``*.json`` and ``*.jsonl`` files that parse are masked value by value (valid JSON stays
    valid); other text files as bytes; binary files (not UTF-8) with the safe-length secrets
    only.  A file larger than ``max_bytes`` cannot be masked in bounded memory: it is scanned
    in chunks, kept as it is when it holds no secret, and replaced by a note when it does (or
    when it is larger than ``scan_bytes``).
    """
    if not redactor:
        return False
    try:
        fd = _open_nofollow(str(path))
    except OSError:
        return False  # gone, a symlink (ELOOP), or unreadable
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return False
        too_big = max_bytes is not None and st.st_size > max_bytes
        data = None if too_big else f.read()
        if too_big and _holds_secret(f, redactor, scan_bytes) is False:
            return False
    if data is None:
        note = f"evalrun: {st.st_size} bytes left out: too large to mask secrets in\n"
        _replace_content(path, note.encode(), st.st_mode)
        return True
    masked: bytes | None = None
    suffix = path.name.rpartition(".")[2].lower()
    if suffix in ("json", "jsonl"):
        masked = _mask_json(data, redactor, lines=suffix == "jsonl")
        if masked is data:
            return False
    if masked is None:
        try:
            data.decode("utf-8")
            masked = redactor.redact_bytes(data)
        except UnicodeDecodeError:
            masked = redactor.redact_binary(data)
    if masked == data:
        return False
    _replace_content(path, masked, st.st_mode)
    return True


def _free_name(directory: Path, name: str) -> Path:
    target = directory / name
    n = 1
    while os.path.lexists(target):
        target = directory / f"{name}.{n}"
        n += 1
    return target


def redact_tree(
    root: Path,
    redactor: Redactor,
    *,
    max_bytes: int | None = None,
    skip: Collection[str] = (),
) -> int:
    """Mask the secrets in every file under ``root``: contents (:func:`redact_file`), file
    and directory names (renamed), symlink targets (the link is re-made, never followed).
    ``root`` itself must be a real directory (a symlink is refused).  Names in ``skip`` (in
    ``root`` itself) are left alone.  Returns how many entries changed.  The walk is
    iterative: a tree thousands of levels deep is masked like any other."""
    if not redactor:
        return 0
    changed = 0
    try:
        if not stat.S_ISDIR(os.lstat(root).st_mode):
            return 0
    except OSError:
        return 0
    # (directory, names to skip in it); a directory's entries are masked before its name
    stack: list[tuple[Path, Collection[str], bool]] = [(root, skip, False)]
    while stack:
        directory, skipped, renamed_after = stack.pop()
        if renamed_after:
            changed += _rename_masked(directory, redactor)
            continue
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.name in skipped:
                continue
            path = Path(entry.path)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append((path, (), True))  # its name, once its entries are done
                stack.append((path, (), False))
                continue
            if stat.S_ISLNK(st.st_mode):
                with contextlib.suppress(OSError):
                    target = os.readlink(path)
                    masked = redactor.redact(target)
                    if masked != target:
                        path.unlink()
                        os.symlink(masked, path)
                        changed += 1
            elif stat.S_ISREG(st.st_mode):
                with contextlib.suppress(OSError):
                    changed += redact_file(path, redactor, max_bytes=max_bytes)
            changed += _rename_masked(path, redactor)
    return changed


def _rename_masked(path: Path, redactor: Redactor) -> int:
    name = redactor.redact_name(path.name)
    if name == path.name:
        return 0
    with contextlib.suppress(OSError):
        os.rename(path, _free_name(path.parent, name))
        return 1
    return 0
