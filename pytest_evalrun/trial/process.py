"""Run one trial step (setup, agent, verify) and make sure nothing it started survives it.

Process-tree killing
--------------------
A step may start processes that leave the step's process tree: a grandchild that ignores
SIGTERM, a daemon that double-forks and is re-parented to init, a grandchild that calls
``setsid()`` and so leaves the step's session and process group.  Walking the parent/child tree
finds none of the escaped ones once their parent has exited.

We use the approach of Jenkins' ``ProcessTreeKiller``, which marks every build with a
``BUILD_ID`` environment variable and afterwards kills every process that still carries it:
each step gets a unique *cookie*, the environment variable ``EVALRUN_PROCESS_COOKIE=<uuid4 hex>``,
which every process the step starts inherits (environments are copied across ``fork`` and
``exec``, and ``setsid``/double-forking does not change them).  After the step — on timeout
*and* after every normal exit — we kill:

* every process whose environment (``/proc/<pid>/environ``) contains the cookie,
* every process in the step's session (the child is started with ``start_new_session=True``,
  so its session id and process group id are its pid; a group always lies inside its session),
* on timeout, additionally the child's live ``psutil`` descendants, captured before anything is
  signalled (this also catches a descendant that cleared its environment but is still in the tree).

They get SIGTERM, a short grace period (``kill_grace``, 0.5 s by default, ended early as soon as
all are gone), then SIGKILL, repeated until a scan finds nothing alive, so that processes forked
while we were killing are found too.  Processes are signalled through pidfds after their identity
has been re-checked, so a recycled pid is never hit; processes of other steps carry other cookies
and other sessions and are never touched.  Zombies are already dead and are not counted.

Nesting: if the environment we are given already carries a cookie (pytest-evalrun running an
agent that itself runs pytest-evalrun), the old cookies are kept in ``EVALRUN_PROCESS_COOKIE_OUTER``
so that the outer run still finds everything an inner run starts.

Cost: the scan lists ``/proc`` and, for every process outside session 0, reads
``/proc/<pid>/environ``: O(number of processes).  Kernel threads (and processes of an init that
never called ``setsid()``) are in session 0, where no step's process can be, and are skipped with
one ``getsid()`` call.  On the 2-core development machine (~73 processes, ~60 of them in
session 0) a scan takes ~0.2 ms (0.5-0.7 ms without the session-0 skip; ~6 us per process
read).  The scan runs after every step, even a clean one, because a ``setsid()`` daemon cannot
be detected any cheaper (it is in neither the step's process group nor its session, so a
``killpg(pgid, 0)`` probe misses it); a step costs at least a fork/exec (~0.8 ms) anyway.
``run_step(["true"])`` costs ~1.3 ms against ~0.85 ms for a bare ``Popen(["true"]).wait()``.
Limitation shared with Jenkins: a process that both clears its environment *and* leaves the
session, and whose parent exited normally, is not found.  Processes merely re-parented to init
are not ours to reap; killed ones are reaped by init (or stay zombies if init never reaps).

Scale: every process is pinned by a pidfd and watched with ``poll()`` (never ``select()``,
which fails beyond descriptor 1024); where pidfds run out (``EMFILE``) a process is signalled
by pid after the same re-check.  1,500 TERM-ignoring processes are all killed
(``tests/test_process.py``).

Output: stdout and stderr go straight to the output file (the pytest process never holds
them), and after the step the file is cut to ``max_output`` bytes (:func:`cap_output`: the
first and last halves kept, the middle replaced by ``[... N bytes left out ...]``), in
bounded memory, so that reading, masking and tailing it later costs at most that much.

Orphans: when pytest itself is killed outright (``kill -9``), nothing runs the kill above.  A
sandboxed step dies with it (bubblewrap's ``--die-with-parent``); for the others,
:func:`record_steps_in` makes every step leave a record (``<dir>/<cookie>.json``: the cookie
and the pids, with their start times, of the processes that own it) for as long as it runs, and
:func:`reap_orphans`, called when the next session starts, kills the processes of every record
whose owner is gone, by cookie.

Public API: :func:`run_step`, :func:`record_steps_in`, :func:`reap_orphans`,
:class:`ProcessResult`, :func:`kill_cookie_processes`,
:func:`find_cookie_processes`, :func:`kill_all_running`, :func:`running_cookies`,
:func:`cap_output`, :data:`DEFAULT_MAX_OUTPUT` and :data:`COOKIE_VAR`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import select
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "COOKIE_OUTER_VAR",
    "COOKIE_VAR",
    "DEFAULT_KILL_GRACE",
    "DEFAULT_MAX_OUTPUT",
    "ProcessResult",
    "cap_output",
    "environment_call",
    "find_cookie_processes",
    "kill_all_running",
    "kill_cookie_processes",
    "reap_orphans",
    "record_steps_in",
    "run_step",
    "running_cookies",
    "steps_only_through",
]

COOKIE_VAR = "EVALRUN_PROCESS_COOKIE"
COOKIE_OUTER_VAR = "EVALRUN_PROCESS_COOKIE_OUTER"
DEFAULT_KILL_GRACE = 0.5
#: Output kept per step (bytes): the first and the last half of it.
DEFAULT_MAX_OUTPUT = 10 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024

_PROC = "/proc"
_HAVE_PROC = sys.platform.startswith("linux") and os.path.isdir(_PROC)
_HAVE_PIDFD = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")
_READ_CHUNK = 65536
_MAX_KILL_ROUNDS = 50
_KILL_WAIT = 2.0  # how long to wait for SIGKILLed processes to disappear, per round
_KILL_TIMEOUT = 10.0  # stop SIGKILL rounds after this long (unkillable D-state processes)

# cookie -> pid of the step's direct child (= its session id and process group id)
_RUNNING: dict[str, int] = {}
# where running steps are recorded for reap_orphans, and the owners written into each record
# ([pid, start time]; the start times are looked up when the first step is recorded)
_REGISTRY: tuple[Path, list[list[float]]] | None = None
_OWNERS_TIMED = False


@dataclass
class ProcessResult:
    """What happened to one step.

    ``exit_code`` is None when the step was killed for its timeout or could not be started
    (then ``start_error`` says why).  A negative ``exit_code`` means the child died of that
    signal.  ``killed_leftovers`` counts the processes other than the step's direct child that
    were still alive when the step ended (or timed out) and were killed.
    """

    exit_code: int | None
    timed_out: bool
    duration: float
    start_error: str | None = None
    killed_leftovers: int = 0
    #: bytes of output cut by the ``max_output`` cap (0: all kept)
    output_cut: int = 0
    #: ``(error_kind, message)`` when the step's runner knows the infrastructure failed, not
    #: the agent (a preset's CLI that never got an answer from its model API): the trial is
    #: an ``error`` of that kind, not judged.
    infra_error: tuple[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.start_error is None

    def with_leftovers(self, killed: int) -> ProcessResult:
        """This result, counting ``killed`` more processes the step left (killed after it by
        whoever ran it, e.g. a container environment)."""
        if not killed:
            return self
        return dataclasses.replace(self, killed_leftovers=self.killed_leftovers + killed)


# --------------------------------------------------------------------------- scanning


def _read_environ(pid: str) -> bytes:
    """Raw ``/proc/<pid>/environ``; b"" when it cannot be read (gone, other user, kernel)."""
    try:
        fd = os.open(f"{_PROC}/{pid}/environ", os.O_RDONLY)
    except OSError:
        return b""
    try:
        data = os.read(fd, _READ_CHUNK)
        if len(data) == _READ_CHUNK:
            chunks = [data]
            while True:
                chunk = os.read(fd, _READ_CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
            data = b"".join(chunks)
        return data
    except OSError:
        return b""
    finally:
        os.close(fd)


def _is_zombie(pid: int) -> bool:
    """True when the process is a zombie (already dead) or gone."""
    if _HAVE_PROC:
        try:
            with open(f"{_PROC}/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return True
        state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
        return state in (b"Z", b"X", b"x", b"")
    import psutil  # imported where used: a session that runs no step never needs it

    try:
        return psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return True


def _in_session(pid: int, session: int | None) -> bool:
    if session is None:
        return False
    try:
        return os.getsid(pid) == session
    except OSError:
        return False


def _matches(pid: int, cookie: bytes, session: int | None) -> bool:
    """Does live process ``pid`` belong to the step (cookie in environ, or in its session)?"""
    if _in_session(pid, session):
        return True
    if _HAVE_PROC:
        return cookie in _read_environ(str(pid))
    import psutil

    try:
        env = psutil.Process(pid).environ()
    except psutil.Error:
        return False
    text = cookie.decode()
    return any(text in v for v in env.values())


def _scan(cookie: bytes, session: int | None) -> list[int]:
    """Pids of all processes carrying ``cookie`` or living in ``session`` (zombies included)."""
    me = os.getpid()
    found: list[int] = []
    if not _HAVE_PROC:  # pragma: no cover - non-Linux fallback
        import psutil

        for proc in psutil.process_iter():
            if proc.pid != me and _matches(proc.pid, cookie, session):
                found.append(proc.pid)
        return found
    for name in os.listdir(_PROC):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == me:
            continue
        try:
            sid = os.getsid(pid)
        except OSError:
            continue
        # Session 0 holds kernel threads (and anything an init that never called setsid()
        # started): no step's process can be there, since a step starts in its own session
        # and setsid() only ever creates a session named after the caller.  Skipping them
        # saves most of the scan on a quiet machine.
        if sid == session or (sid != 0 and cookie in _read_environ(name)):
            found.append(pid)
    return found


def find_cookie_processes(cookie: str, *, session: int | None = None) -> list[int]:
    """Pids of the live (non-zombie) processes carrying ``cookie`` or in ``session``."""
    return [pid for pid in _scan(cookie.encode(), session) if not _is_zombie(pid)]


# --------------------------------------------------------------------------- killing


class _Target:
    """One process to kill, pinned by a pidfd where the platform has them."""

    __slots__ = ("fd", "pid")

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd

    @classmethod
    def open(cls, pid: int) -> _Target | None:
        if not _HAVE_PIDFD:
            return cls(pid, -1)
        try:
            return cls(pid, os.pidfd_open(pid))
        except ProcessLookupError:
            return None
        except OSError:  # ENOSYS on old kernels, EMFILE, ...
            return cls(pid, -1)

    def signal(self, sig: int) -> None:
        try:
            if self.fd >= 0:
                signal.pidfd_send_signal(self.fd, sig)
            else:
                os.kill(self.pid, sig)
        except OSError:  # already gone, or not ours to signal
            pass

    def gone(self) -> bool:
        if self.fd >= 0:
            # poll(), not select(): select() cannot watch a descriptor >= FD_SETSIZE (1024),
            # and a step with thousands of processes holds thousands of pidfds.
            poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            return bool(poller.poll(0))
        return _is_zombie(self.pid)

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def _wait_gone(targets: Iterable[_Target], timeout: float) -> None:
    """Wait until every target has exited (zombie counts) or ``timeout`` elapsed."""
    pending = [t for t in targets if not t.gone()]
    if not pending:
        return
    deadline = time.monotonic() + timeout
    with_fd = {t.fd: t for t in pending if t.fd >= 0}
    without_fd = [t for t in pending if t.fd < 0]
    poller = select.poll()
    for fd in with_fd:
        poller.register(fd, select.POLLIN)
    delay = 0.001
    while with_fd or without_fd:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        if with_fd:
            wait_ms = min(remaining, delay if without_fd else remaining) * 1000
            for fd, _ in poller.poll(max(1, int(wait_ms))):
                poller.unregister(fd)
                with_fd.pop(fd, None)
        else:
            time.sleep(min(delay, remaining))
        without_fd = [t for t in without_fd if not t.gone()]
        delay = min(delay * 2, 0.05)


def _collect(
    cookie: bytes,
    session: int | None,
    targets: dict[int, _Target],
) -> list[_Target]:
    """Scan, pin and re-verify the step's live processes; return the ones not yet known."""
    new: list[_Target] = []
    for pid in _scan(cookie, session):
        if pid in targets:
            continue
        target = _Target.open(pid)
        if target is None:
            continue
        # Re-check after pinning: the pid cannot be recycled any more while we hold the pidfd.
        if _is_zombie(pid) or not _matches(pid, cookie, session):
            target.close()
            continue
        targets[pid] = target
        new.append(target)
    return new


