"""The two local environments: ``bwrap`` (the bubblewrap sandbox of :mod:`..sandbox`) and
``none`` (unsandboxed, in a temporary directory outside the suite).

``bwrap``: the workspace is the trial directory's ``workspace/``, bound at
``/tmp/workspace``; every step gets a :class:`~..sandbox.Sandbox` built from its phase's
view, the trial's ``sandbox: read:/write:`` paths, the step's own program
(:func:`~..phases.program_paths`, plus every link on the way from the Python running pytest
to its real file) and what the step kind adds. Whether bubblewrap started the program is read
from its ``--json-status-fd`` (an ``exit-code`` is reported only once the program was
executed), so a program the sandbox cannot show is a ``sandbox`` error, never the program's
exit status 1.

``none``: nothing of the host is hidden; the workspace lives in a temporary directory outside
the suite while the trial runs (so tools never find the suite's ``pytest.ini``,
``conftest.py`` or ``.git``) and is moved into the trial directory by :meth:`teardown`; each
step gets a fresh private HOME and TMPDIR there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
import select
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...sandboxkind import EnvironmentKind, SandboxKind
from ..bwrapprobe import probe
from ..egress import Egress, loopback_forwards, url_port
from ..network import LOG_FILE, Forward, NetLog
from ..phases import program_paths, safe_reads
from ..process import ProcessResult, environment_call, run_step
from ..sandbox import (
    Isolation,
    Sandbox,
    SandboxError,
    SandboxPolicy,
    resolve,
)
from ..sandboxview import HOME_INSIDE, TMP_INSIDE, WORKSPACE_INSIDE, credential_paths
from .base import (
    Environment,
    EnvironmentFactory,
    EnvironmentUnavailable,
    StepCall,
    StepPaths,
    TrialPlace,
)

if TYPE_CHECKING:
    from ..phases import View

__all__ = ["LOCAL", "LocalBwrap", "LocalNone", "interpreter_links"]

#: Largest status bwrap reports on its ``--json-status-fd`` that is read (bytes).
_STATUS_LIMIT = 1 << 16


def interpreter_links(executable: str = sys.executable) -> tuple[Path, ...]:
    """Every symlink on the way from ``executable`` to its real file (a venv made from a
    venv on Python 3.10 links to the outer venv's ``python``, which links to pyenv's): each
    must be visible inside the sandbox for ``execve`` to follow it."""
    found: list[Path] = []
    path = os.path.abspath(executable)
    for _ in range(40):  # the kernel's own limit on links followed
        if not os.path.islink(path):
            break
        found.append(Path(path))
        target = os.readlink(path)
        path = os.path.normpath(os.path.join(os.path.dirname(path), target))
    return tuple(found)


class _Local(Environment):
    def __init__(self, place: TrialPlace, isolation: Isolation) -> None:
        super().__init__(place)
        self.isolation = isolation

    def describe(self) -> dict[str, Any]:
        return {"environment": self.name, **self.isolation.to_dict(),
                "network": self.place.network, **self.network_record()}

    def network_record(self) -> dict[str, Any]:
        """meta.json's ``network_isolated`` and ``network_note`` (docs/isolation.md)."""
        return {"network_isolated": False,
                "network_note": "unsandboxed: steps share the host's network"}


