"""Containers for trials: podman (or Docker where its daemon answers) driven through its CLI.

One container per trial, nothing of the host mounted in it but read-only binds of what a
step needs from the host (a preset's CLI and its node, the ``python:`` step runner and
module): files go in and out with ``cp`` (or a tar stream over ``exec``), steps run with
``exec``. What this module guarantees:

- **Images from a Dockerfile are built once and cached by content**
  (:mod:`.containerimages`: :func:`~.containerimages.build_image`).
- **Isolation**: with podman the container runs with its own user namespace (container root
  is an unprivileged host uid: :data:`UID_BASE`; Docker relies on its daemon's userns-remap),
  ``no-new-privileges`` (and with Docker the capabilities podman does not grant dropped:
  :data:`DOCKER_ONLY_CAPS`), no network unless the spec
  asks for one (``network``: podman's ``slirp4netns``; trials never do: their way out is the
  egress proxy forwarded in, :mod:`.environments.containernet`), and the resource limits given
  (cpus, memory, pids).
- **Nothing outlives the trial, also when pytest is killed**: the container's first process
  waits on its stdin, a pipe only this process holds; when this process dies (even by
  ``kill -9``) the pipe closes, the first process exits and ``--rm`` removes the container.
  The same pipe carries the trial's first copy in (:data:`FIRST`). Containers started ahead
  of the trial that takes them (:func:`~.containerspares.take_container`) wait the same way and
  are ended when the session ends (:func:`~.containerspares.release_spares`).
  Each container is labelled with its owner's pid and start time;
  :func:`~.containerreap.reap_stale`, called when a session starts, removes any labelled
  container whose owner is gone (e.g. when the runtime itself was killed too).
- **Steps**: :meth:`Container.exec_argv` is the ``exec`` command line for
  :func:`~pytest_evalrun.trial.process.run_step` (timeout, output cap, process kill on the
  host side); values of the step's environment go to the runtime through its own environment
  (``--env NAME``), never on a command line. After each step every process of the container
  but the first is killed: from the host with its cgroup frozen
  (:meth:`Container.kill_leftovers`, which counts them), else from inside (:data:`KILL_ALL`,
  before the copy out).

The runtime's CLI (which one runs here, its calls): :mod:`.containerruntime`; the tar archives
files go in and out as: :mod:`.containertar`.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..filewrite import write_bytes_atomic
from ..sandboxkind import EnvironmentKind
from .containerexec import DirectExec
from .containerimages import BUILD_TAIL_LINES, lock_dir
from .containerreap import LABEL, OWNER_LABEL, SPOOL_PREFIX, owner_token
from .containerruntime import CALL_TIMEOUT, ContainerError, Runtime
from .containertar import extract, pack

__all__ = [
    "KILL_ALL",
    "UID_BASE",
    "Container",
    "ContainerSpec",
    "container_name",
    "seccomp_profile",
]

#: Container root is this host uid (and gid); uids 0..65535 inside map to UID_BASE + uid.
UID_BASE = 200_000
UID_RANGE = 65_536
#: Printed by the container's first process once it runs.
READY = "evalrun-container-ready"
#: The container's first process: reads a length from its stdin (a pipe only the pytest
#: process holds) and extracts that many bytes, a tar archive, at ``/`` (the trial's first
#: copy in, without an ``exec`` of its own; 0: nothing), says it is ready, then ignores every
#: line until its stdin closes. (``read`` takes a pipe byte by byte and ``head -c`` reads no
#: further than the length: what follows stays for the loop.)
FIRST = (
    'IFS= read -r n || exit 0; case "$n" in ""|*[!0-9]*) exit 1;; esac; '
    'if [ "$n" -gt 0 ]; then head -c "$n" | tar -x -f - -C / || exit 1; fi; '
    f"echo {READY}; while read -r _ignored; do :; done; exit 0"
)
#: Hidden from every process of the container: the first process's memory (it outlives every
#: step; an agent writing it could keep code running into verify).
MASKED = ("/proc/1/mem", "/proc/1/task/1/mem")
#: Removed from the runtime's default seccomp profile: what would let a step write another
#: process's memory (the first process's, above all).
DENIED_SYSCALLS = frozenset({"ptrace", "process_vm_writev", "process_vm_readv", "pidfd_getfd"})
DEFAULT_SECCOMP = Path("/usr/share/containers/seccomp.json")
#: How long starting a container may take (seconds).
START_TIMEOUT = 120.0
#: Shell commands that kill every process of the container but the first and the caller.
KILL_ALL = "kill -9 -1 2>/dev/null; true"
#: How long the container may take to end by itself once its first process's stdin closes
#: (seconds) before it is removed by force.
REMOVE_WAIT = 10.0


#: The capabilities Docker gives a container by default that podman does not: dropped, so a
#: trial's root has the same powers in both (with MKNOD an agent could make a device node).
DOCKER_ONLY_CAPS = ("MKNOD", "NET_RAW", "AUDIT_WRITE")


# -- containers --------------------------------------------------------------------------


_SECCOMP: dict[str, str] = {}


def seccomp_profile(default: Path = DEFAULT_SECCOMP) -> str | None:
    """podman's default seccomp profile without :data:`DENIED_SYSCALLS`, written once into the
    cache (by content); None when there is no default profile to start from."""
    try:
        data = json.loads(default.read_text())
        for rule in data["syscalls"]:
            rule["names"] = [n for n in rule["names"] if n not in DENIED_SYSCALLS]
        data["syscalls"] = [r for r in data["syscalls"] if r["names"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    text = json.dumps(data, sort_keys=True)
    if text in _SECCOMP:
        return _SECCOMP[text]
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = lock_dir().parent / "seccomp" / f"evalrun-{digest}.json"
    _SECCOMP[text] = str(path)
    if not path.is_file():
        write_bytes_atomic(path, text.encode(), mode=0o644)
    return str(path)



@dataclass(frozen=True)
class ContainerSpec:
    """How to start one trial's container."""

    image: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    cpus: float | None = None
    memory_mb: int | None = None
    pids: int | None = 4096
    #: Outbound network (podman: slirp4netns; Docker: its default bridge); else none at all.
    network: bool = False
    #: Map container root to an unprivileged host uid (podman only; Docker has no per-run
    #: user namespace: it relies on its daemon's userns-remap).
    userns: bool = True
    #: A seccomp profile (:func:`seccomp_profile`); None: the runtime's default.
    seccomp: str | None = None
    #: Host paths bound read-only inside, ``(host, inside)`` (a preset's CLI and node).
    mounts: tuple[tuple[str, str], ...] = ()
    #: podman writes the host pid of the container's first process here (its namespaces);
    #: None: a file in the container's private directory (:attr:`Container.pidfile`).
    pidfile: str | None = None