def _kill_tree(
    cookie: str,
    *,
    session: int | None,
    grace: float,
    extra: Iterable[_Target] = (),
    group: int | None = None,
    exclude: int | None = None,
) -> int:
    """SIGTERM, grace, SIGKILL everything of the step; return how many were killed.

    ``group`` is a process group that may be signalled as a whole (only pass it while the group
    leader is our unreaped child, so that the pgid cannot have been recycled).  ``exclude``
    is a pid not counted in the result (the step's direct child).
    """
    cookie_b = cookie.encode()
    targets: dict[int, _Target] = {}
    for t in extra:
        if t.pid in targets or t.gone():
            t.close()
        else:
            targets[t.pid] = t
    _collect(cookie_b, session, targets)
    if not targets:
        return 0
    try:
        # Polite round: SIGTERM, then give them ``grace`` seconds to exit.
        if group is not None:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGTERM)
        for t in list(targets.values()):
            t.signal(signal.SIGTERM)
        if grace > 0:
            _wait_gone(targets.values(), grace)
        # Then SIGKILL everything still alive, and whatever was forked meanwhile, until a scan
        # finds nothing new.
        give_up = time.monotonic() + _KILL_TIMEOUT
        for _ in range(_MAX_KILL_ROUNDS):
            if group is not None:
                with contextlib.suppress(OSError):
                    os.killpg(group, signal.SIGKILL)
            alive = [t for t in targets.values() if not t.gone()]
            for t in alive:
                t.signal(signal.SIGKILL)
            new = _collect(cookie_b, session, targets)
            for t in new:
                t.signal(signal.SIGKILL)
            if not alive and not new:
                break
            if time.monotonic() > give_up:  # e.g. stuck in uninterruptible sleep
                break
            _wait_gone(alive + new, _KILL_WAIT)
        return sum(1 for pid in targets if pid != exclude)
    finally:
        for t in targets.values():
            t.close()