class LocalNone(_Local):
    """Unsandboxed: steps run directly, in a workspace outside the suite."""

    name = EnvironmentKind.NONE.value
    sandboxed = False

    def __init__(self, place: TrialPlace) -> None:
        requested = place.requested
        if requested == EnvironmentKind.AUTO:
            isolation = Isolation(SandboxKind.NONE.value, SandboxKind.AUTO.value,
                                  reason=probe().reason or "chosen: none")
        else:
            isolation = Isolation(SandboxKind.NONE.value, requested, reason="sandbox: none")
        super().__init__(place, isolation)
        self._scratch: Path | None = Path(tempfile.mkdtemp(prefix="evalrun-trial-"))
        self._workspace = self._scratch / "workspace"

    @property
    def workspace(self) -> Path:
        return self._workspace

    def inside(self, path: Path | str) -> str:
        return os.path.abspath(path)

    def step_paths(self, phase: str) -> StepPaths:
        if self._scratch is None:
            raise EnvironmentUnavailable("the trial's environment was torn down")
        home, tmp = self._scratch / f"{phase}-home", self._scratch / f"{phase}-tmp"
        for private in (home, tmp):  # a retried step starts with empty ones
            if os.path.lexists(private):
                shutil.rmtree(private, ignore_errors=True)
            private.mkdir()
        return StepPaths(str(home), str(tmp), str(self._workspace))

    def run(self, call: StepCall) -> ProcessResult:
        with environment_call():
            return run_step(list(call.argv), cwd=Path(call.cwd or self._workspace),
                            env=call.env, timeout=call.timeout, output=call.output,
                            append=call.append, stdin_text=call.stdin_text,
                            max_output=call.max_output)

    def teardown(self) -> Path | None:
        """Move the workspace into the trial directory, remove the temporary directory
        (``OSError`` when the workspace could not be moved: the rest is done anyway)."""
        scratch, self._scratch = self._scratch, None
        if scratch is None:
            return self._workspace if self._workspace == self.place.kept_workspace else None
        kept = self.place.kept_workspace
        try:
            if os.path.lexists(self._workspace) and not os.path.lexists(kept):
                shutil.move(str(self._workspace), str(kept))
                self._workspace = kept
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return kept if self._workspace == kept else None


