"""Read a task's ``prompt_file``: a regular file of at most :data:`MAX_PROMPT_BYTES` bytes of
UTF-8, checked before it is read, so a device or a FIFO is an error and never a hang."""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["MAX_PROMPT_BYTES", "PromptFileError", "read_prompt_file"]

#: Largest prompt file accepted (bytes).
MAX_PROMPT_BYTES = 1024 * 1024


class PromptFileError(Exception):
    """A prompt file that cannot be used: ``why`` (e.g. "is not a regular file"), and the
    message names the file."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"prompt file {path} {why}")
        self.path = path
        self.why = why


def read_prompt_file(path: Path, max_bytes: int = MAX_PROMPT_BYTES) -> str:
    """The text of a prompt file, which must be a regular file of at most ``max_bytes``
    bytes of UTF-8.  Opened non-blocking and checked before reading, so ``/dev/zero`` or a
    FIFO is an error naming the file, never an endless read or a hang."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise PromptFileError(path, "does not exist") from None
    except OSError as exc:
        raise PromptFileError(path, f"cannot be opened: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PromptFileError(path, "is not a regular file")
        if st.st_size > max_bytes:
            raise PromptFileError(path, f"has {st.st_size} bytes, more than {max_bytes}")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PromptFileError(path, f"has more than {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PromptFileError(path, "cannot be read as UTF-8 text") from None