def kill_cookie_processes(
    cookie: str, *, session: int | None = None, grace: float = DEFAULT_KILL_GRACE
) -> int:
    """Kill every process carrying ``cookie`` (and every process in ``session``, if given).

    SIGTERM, up to ``grace`` seconds, then SIGKILL.  Returns the number of processes killed.
    Safe to call from a signal handler or on KeyboardInterrupt.
    """
    return _kill_tree(cookie, session=session, grace=grace)


def kill_processes_with_env(name: str, value: str, *, grace: float = DEFAULT_KILL_GRACE) -> int:
    """Kill every process whose environment has exactly ``name=value`` (same method as the
    cookie kill). The controller uses it with ``EVALRUN_TRIAL_DIR`` to kill what a crashed
    worker's trial left running. Returns the number of processes killed."""
    return _kill_tree(f"{name}={value}\0", session=None, grace=grace)


def running_cookies() -> dict[str, int]:
    """Cookies of the steps running now, with the pid of each step's direct child."""
    return dict(_RUNNING)


def kill_all_running(grace: float = DEFAULT_KILL_GRACE) -> int:
    """Kill the process trees of all steps running in this process (Ctrl-C, worker SIGTERM).

    The direct children are killed too; the ``run_step`` calls waiting on them then return
    (or, on KeyboardInterrupt, re-raise).  Returns the number of processes killed.
    """
    total = 0
    for cookie, pid in list(_RUNNING.items()):
        total += _kill_tree(cookie, session=pid, grace=grace)
    return total


