"""Images built from a Dockerfile, once, and cached by content: the tag is
``localhost/evalrun-build:<digest>``, the digest of the Dockerfile and of every file of the
build context (names, modes, contents, link targets). An image with that tag is reused without
building, in this session and in every later one; concurrent builders (xdist workers) take a
file lock per digest, so one builds and the others reuse. A failed build is a
:class:`BuildError` naming what was built and ending with the build's last lines; it is
remembered for the process, so the other trials of the task fail at once."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import time
from pathlib import Path

from .containerruntime import ContainerError, Runtime

BUILD_TAG_PREFIX = "localhost/evalrun-build"
BUILD_TAIL_LINES = 25
MAX_CONTEXT_FILES = 100_000


class BuildError(ContainerError):
    """Building an image failed; the message names what and ends with the build's tail."""


def context_digest(context: Path, dockerfile: Path) -> str:
    """A digest of what a build reads: the Dockerfile's content and every file under the
    context directory (relative name, mode, content; a link's target), in a stable order.
    :class:`BuildError` when the context cannot be read or is too large."""
    digest = hashlib.sha256()
    try:
        digest.update(b"dockerfile\0" + dockerfile.read_bytes() + b"\0")
    except OSError as exc:
        raise BuildError(f"cannot read {dockerfile}: {exc.strerror or exc}") from exc
    count = 0
    for root, dirs, files in os.walk(context):
        dirs.sort()
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(root, d))]):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, context)
            count += 1
            if count > MAX_CONTEXT_FILES:
                raise BuildError(f"the build context {context} has more than "
                                 f"{MAX_CONTEXT_FILES:,} files")
            try:
                st = os.lstat(path)
                digest.update(f"{rel}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
                if stat.S_ISLNK(st.st_mode):
                    digest.update(b"link\0" + os.readlink(path).encode() + b"\0")
                elif stat.S_ISREG(st.st_mode):
                    with open(path, "rb") as handle:
                        for chunk in iter(lambda: handle.read(1 << 20), b""):
                            digest.update(chunk)
                    digest.update(b"\0")
            except OSError as exc:
                raise BuildError(f"cannot read {path} of the build context: "
                                 f"{exc.strerror or exc}") from exc
    return digest.hexdigest()[:24]


_BUILD_FAILED: dict[str, str] = {}


#: (Dockerfile, context) -> the tag built or found in this process.
_TAGS: dict[tuple[str, str], str] = {}


#: Images this process built (tag -> seconds): bench/ and the tests read it.
BUILT: dict[str, float] = {}


def lock_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "pytest-evalrun" / "image-locks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_image(
    runtime: Runtime, dockerfile: Path, context: Path, *, what: str, timeout: float = 600.0,
    log: Path | None = None,
) -> str:
    """The tag of the image built from ``dockerfile`` with ``context``, building it only when
    no image has that tag (the content digest). ``what`` names the build in errors (e.g.
    "task 'fix-bug'"); ``log``, if given, receives the build's output."""
    key = (str(dockerfile), str(context))
    if key in _TAGS:  # built (or found) once in this process: the session's image
        return _TAGS[key]
    tag = f"{BUILD_TAG_PREFIX}:{context_digest(context, dockerfile)}"
    if tag in _BUILD_FAILED:
        raise BuildError(_BUILD_FAILED[tag])
    if runtime.image_exists(tag):
        _TAGS[key] = tag
        return tag
    with open(lock_dir() / f"{tag.rsplit(':', 1)[1]}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if runtime.image_exists(tag):  # another process built it while we waited
            _TAGS[key] = tag
            return tag
        started = time.monotonic()
        try:
            # --force-rm: Docker keeps a failed step's container otherwise
            done = runtime.call("build", "--force-rm", "-f", str(dockerfile), "-t", tag,
                                str(context),
                                timeout=timeout)
        except ContainerError as exc:
            message = f"building the image of {what} failed: {exc}"
            _BUILD_FAILED[tag] = message
            raise BuildError(message) from exc
        output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        if log is not None:
            with contextlib.suppress(OSError):
                log.write_text(output)
        if done.returncode != 0:
            lines = "\n".join(output.rstrip().splitlines()[-BUILD_TAIL_LINES:])
            message = (f"building the image of {what} from {dockerfile} failed "
                       f"({runtime.name} build exit status {done.returncode}); its last "
                       f"lines:\n{lines}")
            _BUILD_FAILED[tag] = message
            raise BuildError(message)
        BUILT[tag] = time.monotonic() - started
    _TAGS[key] = tag
    return tag