class Container:
    """One running container (see the module docstring). Use :meth:`start`; always
    :meth:`remove` (also a context manager)."""

    def __init__(self, runtime: Runtime, spec: ContainerSpec, client: subprocess.Popen[bytes],
                 name: str) -> None:
        self.runtime = runtime
        self.spec = spec
        self.client = client
        self.name = name
        self.removed = False
        #: ``runc exec`` straight into the container where it is the same as ``podman exec``
        #: (:mod:`.containerexec`); None: through the runtime's CLI.
        self.direct: DirectExec | None = None
        self.spool: Path | None = None
        #: Where podman writes the host pid of its first process (None: Docker).
        self.pidfile: Path | None = None
        #: The thread writing the first copy in (:meth:`send_first`) and what stopped it.
        self._sender: threading.Thread | None = None
        self._send_error: BaseException | None = None

    @classmethod
    def start(cls, runtime: Runtime, spec: ContainerSpec, send: Path | None = None) -> Container:
        """Start a container and wait until it runs, with the tar archive ``send`` (if given)
        extracted at ``/`` by its first process (:data:`FIRST`)."""
        return cls.launch(runtime, spec).wait_ready(send)

    @classmethod
    def launch(cls, runtime: Runtime, spec: ContainerSpec) -> Container:
        """Start the runtime's client for a container and return at once: then
        :meth:`send_first` (always, once) and :meth:`wait_ready`. The host's work for the
        trial goes on while the runtime starts the container."""
        args = [
            "run", "--rm", "-i", "--name", spec.name,
            "--label", f"{LABEL}=1", "--label", f"{OWNER_LABEL}={owner_token()}",
            "--security-opt", "no-new-privileges",
            "--network", ("slirp4netns" if runtime.name == EnvironmentKind.PODMAN else "bridge")
            if spec.network else "none",
            "--entrypoint", "/bin/sh",
        ]
        spool = Path(tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{owner_token().replace(':', '-')}-"))
        if runtime.name == EnvironmentKind.PODMAN:
            args += ["--cidfile", str(spool / "cid")]
        for key, value in spec.labels.items():
            args += ["--label", f"{key}={value}"]
        if spec.userns and runtime.name == EnvironmentKind.PODMAN:
            mapping = f"0:{UID_BASE}:{UID_RANGE}"
            args += ["--uidmap", mapping, "--gidmap", mapping]
        if spec.cpus is not None:
            args += ["--cpus", f"{spec.cpus:g}"]
        if spec.memory_mb is not None:
            args += ["--memory", f"{spec.memory_mb}m"]
        if spec.pids is not None:
            args += ["--pids-limit", str(spec.pids)]
        if spec.seccomp is not None:
            args += ["--security-opt", f"seccomp={spec.seccomp}"]
        if runtime.name == EnvironmentKind.PODMAN:
            args += ["--security-opt", "mask=" + ":".join(MASKED)]
        else:
            for cap in DOCKER_ONLY_CAPS:
                args += ["--cap-drop", cap]
        for host, inside in spec.mounts:
            args += ["--volume", f"{host}:{inside}:ro"]
        pidfile = spec.pidfile or str(spool / "pid")
        if runtime.name == EnvironmentKind.PODMAN:
            args += ["--pidfile", pidfile]
        args += [spec.image, "-c", FIRST]
        try:
            client = subprocess.Popen(
                runtime.argv(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, close_fds=True, start_new_session=True,
            )
        except OSError as exc:
            shutil.rmtree(spool, ignore_errors=True)
            raise ContainerError(f"cannot run {runtime.program}: {exc.strerror or exc}") from exc
        container = cls(runtime, spec, client, spec.name)
        container.spool = spool
        container.pidfile = Path(pidfile) if runtime.name == EnvironmentKind.PODMAN else None
        return container

    def send_first(self, archive: Path | None) -> None:
        """Give the first process the trial's first copy in (a tar archive to extract at
        ``/``; None: nothing), written by a thread of its own (the pipe holds 64 KiB; the
        client reads it once the container runs)."""
        def write() -> None:
            stdin = self.client.stdin
            assert stdin is not None
            try:  # on the pipe itself (nothing buffered: remove() may close it meanwhile)
                fd = stdin.fileno()
                size = os.path.getsize(archive) if archive is not None else 0
                _write_all(fd, f"{size}\n".encode())
                if archive is not None:
                    with open(archive, "rb") as handle:
                        for chunk in iter(lambda: handle.read(1 << 16), b""):
                            _write_all(fd, chunk)
            except (OSError, ValueError) as exc:  # the client is gone: wait_ready says why
                self._send_error = exc

        self._sender = threading.Thread(target=write, daemon=True)
        self._sender.start()

    def wait_ready(self, send: Path | None = None) -> Container:
        """Wait until the container runs (its first copy in extracted: ``send``, when
        :meth:`send_first` was not called); :class:`ContainerError` (the container removed)
        when it does not."""
        if self._sender is None:
            self.send_first(send)
        client, spec, spool = self.client, self.spec, self.spool
        assert client.stdout is not None and spool is not None
        line = _readline(client, START_TIMEOUT)
        if self._sender is not None:
            self._sender.join(timeout=START_TIMEOUT)
        if line.strip() != READY.encode():
            err = b""
            with contextlib.suppress(Exception):
                client.kill()
                _, err = client.communicate(timeout=10)
            self.remove()
            text = (line + err).decode(errors="replace").strip()
            if self._send_error is not None:
                text += f"\n(the first copy in: {self._send_error})"
            tail = "\n".join(text.splitlines()[-BUILD_TAIL_LINES:])
            raise ContainerError(f"the container of image {spec.image} did not start: {tail}")
        with contextlib.suppress(OSError):
            self.direct = DirectExec.find((spool / "cid").read_text().strip(), spool)
        return self

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def exec_argv(
        self, argv: Sequence[str], *, env_names: Iterable[str] = (), workdir: str | None = None,
        user: str | None = None, interactive: bool = False, env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """The command line that runs ``argv`` in the container; the variables named in
        ``env_names`` take their values from ``env`` (given) or else the runtime's own
        environment (give them to run_step's ``env`` too)."""
        if self.direct is not None and user is None:
            values = {name: (env or {}).get(name, os.environ.get(name, "")) for name in env_names}
            return self.direct.argv(argv, env=values, workdir=workdir)
        args = ["exec"]
        if interactive:
            args.append("-i")
        for name in env_names:
            args += ["--env", name]
        if workdir is not None:
            args += ["--workdir", workdir]
        if user is not None:
            args += ["--user", user]
        return self.runtime.argv(*args, self.name, *argv)

    def run(self, argv: Sequence[str], *, timeout: float = CALL_TIMEOUT,
            input_bytes: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run a short helper command in the container (not a step)."""
        command = self.exec_argv(argv, interactive=input_bytes is not None)
        try:
            return subprocess.run(command, input=input_bytes, capture_output=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"{self.runtime.name} exec timed out after {timeout:g}s") \
                from exc
        except OSError as exc:
            raise ContainerError(f"cannot run {command[0]}: {exc.strerror or exc}") from exc

    def kill_leftovers(self) -> int | None:
        """Kill every process of the container but its first from the host, where that can
        be done (:meth:`.containerexec.DirectExec.kill_others`): how many were killed; None:
        it could not be done here (kill from inside, :data:`KILL_ALL`, uncounted)."""
        return None if self.direct is None else self.direct.kill_others()

    def receive(self, archive: Path, length: int, target: Path) -> list[str]:
        """Extract the first ``length`` bytes of the file ``archive`` (a tar archive the
        container wrote) into ``target``, as :meth:`get` does; the names left out."""
        os.truncate(archive, length)
        target.mkdir(parents=True, exist_ok=True)
        with open(archive, "rb") as handle:
            return extract(handle, target)

    def exchange(self, script: str, args: Sequence[str] = (), *, send: Path | None = None,
                 receive: Path | None = None, what: str = "copying files") -> list[str]:
        """One ``exec`` of ``/bin/sh -c script sh args...``: the tar archive ``send`` (a file)
        on its stdin, and its stdout, a tar archive, extracted into ``receive`` (see
        :func:`extract`; the names left out are returned). :class:`ContainerError` when it
        fails."""
        argv = self.exec_argv(["/bin/sh", "-c", script, "sh", *args], interactive=send is not None)
        with contextlib.ExitStack() as stack:
            stdin = stack.enter_context(open(send, "rb")) if send is not None \
                else subprocess.DEVNULL
            out = stack.enter_context(tempfile.TemporaryFile()) if receive is not None \
                else subprocess.DEVNULL
            try:
                done = subprocess.run(argv, stdin=stdin, stdout=out, stderr=subprocess.PIPE,
                                      timeout=CALL_TIMEOUT, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ContainerError(f"{what} failed: {exc}") from exc
            if done.returncode != 0:
                raise ContainerError(f"{what} failed: "
                                     f"{done.stderr.decode(errors='replace').strip()[-500:]}")
            if receive is None or isinstance(out, int):
                return []
            out.seek(0)
            receive.mkdir(parents=True, exist_ok=True)
            return extract(out, receive)

    def put(self, source: Path, target: str) -> None:
        """Copy ``source`` (a directory's content, or one file) to ``target`` inside, owned by
        the container's root (directories created as needed): one tar stream over ``exec``."""
        with tempfile.NamedTemporaryFile(suffix=".tar") as archive:
            where = pack(source, target, archive.name)
            self.exchange('mkdir -p "$1" && exec tar -x -f - -C "$1"', [where],
                          send=Path(archive.name), what=f"copying {source} into the container")

    def get(self, source: str, target: Path, *, before: str = "") -> list[str]:
        """Copy the directory ``source`` from inside into ``target`` (created, its files
        overwritten), as regular files, directories and symbolic links only (anything else is
        left out and named in the list returned). ``before``: shell commands run first in the
        same call (e.g. :data:`KILL_ALL`)."""
        return self.exchange(f'{before}\ncd "$1" && exec tar -c -f - .', [source],
                             receive=target, what=f"copying {source} out of the container")

    def fetch(self, sources: Sequence[str], target: Path, *, before: str = "") -> list[str]:
        """Copy several absolute paths from inside, at once, into ``target`` (each at its
        path below it: ``/logs/x`` -> ``target/logs/x``); missing ones are left out."""
        rel = " ".join(f'"{p.lstrip("/")}"' for p in sources)
        script = (f"{before}\ncd / && set -- && for p in {rel}; do "
                  '[ -e "$p" ] && set -- "$@" "$p"; done; '
                  '[ $# -eq 0 ] && exec tar -c -f - -T /dev/null; exec tar -c -f - "$@"')
        if not sources:
            return []
        return self.exchange(script, receive=target, what="copying files out of the container")

    def end_first_process(self) -> None:
        """Close the first process's stdin: it exits, and its PID namespace with it."""
        with contextlib.suppress(OSError, ValueError):
            if self.client.stdin is not None:
                self.client.stdin.close()

    def remove(self) -> None:
        """End the container and wait until it is gone (idempotent)."""
        if self.removed:
            return
        self.removed = True
        self.end_first_process()
        # the first process ends when its stdin closes: the PID namespace goes with it (every
        # process in it is killed) and ``--rm`` removes the container; ``rm -f`` only when
        # that does not happen at once
        if self.direct is not None and self.direct.init_pid > 0 \
                and _gone(self.direct.init_pid, REMOVE_WAIT):
            # the first process is gone, and the kernel ended every process of its PID
            # namespace before that: nothing of the trial runs; the client's removal of the
            # container's remains finishes in the background (waited for at exit)
            _PENDING.append(self)
            _reap_pending(block=False)
            return
        self._finish_removal()

    def discard(self) -> None:
        """End a container nothing ran in, without waiting: its first process exits as its
        stdin closes and the runtime's client removes it (waited for when the session
        ends, as in :meth:`remove`)."""
        if self.removed:
            return
        self.removed = True
        self.end_first_process()
        _PENDING.append(self)
        _reap_pending(block=False)

    def _finish_removal(self) -> None:
        try:
            self.client.wait(timeout=REMOVE_WAIT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ContainerError):
                self.runtime.force_remove(self.name)
            try:
                self.client.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.client.kill()
                self.client.wait()
        if self.client.returncode != 0:
            # the client did not end the container cleanly: make sure it is gone
            with contextlib.suppress(ContainerError):
                self.runtime.force_remove(self.name)
        if self.spool is not None:
            shutil.rmtree(self.spool, ignore_errors=True)
        for stream in (self.client.stdout, self.client.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def container_name() -> str:
    """A new container name: ``evalrun-<pid>-<random>``."""
    return f"evalrun-{os.getpid()}-{os.urandom(6).hex()}"


#: Containers whose processes are all gone and whose client is still removing the rest.
_PENDING: list[Container] = []


def _gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` (not our child) has exited; False when it still runs after
    ``timeout`` or cannot be watched."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError) as exc:
        return isinstance(exc, ProcessLookupError)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(int(timeout * 1000)))
    finally:
        os.close(fd)


def _reap_pending(block: bool) -> None:
    """Finish the removals left to the background whose client is done (all: ``block``)."""
    for container in list(_PENDING):
        if block or container.client.poll() is not None:
            _PENDING.remove(container)
            container._finish_removal()


atexit.register(_reap_pending, True)
def _readline(client: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The first line the container prints (b"" when it exits or ``timeout`` passes)."""
    assert client.stdout is not None
    fd = client.stdout.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
        elif client.poll() is not None:
            break
    return data