# --------------------------------------------------------------------------- orphans


def _started(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def record_steps_in(directory: Path | None, owners: Iterable[int] = ()) -> None:
    """Record every step this process starts from now on in ``directory`` (None: stop), as
    owned by this process and by ``owners`` (e.g. the xdist controller): when any of them is
    gone, :func:`reap_orphans` kills what the step left running."""
    global _REGISTRY, _OWNERS_TIMED
    if directory is None:
        _REGISTRY = None
        return
    pids = dict.fromkeys([os.getpid(), *owners])
    _REGISTRY = (Path(directory), [[pid, 0.0] for pid in pids if pid > 0])
    _OWNERS_TIMED = False


def _record_step(cookie: str) -> Path | None:
    global _OWNERS_TIMED
    if _REGISTRY is None:
        return None
    directory, owners = _REGISTRY
    if not _OWNERS_TIMED:  # at the first step: a session that runs none never asks (psutil)
        for owner in owners:
            owner[1] = _started(int(owner[0])) or 0.0
        _OWNERS_TIMED = True
    path = directory / f"{cookie}.json"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"cookie": cookie, "owners": owners}))
    except OSError:
        return None
    return path


def _owner_alive(pid: int, started: float) -> bool:
    now = _started(pid)
    return now is not None and (not started or abs(now - started) < 1.0)