class LocalBwrap(_Local):
    """The bubblewrap sandbox: each step in its phase's view (docs/isolation.md)."""

    name = EnvironmentKind.BWRAP.value
    sandboxed = True

    def __init__(self, place: TrialPlace) -> None:
        try:
            isolation = resolve(SandboxKind.BWRAP.value)
        except SandboxError as exc:
            if place.requested == EnvironmentKind.BWRAP:
                raise EnvironmentUnavailable(str(exc)) from exc
            raise EnvironmentUnavailable(
                f"environment bwrap was asked for ({place.requested}), but {exc}") from exc
        requested = (place.requested if place.requested in (EnvironmentKind.AUTO,
                                                            EnvironmentKind.BWRAP)
                     else EnvironmentKind.BWRAP.value)
        super().__init__(place, dataclasses.replace(isolation, requested=requested))
        if not place.network and not isolation.network_isolation:
            raise EnvironmentUnavailable(
                "network: false, but bwrap --unshare-net does not work here")
        self._workspace = place.kept_workspace
        #: The trial's way out (its own network, ``network`` on): the egress proxy and the
        #: allowed loopback ports, forwarded into every step's sandbox (docs/isolation.md).
        self.egress: Egress | None = None
        self._egress_record: dict[str, Any] | None = None
        if place.network and isolation.network_isolation:
            allow = place.network_allow
            try:
                self.egress = Egress(allow, NetLog(place.trial_dir / LOG_FILE), place.upstream)
            except OSError as exc:
                raise EnvironmentUnavailable(f"cannot start the egress proxy: {exc}") from exc
            self._egress_record = {
                "allow": [str(a) for a in allow] if allow is not None else None,
                "log": LOG_FILE,
            }

    def network_record(self) -> dict[str, Any]:
        if not self.isolation.network_isolation:
            return {"network_isolated": False,
                    "network_note": "bwrap --unshare-net does not work: steps share the "
                                    "host's network"}
        egress = dict(self._egress_record) if self._egress_record is not None else None
        return {"network_isolated": True, "egress": egress}

    @property
    def forwards_sockets(self) -> bool:
        """A network of its own with a way out (``network`` on): forwards reach the host."""
        return self.place.network and self.isolation.network_isolation

    @property
    def workspace(self) -> Path:
        return self._workspace

    def inside(self, path: Path | str) -> str:
        text = os.path.abspath(path)
        root = os.path.abspath(self._workspace)
        if text == root or text.startswith(root + os.sep):
            return WORKSPACE_INSIDE + text[len(root):]
        return text

    def step_paths(self, phase: str) -> StepPaths:
        if self.egress is None:
            return StepPaths(HOME_INSIDE, TMP_INSIDE, WORKSPACE_INSIDE)
        self.egress.log.step = phase  # the log names the step of each connection
        # HTTP(S)_PROXY for the egress proxy
        return StepPaths(HOME_INSIDE, TMP_INSIDE, WORKSPACE_INSIDE, env=self.egress.env)

    def sandbox(self, view: View, *, read: Sequence[Path] = (),
                write: Sequence[Path] = (), forwards: Sequence[Forward] = ()) -> Sandbox:
        """The step's :class:`Sandbox` (:class:`SandboxError` when it cannot be had): the
        trial's egress forwards, then ``forwards`` on the ports they leave free."""
        p = self.place
        own = self.egress.forwards if self.egress is not None else ()
        taken = {f.port for f in own}
        policy = SandboxPolicy(
            mode=self.isolation.requested,
            workspace=self._workspace,
            writable=tuple(dict.fromkeys((*view.writable, p.artifacts))),
            read=(*view.read, *p.read, *read),
            write=(*p.write, *write),
            hide=view.hide,
            network=p.network,
            forwards=(*own, *(f for f in forwards if f.port not in taken)),
            unix_sockets=p.unix_sockets,
            netlog=self.egress.log if self.egress is not None else None,
            protect=p.protect,
        )
        return Sandbox(policy, isolation=self.isolation)

    def own_program(self, words: Sequence[str], env: Mapping[str, str],
                    host_cwd: Path, view: View) -> tuple[Path, ...]:
        """What the step's own program needs visible (its install prefix, the files its
        command names, the links to the Python running pytest)."""
        home = os.path.expanduser("~")
        found = program_paths(
            words,
            path=env.get("PATH", os.defpath),
            cwd=host_cwd,
            protect=self.place.protect,
            deny=(*view.hide, *credential_paths(os.path.realpath(home))),
        )
        return (*found, *interpreter_links())

    def run(self, call: StepCall) -> ProcessResult:
        argv, env, view, output, append = (list(call.argv), call.env, call.view, call.output,
                                           call.append)
        host_cwd = self.host(call.cwd) if call.cwd is not None else self._workspace
        if not argv:
            return ProcessResult(None, False, 0.0, start_error="empty command")
        problem = _missing_program(argv[0], env, host_cwd)
        if problem is not None:
            _say(output, append, problem)
            return ProcessResult(None, False, 0.0, start_error=problem)
        # the host services the step must reach: Unix sockets (the model gateway's) at their
        # port, URLs at the same URL (a preset's model endpoint, its OpenTelemetry receiver)
        # when on the host's loopback and on a port still free; ``network: false`` or the
        # host's network: nothing forwarded
        endpoints = call.endpoints
        given = [e for e in endpoints if isinstance(e, Forward)] if self.forwards_sockets else []
        taken = {f.port for f in given}
        urls = [e for e in endpoints if isinstance(e, str) and url_port(e) not in taken]
        netlog = self.egress.log if self.egress is not None else None
        with loopback_forwards(urls if self.forwards_sockets else (), netlog) as forwards:
            try:
                own = self.own_program(call.program if call.program is not None else argv,
                                       env, host_cwd, view)
                box = self.sandbox(view,
                                   read=(*own, *safe_reads(call.read, self.place.protect)),
                                   write=call.write, forwards=(*given, *forwards))
            except (SandboxError, OSError) as exc:
                message = f"cannot isolate the {view.phase} step: {exc}"
                _say(output, append, message)
                return ProcessResult(None, False, 0.0, start_error=message,
                                     infra_error=("sandbox", message))
            return self._run_wrapped(argv, box, host_cwd, env=env, timeout=call.timeout,
                                     output=output, append=append,
                                     stdin_text=call.stdin_text, max_output=call.max_output)

    def _run_wrapped(self, argv: list[str], box: Sandbox, host_cwd: Path, *,
                     env: Mapping[str, str], timeout: float | None, output: Path,
                     append: bool, stdin_text: str | None,
                     max_output: int | None) -> ProcessResult:
        """Run ``argv`` in ``box``; a program it could not start is a ``sandbox`` error
        (read from bubblewrap's ``--json-status-fd``, and from the starter's exec-status
        pipe when the starter in front of it execs the program)."""
        status_r, status_w = os.pipe()
        exec_r, exec_w = os.pipe()
        try:
            for fd in (status_r, exec_r):
                fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)
            before = _size(output) if append else 0
            reader = _Status(status_r)
            with box.launch(argv, host_cwd, exec_status_fd=exec_w) as launch:
                wrapped = launch.argv
                # bwrap's own options end at "--chdir": the status descriptor goes before it
                at = wrapped.index("--chdir")
                wrapped[at:at] = ["--json-status-fd", str(status_w)]
                with environment_call():
                    result = run_step(wrapped, cwd=launch.cwd, env=env, timeout=timeout,
                                      output=output, append=append, stdin_text=stdin_text,
                                      max_output=max_output,
                                      pass_fds=(status_w, *launch.pass_fds),
                                      contained=reader.namespace_gone)
            os.close(status_w)
            os.close(exec_w)
            status_w = exec_w = -1
            status = reader.read()
            not_exec = _Status(exec_r).read().strip()
        finally:
            for fd in (status_r, exec_r, status_w, exec_w):
                if fd >= 0:
                    os.close(fd)
        if not_exec and not result.timed_out:
            message = f"the sandbox could not start {argv[0]}: {not_exec}"
            return dataclasses.replace(result, exit_code=None, start_error=message,
                                       infra_error=("sandbox", message))
        if result.start_error or result.timed_out or "exit-code" in status:
            return result
        said = _last_line(output, before)
        message = f"the sandbox could not start {argv[0]}" + (f": {said}" if said else "")
        return dataclasses.replace(result, exit_code=None, start_error=message,
                                   infra_error=("sandbox", message))

    def teardown(self) -> Path | None:
        """Stop the egress proxy (its connection counts go into :meth:`describe`)."""
        if self.egress is not None:
            egress, self.egress = self.egress, None
            egress.close()
            if self._egress_record is not None:
                self._egress_record.update(egress.log.summary())
        return self._workspace



