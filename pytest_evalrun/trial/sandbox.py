"""How a step is isolated: bubblewrap (``bwrap``) where it works, nothing where it cannot.

Modes (``sandbox: auto|bwrap|none``, ``--eval-sandbox``):

* ``auto`` (the default): bubblewrap when :func:`~.bwrapprobe.probe` finds a ``bwrap`` that
  really runs, else unsandboxed (the caller prints one warning with :attr:`Isolation.reason`).
* ``bwrap``: bubblewrap or :class:`SandboxError` (the trial errors; it never silently runs
  unsandboxed).
* ``none``: no sandbox.

Where ``bwrap`` comes from and how it is found to work: :mod:`.bwrapprobe`.

What a step sees inside (:meth:`Sandbox.launch`), an allowlist on an empty read-only root::

    --ro-bind <d> <d> / --symlink      the system: SYSTEM_DIRS (/usr, /etc, /opt, /lib...)
    --dev /dev --proc /proc            a minimal /dev, the sandbox's own /proc
    --tmpfs /tmp                       a private, empty /tmp ...
    --dir /tmp/home                    ... holding the private, empty HOME (HOME=/tmp/home)
    --bind <workspace> /tmp/workspace  the workspace, writable, at a neutral path
    --bind <path> <path>               artifacts (and verifier) dir, sandbox.write paths
    --ro-bind <path> <path>            read paths: the phase's (trial/phases.py), the step's own
                                       program, the Python running pytest, this package
    --tmpfs <dir> / --ro-bind <empty> <file>
                                       hidden inside what is visible: results/ and jobs/ roots,
                                       credential stores, /etc/shadow, .env files
    --remount-ro / (and each skeleton tmpfs under /tmp)
    --unshare-pid --die-with-parent --new-session --cap-drop ALL [--unshare-net]
    --seccomp FD                       no socket(AF_UNIX) (:mod:`~.seccomp`)
    STARTER ... --                     only with forwards: listens on their ports and hands
                                       the listening sockets out (:mod:`~.cstarter`, compiled
                                       once per machine, else ``python -I -S -c``
                                       :mod:`~.starter`)

Mounts are ordered by path depth, so the most specific rule wins: a results root is hidden
but the trial's own directory inside it is bound again.  For one path, a bind wins over
hiding.  ``--cap-drop ALL`` applies to every step: as uid 0 bubblewrap would otherwise leave
the step every capability (it could remount ``/`` read-write).

The workspace is at ``/tmp/workspace`` inside: a tool that walks up from it (pytest's ini files
and ``conftest.py``, ``pyproject.toml``, ``.git``, ``Cargo.toml``...) finds only the private,
empty ``/tmp`` and ``/``, never the suite the real workspace lives in.  Placeholders and
``EVALRUN_*`` values must use the inside paths: :meth:`Sandbox.inside`.

Each step runs in its own PID namespace: when the step's command exits, bwrap (PID 1 of the
namespace) exits and the kernel kills everything left in it, including daemons that
``setsid()``; ``--die-with-parent`` does the same when pytest itself dies.  ``--new-session``
keeps a step off the terminal (no ``TIOCSTI`` injection).

Unsandboxed (``none``, or ``auto`` without bubblewrap: macOS, a kernel without user
namespaces): the step runs directly, in its real workspace, with ``HOME`` and ``TMPDIR`` set to
private directories of the step (given by the caller), and the clean environment of
:mod:`pytest_evalrun.trial.stepenv`; nothing of the host is hidden or read-only.

What a step sees of the host (the inside paths, the system's directories, what is hidden, the
mounts): :mod:`.sandboxview`; this module builds bwrap's command line from it.

Cost: bwrap adds a fork/exec, namespace setup and a few mounts: on the 2-core development
machine ``true`` takes ~1.1 ms directly and ~7-9 ms inside this sandbox (see
``bench/bench_sandbox.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..sandboxkind import SANDBOX_MODES, SandboxKind
from . import cstarter
from . import starter as _starter_module
from .bwrapprobe import probe
from .forwards import Listeners
from .network import Forward, NetLog
from .realpath import realpath
from .sandboxview import (
    DIR,
    HIDE,
    HIDE_FILE,
    HOME_INSIDE,
    LINK,
    RO,
    RW,
    SYSTEM_DIRS,
    SYSTEM_SECRETS,
    TMP_INSIDE,
    WORKSPACE_INSIDE,
    Mount,
    credential_paths,
    depth,
    empty_file,
    own_mount,
    python_paths,
    under,
)
from .seccomp import seccomp_fd

__all__ = [
    "MODES",
    "Isolation",
    "Sandbox",
    "SandboxError",
    "SandboxPolicy",
    "resolve",
]

MODES = SANDBOX_MODES


class SandboxError(Exception):
    """``sandbox: bwrap`` where bubblewrap cannot run, or a policy that cannot be honoured."""


# --------------------------------------------------------------------------- isolation


@dataclass(frozen=True)
class Isolation:
    """The isolation a step really gets: for meta.json / run.json (:meth:`to_dict`).

    ``warning`` is set when ``auto`` fell back to no sandbox: print it once per session."""

    sandbox: str  # "bwrap" or "none"
    requested: str  # "auto", "bwrap" or "none"
    bwrap: str | None = None
    version: str | None = None
    reason: str | None = None
    network_isolation: bool = False

    @property
    def warning(self) -> str | None:
        if self.requested == SandboxKind.AUTO and self.sandbox == SandboxKind.NONE:
            return f"pytest-evalrun: trials run unsandboxed: {self.reason}"
        return None

    def to_dict(self) -> dict[str, object]:
        return {
            "sandbox": self.sandbox,
            "requested": self.requested,
            "bwrap": self.bwrap,
            "bwrap_version": self.version,
            "reason": self.reason,
        }


def resolve(mode: str) -> Isolation:
    """The isolation mode ``mode`` gives here; :class:`SandboxError` for ``bwrap`` where
    bubblewrap cannot run (its message says why)."""
    if mode not in MODES:
        raise SandboxError(f"sandbox must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == SandboxKind.NONE:
        return Isolation(SandboxKind.NONE.value, mode, reason="sandbox: none")
    found = probe()
    if found.path is None:
        if mode == SandboxKind.BWRAP:
            raise SandboxError(f"sandbox: bwrap was asked for, but {found.reason}")
        return Isolation(SandboxKind.NONE.value, mode, reason=found.reason)
    return Isolation(SandboxKind.BWRAP.value, mode, found.path, found.version, None,
                     found.network_isolation)


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class SandboxPolicy:
    """What one step may see and touch.

    ``workspace``: the real workspace, writable, shown at :data:`WORKSPACE_INSIDE`.
    ``writable``: directories writable at their own path (artifacts dir, verifier dir).
    ``read``: paths that must stay visible read-only even where a private or hidden area
    covers them (the trial's own directory inside a hidden results root, an experiment
    directory or a venv under ``/tmp``; ``sandbox: read:``).  Paths already visible cost
    nothing.  ``write``: ``sandbox: write:`` paths (a shared package cache), writable.
    ``hide``: directories the step must not see (the results/ and jobs/ roots).
    ``hide_credentials``: hide :data:`~.sandboxview.CREDENTIAL_STORES` of ``user_home``
    (default: the evaluator's home) and ``$XDG_RUNTIME_DIR``.
    """

    mode: str = "auto"
    workspace: Path | None = None
    writable: tuple[Path, ...] = ()
    read: tuple[Path, ...] = ()
    write: tuple[Path, ...] = ()
    hide: tuple[Path, ...] = ()
    network: bool = True
    hide_credentials: bool = True
    user_home: Path | None = None
    #: Inside the sandbox's own network, TCP ``127.0.0.1:port`` reaches a host Unix socket's
    #: server (:class:`~.network.Forward`, :mod:`~.forwards`): the egress proxy, an allowed
    #: loopback port, the model gateway.  Honoured whatever ``network`` says (``network:
    #: false`` gives none).
    forwards: tuple[Forward, ...] = ()
    #: May the step create ``AF_UNIX`` sockets (``sandbox: {unix_sockets: true}``)?  By
    #: default it may not: a host socket file it can see would answer (:mod:`~.seccomp`).
    unix_sockets: bool = False
    #: The trial's connection log (network.log), for forwards added to this step later
    #: (:func:`~.egress.loopback_forwards`); None: not logged.
    netlog: NetLog | None = field(default=None, compare=False)
    #: Directories a program's install prefix must never expose whole when the step's own
    #: program is made visible (:func:`~.phases.program_paths`): the experiment directory,
    #: pytest's rootdir.
    protect: tuple[Path, ...] = ()


def _trusted_dir(path: Path | str, what: str) -> str:
    """A writable bind's source: an existing directory that is not itself a symlink (an agent
    may have replaced its artifacts directory with a link to a directory outside)."""
    text = os.path.abspath(path)
    if os.path.islink(text):
        raise SandboxError(f"{what} {text} is a symbolic link; it is not bound into the sandbox")
    if not os.path.isdir(text):
        raise SandboxError(f"{what} {text} is not a directory")
    return realpath(text)


# --------------------------------------------------------------------------- the sandbox


class Sandbox:
    """One step's isolation: the paths it sees (:meth:`inside`) and its argv (:meth:`launch`).

    ``private``: a directory of the step's own (created if missing); unsandboxed, ``HOME``
    and ``TMPDIR`` are made in it (sandboxed, they are in the sandbox's private ``/tmp`` and
    ``private`` is not used).  ``isolation``: from :func:`resolve` (default: resolve
    ``policy.mode``).
    """

    def __init__(
        self,
        policy: SandboxPolicy,
        *,
        private: Path | None = None,
        isolation: Isolation | None = None,
    ) -> None:
        self.policy = policy
        self.isolation = isolation if isolation is not None else resolve(policy.mode)
        self.sandboxed = self.isolation.sandbox == SandboxKind.BWRAP
        self._workspace = realpath(policy.workspace) if policy.workspace is not None else None
        if self.sandboxed:
            if not policy.network and not self.isolation.network_isolation:
                raise SandboxError("network: false, but bwrap --unshare-net does not work here")
            if not self.isolation.network_isolation:  # the host's network reaches them as is
                self.policy = policy = dataclasses.replace(policy, forwards=())
            ports = [f.port for f in policy.forwards]
            for f in policy.forwards:
                if ports.count(f.port) > 1 or not 0 < f.port < 65536:
                    raise SandboxError(f"forward {f.name or f.socket}: port {f.port} taken or bad")
                if not os.path.exists(f.socket):
                    raise SandboxError(f"forward {f.name or f.port}: no socket at {f.socket}")
            self.home, self.tmp = HOME_INSIDE, TMP_INSIDE
            self._prefix = self._bwrap_prefix()
        else:
            if private is None:
                raise SandboxError("an unsandboxed step needs a private directory")
            home, tmp = Path(private) / "home", Path(private) / "tmp"
            home.mkdir(parents=True, exist_ok=True)
            tmp.mkdir(parents=True, exist_ok=True)
            self.home, self.tmp = str(home), str(tmp)
            self._prefix = []

    # -- paths -------------------------------------------------------------------------
    @property
    def workspace(self) -> str | None:
        """The workspace as the step sees it."""
        if self._workspace is None:
            return None
        return WORKSPACE_INSIDE if self.sandboxed else self._workspace

    def inside(self, path: Path | str) -> str:
        """``path`` (outside) as the step sees it: the workspace and anything under it moves
        to :data:`WORKSPACE_INSIDE`; every other path is unchanged."""
        text = os.path.abspath(path)
        if not self.sandboxed or self._workspace is None:
            return text
        for root in dict.fromkeys((os.path.abspath(self.policy.workspace or ""), self._workspace)):
            if under(text, root):
                return WORKSPACE_INSIDE + text[len(root) :]
        return text

    # -- argv ------------------------------------------------------------------------
    @contextlib.contextmanager
    def launch(
        self, argv: Sequence[str], cwd: Path | str, *, exec_status_fd: int | None = None
    ) -> Iterator[Launch]:
        """How to start the step (:class:`Launch`: argv, cwd outside for ``Popen``, the
        descriptors to pass); its forwards are served until the ``with`` block ends (after
        the step ended).

        Inside, the step starts in :meth:`inside` of ``cwd``.  ``exec_status_fd``: a pipe on
        which the starter in front of the command writes why it could not exec the command
        (nothing: it was exec'd). It is in :attr:`Launch.pass_fds` only when a starter runs
        (which closes it on exec): the command itself never holds it, or it could write a
        false start failure there."""
        if not self.sandboxed:
            yield Launch(list(argv), Path(cwd), ())
            return
        p = self.policy
        options = ["--chdir", self.inside(cwd)]
        fds: list[int] = []
        listeners: Listeners | None = None
        starter: list[str] = []
        try:
            if self.isolation.network_isolation and not p.unix_sockets:
                fd = seccomp_fd()  # no socket(AF_UNIX) for the step (nor the starter)
                if fd is not None:
                    fds.append(fd)
                    options[:0] = ["--seccomp", str(fd)]
            if self.isolation.network_isolation and p.forwards:
                listeners = Listeners(p.forwards)
                compiled = cstarter.binary()  # else the Python one (the same arguments)
                starter = [compiled] if compiled else [sys.executable, "-I", "-S", "-c",
                                                       _starter_source()]  # fmt: skip
                if exec_status_fd is not None:
                    starter.append(f"--exec-status-fd={exec_status_fd}")
                    fds.append(exec_status_fd)
                starter.append(f"--listeners-fd={listeners.child_fd}")
                starter += [str(f.port) for f in p.forwards]
                starter.append("--")
                listeners.start()
            launch = Launch(
                [*self._prefix, *options, "--", *starter, *argv],
                Path(cwd),
                (*fds, *([listeners.child_fd] if listeners is not None else ())),
                listeners,
            )
            yield launch
        finally:
            if listeners is not None:
                listeners.close()
            for fd in fds:
                if fd != exec_status_fd:  # the caller's
                    os.close(fd)

    @property
    def network(self) -> str:
        """The step's network, for meta.json: ``own`` (a namespace of its own, reached from
        outside only through its forwards), ``none`` (its own, no forward) or ``host``
        (unsandboxed, or bubblewrap without ``--unshare-net``: the host's)."""
        if not self.sandboxed or not self.isolation.network_isolation:
            return "host"
        return "own" if self.policy.forwards else "none"

    def _bwrap_prefix(self) -> list[str]:
        """bwrap's options: an allowlist.  The root is an empty read-only tmpfs holding the
        :data:`SYSTEM_DIRS`, a private ``/tmp`` with the workspace and ``HOME``, and the
        policy's own paths; inside what is visible, hidden paths are covered."""
        p = self.policy
        assert self.isolation.bwrap is not None
        mounts: list[Mount] = [
            Mount(1, HIDE, TMP_INSIDE),
            Mount(depth(HOME_INSIDE), DIR, HOME_INSIDE),
        ]
        system: list[str] = []
        for d in SYSTEM_DIRS:
            if os.path.islink(d):
                mounts.append(Mount(1, LINK, d, os.readlink(d)))
            elif os.path.isdir(d):
                mounts.append(Mount(1, RO, d, d))
                system.append(d)
        reserved = (HOME_INSIDE, WORKSPACE_INSIDE)
        hidden: list[str] = [realpath(h) for h in p.hide if os.path.lexists(h)]
        if p.hide_credentials:
            home = str(p.user_home) if p.user_home is not None else os.path.expanduser("~")
            hidden += credential_paths(realpath(home), os.environ.get("XDG_RUNTIME_DIR"))
        hidden += [f for f in SYSTEM_SECRETS if os.access(f, os.R_OK)]  # as uid 0, say
        hidden = list(dict.fromkeys(hidden))
        visible = list(system)
        read: list[Path | str] = [*p.read, *python_paths()]
        if p.network:
            read.append("/etc/resolv.conf")  # a link into /run on systemd-resolved hosts
        reals = [
            r
            for r in dict.fromkeys(realpath(x) for x in read)
            if os.path.exists(r) and not own_mount(r)
        ]
        for r in reals:
            covered = [*system, *(x for x in reals if x != r)]
            if any(under(r, v) for v in covered) and not any(under(r, h) for h in hidden):
                continue  # already visible (the system, or a read path holding it)
            if any(under(x, r) for x in reserved) or r == "/":
                raise SandboxError(f"sandbox read path {r} would cover {HOME_INSIDE}")
            mounts.append(Mount(depth(r), RO, r, r))
            visible.append(r)
        # a program found through a link (``~/.local/bin/claude``): the link's path too
        for a in dict.fromkeys(os.path.abspath(x) for x in read):
            if not os.path.islink(a) or not os.path.exists(a) or own_mount(a):
                continue
            parent = realpath(os.path.dirname(a))
            if any(under(parent, v) for v in visible) or any(under(x, a) for x in reserved):
                continue
            mounts.append(Mount(depth(a), LINK, a, realpath(a)))  # kept a link (node
            visible.append(a)  # resolves its modules from the real path)
        for what, paths in (("writable directory", p.writable), ("sandbox write path", p.write)):
            for w in paths:
                src = _trusted_dir(w, what)
                if any(under(x, src) for x in reserved) or src == "/":
                    raise SandboxError(f"{what} {src} would cover {HOME_INSIDE}")
                mounts.append(Mount(depth(src), RW, src, src))
                visible.append(src)
        for h in hidden:
            if h in ("/", TMP_INSIDE) or own_mount(h):
                continue
            if not any(under(h, v) for v in visible):
                continue  # not visible anyway
            kind = HIDE if os.path.isdir(h) else HIDE_FILE
            mounts.append(Mount(depth(h), kind, h, h))
        if self._workspace is not None:
            src = _trusted_dir(self.policy.workspace or "", "workspace")
            mounts.append(Mount(depth(WORKSPACE_INSIDE), RW, WORKSPACE_INSIDE, src))
        # The directories bwrap creates to reach a bind are read-only: in the root, and under
        # /tmp in a read-only tmpfs per first component (e.g. /tmp/pytest-of-root)
        skeletons = sorted(
            {
                "/".join(m.dest.split("/")[:3])
                for m in mounts
                if m.kind in (RO, RW) and depth(m.dest) > 2 and under(m.dest, TMP_INSIDE)
            }
            - {m.dest for m in mounts}
            - set(reserved)
        )
        mounts += [Mount(2, HIDE, d) for d in skeletons]
        argv = [self.isolation.bwrap, "--dev", "/dev", "--proc", "/proc"]
        empty = empty_file()
        for m in sorted(set(mounts)):
            argv += m.args(empty)
        # no capability, also as uid 0 (no remount, no unmount, no raw network, no ptrace)
        for d in ("/", *skeletons):
            argv += ["--remount-ro", d]
        argv += ["--unshare-pid", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        if self.isolation.network_isolation:
            argv.append("--unshare-net")  # its own network: only ``lo`` and the forwards
        return argv


@functools.lru_cache(maxsize=1)
def _starter_source() -> str:
    """:mod:`~.starter`'s source, run inside as ``python -I -S -c SOURCE`` (compiling it
    costs less than finding and reading a bytecode cache in the sandbox)."""
    return Path(_starter_module.__file__ or "").read_text(encoding="utf-8")


@dataclass
class Launch:
    """A sandboxed step's start (:meth:`Sandbox.launch`)."""

    argv: list[str]
    #: The working directory outside (for ``Popen``).
    cwd: Path
    #: Descriptors the process must inherit (``Popen(pass_fds=...)``).
    pass_fds: tuple[int, ...]
    listeners: Listeners | None = None