def reap_orphans(directory: Path, *, grace: float = DEFAULT_KILL_GRACE) -> int:
    """Kill the processes of every step recorded in ``directory`` whose owner is gone (a
    pytest killed outright); returns how many were killed.  Records of live owners (another
    session running now) are left alone."""
    killed = 0
    try:
        records = [p for p in Path(directory).iterdir() if p.suffix == ".json"]
    except OSError:
        return 0
    for path in records:
        try:
            data = json.loads(path.read_text())
            cookie, owners = str(data["cookie"]), list(data["owners"])
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if len(cookie) != 32 or not all(c in "0123456789abcdef" for c in cookie):
            continue  # not one of ours
        if owners and all(_owner_alive(int(o[0]), float(o[1])) for o in owners):
            continue
        killed += _kill_tree(cookie, session=None, grace=grace)
        with contextlib.suppress(OSError):
            path.unlink()
    return killed


# --------------------------------------------------------------------------- running


def _start_error(exc: OSError, argv: Sequence[str], cwd: Path) -> str:
    program = argv[0] if argv else ""
    filename = exc.filename
    if filename is not None and str(filename) == str(cwd) and str(filename) != program:
        if isinstance(exc, FileNotFoundError):
            return f"working directory not found: {cwd}"
        if isinstance(exc, NotADirectoryError):
            return f"working directory is not a directory: {cwd}"
        return f"cannot enter working directory {cwd}: {exc.strerror or exc}"
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {program}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {program}"
    return f"cannot start {program}: {exc.strerror or exc}"


def _child_env(env: Mapping[str, str], cookie: str) -> dict[str, str]:
    child = dict(env)
    outer = [c for c in (child.get(COOKIE_OUTER_VAR, ""), child.get(COOKIE_VAR, "")) if c]
    if outer:
        child[COOKIE_OUTER_VAR] = ",".join(outer)
    child[COOKIE_VAR] = cookie
    return child


# While a step runner runs, processes start only through the trial's environment: the
# message a direct run_step gets (None: no runner runs), and the threads inside an
# environment's own run (allowed).
_REFUSAL: list[str] = []
_ALLOWED = threading.local()


def _refused() -> str | None:
    if not _REFUSAL or getattr(_ALLOWED, "depth", 0) > 0:
        return None
    return _REFUSAL[-1]


@contextlib.contextmanager
def steps_only_through(message: str) -> Iterator[None]:
    """While inside, :func:`run_step` refuses to start anything (``start_error`` =
    ``message``) but from within :func:`environment_call`: the trial runner wraps each step
    runner in it, so a plugin's runner cannot start a process outside the trial's environment
    by calling ``run_step`` itself."""
    _REFUSAL.append(message)
    try:
        yield
    finally:
        _REFUSAL.pop()


@contextlib.contextmanager
def environment_call() -> Iterator[None]:
    """An environment's own ``run`` (in this thread) may start processes."""
    _ALLOWED.depth = getattr(_ALLOWED, "depth", 0) + 1
    try:
        yield
    finally:
        _ALLOWED.depth -= 1