def _missing_program(program: str, env: Mapping[str, str], cwd: Path) -> str | None:
    """Why ``program`` cannot be started ("command not found: X"), checked before the
    sandbox starts it (inside, bubblewrap would report it with its own exit status)."""
    if "/" in program:
        path = os.path.join(cwd, program)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return None
        return (f"command not found: {program}" if not os.path.exists(path)
                else f"permission denied: {program}")
    if shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        return f"command not found: {program}"
    return None


def _say(output: Path, append: bool, message: str) -> None:
    with contextlib.suppress(OSError):
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "ab" if append else "wb") as fh:
            fh.write(f"evalrun: {message}\n".encode())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class _Status:
    """What bubblewrap reports on its ``--json-status-fd`` (written by bwrap itself, never by
    the sandboxed program, which does not inherit the descriptor): ``child-pid``, the PID
    namespace's init (as seen outside), as soon as it is created; ``exit-code`` only once the
    program was executed."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = b""

    def read(self) -> str:
        while len(self.data) < _STATUS_LIMIT:
            try:
                chunk = os.read(self.fd, _STATUS_LIMIT - len(self.data))
            except BlockingIOError:
                break
            if not chunk:
                break
            self.data += chunk
        return self.data.decode("utf-8", "replace")

    def namespace_gone(self) -> bool:
        """Is the step's PID namespace gone (its init exited, which the kernel lets happen
        only once every process in it is dead)? Called when bwrap itself has exited: its init
        then gets SIGKILL (``--die-with-parent``). False when that is not known in time (the
        caller then scans for leftovers)."""
        found = _CHILD_PID.search(self.read())
        if found is None or not hasattr(os, "pidfd_open"):
            return False
        try:
            fd = os.pidfd_open(int(found.group(1)))
        except ProcessLookupError:
            return True  # exited and reaped already
        except OSError:
            return False
        try:
            # readable once it exited; a pid already reused by a live process is not, and
            # falls back to the scan after the wait
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(_NAMESPACE_WAIT_MS))
        finally:
            os.close(fd)


#: How long to wait for the PID namespace's end once bwrap exited (ms) before scanning.
_NAMESPACE_WAIT_MS = 2000
_CHILD_PID = re.compile(r'"child-pid"\s*:\s*(\d+)')


def _last_line(output: Path, start: int) -> str:
    """The last line bubblewrap wrote (the program never ran: nothing else wrote there)."""
    try:
        with open(output, "rb") as fh:
            fh.seek(max(start, _size(output) - 4096))
            text = fh.read(4096).decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


#: The built-in environments, by name.
LOCAL: Mapping[str, EnvironmentFactory] = {EnvironmentKind.BWRAP.value: LocalBwrap,
                                            EnvironmentKind.NONE.value: LocalNone}