def run_step(
    command: Sequence[str] | str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float | None,
    output: Path,
    append: bool = False,
    stdin_text: str | None = None,
    kill_grace: float = DEFAULT_KILL_GRACE,
    max_output: int | None = DEFAULT_MAX_OUTPUT,
    pass_fds: Sequence[int] = (),
    contained: Callable[[], bool] | None = None,
) -> ProcessResult:
    """Run one step and kill whatever it leaves behind.

    ``command``: a sequence is argv (no shell); a string runs with ``/bin/sh -c``.
    ``env`` is the complete environment; the process cookie is added to it.
    stdout and stderr both go to ``output`` (truncated, or appended to with ``append``),
    interleaved as written.  ``stdin_text`` is fed on stdin (else stdin is /dev/null).
    ``timeout`` in seconds (None: no limit).  A program that cannot be started is reported
    in ``start_error``, never raised.  See the module docstring for how leftovers are killed.
    Once nothing of the step runs, ``output`` is cut to ``max_output`` bytes (None: no cap;
    :func:`cap_output`); ``output_cut`` says how many bytes were left out.
    ``pass_fds``: descriptors the child inherits (an environment's status pipe).
    ``contained``: for a child whose processes all live in a PID namespace of its own that
    dies with it (bubblewrap's ``--unshare-pid --die-with-parent``): called once the child
    exited, True when that namespace is gone (nothing of the step can be alive, so the scan
    for leftovers is skipped); False falls back to the scan.

    While a trial's step runner runs, only the trial's environment may start processes
    (:func:`steps_only_through`): a direct call is refused with a ``start_error``.
    """
    argv: list[str] = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
    cookie = uuid.uuid4().hex
    started = time.monotonic()
    if not argv:
        return ProcessResult(None, False, 0.0, start_error="empty command")
    refused = _refused()
    if refused is not None:
        with contextlib.suppress(OSError):
            output.parent.mkdir(parents=True, exist_ok=True)
            with open(output, "ab" if append else "wb") as fh:
                fh.write(f"evalrun: {refused}\n".encode())
        return ProcessResult(None, False, 0.0, start_error=refused)

    try:
        out_file: IO[bytes] = open(output, "ab" if append else "wb")  # noqa: SIM115
    except FileNotFoundError:
        output.parent.mkdir(parents=True, exist_ok=True)
        out_file = open(output, "ab" if append else "wb")  # noqa: SIM115

    stdin: IO[bytes] | int = subprocess.DEVNULL
    record = _record_step(cookie)
    try:
        if stdin_text is not None:
            # A temporary file, not a pipe: no writer thread, no deadlock on large input.
            stdin_file = tempfile.TemporaryFile()  # noqa: SIM115
            stdin_file.write(stdin_text.encode())
            stdin_file.seek(0)
            stdin = stdin_file
        try:
            child = subprocess.Popen(
                argv,
                cwd=cwd,
                env=_child_env(env, cookie),
                stdin=stdin,
                stdout=out_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                pass_fds=tuple(pass_fds),
            )
        except OSError as exc:
            message = _start_error(exc, argv, Path(cwd))
            with contextlib.suppress(OSError):
                out_file.write(f"evalrun: {message}\n".encode())
            if record is not None:
                with contextlib.suppress(OSError):
                    record.unlink()
            return ProcessResult(None, False, time.monotonic() - started, start_error=message)
    finally:
        out_file.close()
        if not isinstance(stdin, int):
            stdin.close()

    _RUNNING[cookie] = child.pid
    try:
        exited = _wait_exit(child, timeout)
        duration = time.monotonic() - started
        exit_code: int | None = None
        if exited:
            # Leftovers of a step that ended by itself.  The child is normally still an
            # unreaped zombie here (see _wait_exit), so its group may be signalled as a whole.
            unreaped = child.returncode is None
            if contained is not None and contained():
                killed = 0
            else:
                killed = _kill_tree(
                    cookie,
                    session=child.pid,
                    grace=kill_grace,
                    group=child.pid if unreaped else None,
                    exclude=child.pid,
                )
            _RUNNING.pop(cookie, None)  # before reaping frees the pid (and session id)
            exit_code = child.wait()
        else:
            killed = _kill_timed_out(child, cookie, kill_grace)
        cut = cap_output(output, max_output) if max_output is not None else 0
        return ProcessResult(exit_code, not exited, duration, None, killed, cut)
    except BaseException:
        # KeyboardInterrupt / SystemExit while waiting: never leave the tree running.
        with contextlib.suppress(Exception):
            _kill_timed_out(child, cookie, kill_grace)
        raise
    finally:
        _RUNNING.pop(cookie, None)
        if record is not None:
            with contextlib.suppress(OSError):
                record.unlink()


def _wait_exit(child: subprocess.Popen[bytes], timeout: float | None) -> bool:
    """Wait until the child exits (True) or ``timeout`` expires (False).

    Where pidfds exist the child is left unreaped (a zombie): its pid, which is also the
    step's session and process group id, then cannot be recycled while we look for leftovers,
    so a new unrelated session can never be mistaken for the step's.  We block in ``poll()`` on
    the pidfd, which wakes exactly when the child exits; ``Popen.wait(timeout)``, the fallback,
    polls with sleeps of up to 50 ms (a step's end noticed up to 50 ms late, and ~1 ms of
    sleeping added to even the shortest step).
    """
    if _HAVE_PIDFD:
        try:
            fd = os.pidfd_open(child.pid)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                if timeout is None:
                    while not poller.poll():
                        pass
                    return True
                deadline = time.monotonic() + timeout
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return bool(poller.poll(0))
                    # bounded, to stay within poll()'s int range and re-check the deadline
                    if poller.poll(math.ceil(min(remaining, 86400.0) * 1000)):
                        return True
            finally:
                os.close(fd)
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def _kill_timed_out(child: subprocess.Popen[bytes], cookie: str, grace: float) -> int:
    """Kill the whole tree of a still-running (or unreaped) child, then reap the child."""
    extra: list[_Target] = []
    group: int | None = None
    if child.returncode is None:
        group = child.pid  # unreaped, so the pgid cannot be recycled
        pids = [child.pid]
        import psutil

        with contextlib.suppress(psutil.Error):
            pids += [p.pid for p in psutil.Process(child.pid).children(recursive=True)]
        for pid in pids:
            target = _Target.open(pid)
            if target is not None:
                extra.append(target)
    try:
        killed = _kill_tree(
            cookie, session=child.pid, grace=grace, extra=extra, group=group, exclude=child.pid
        )
    finally:
        if child.returncode is None:
            with contextlib.suppress(OSError):
                child.kill()
        child.wait()
    return killed


# --------------------------------------------------------------------------- output cap


def _marker(cut: int) -> bytes:
    return f"\n[... {cut} bytes left out ...]\n".encode()


def cap_output(path: Path, limit: int) -> int:
    """Cut the file at ``path`` to about ``limit`` bytes: keep its first and last
    ``limit // 2`` bytes and put ``[... N bytes left out ...]`` between them.  Works in place
    with bounded memory (1 MiB at a time) and never follows a symlink.  Returns N (0 when the
    file was small enough, missing, or not a regular file)."""
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return 0
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size <= max(limit, 0):
            return 0
        size = st.st_size
        head = max(limit, 0) // 2
        tail = max(limit, 0) - head
        cut = size - head - tail
        marker = _marker(cut)
        # The tail moves left (marker shorter than the cut, since limit < size): copy forward.
        dst = head + len(marker)
        if len(marker) >= cut:  # tiny overshoot: keeping everything costs no more
            return 0
        os.pwrite(fd, marker, head)
        src = size - tail
        while src < size:
            chunk = os.pread(fd, min(_COPY_CHUNK, size - src), src)
            if not chunk:
                break
            os.pwrite(fd, chunk, dst)
            src += len(chunk)
            dst += len(chunk)
        os.ftruncate(fd, dst)
        return cut
    finally:
        os.close(fd)
