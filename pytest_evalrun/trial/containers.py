"""Containers for trials: podman (or Docker where its daemon answers) driven through its CLI.

One container per trial, nothing of the host mounted in it: files go in and out with ``cp``
(or a tar stream over ``exec``), steps run with ``exec``. What this module guarantees:

- **Images from a Dockerfile are built once and cached by content**: the tag is
  ``localhost/evalrun-build:<digest>``, the digest of the Dockerfile and of every file of the
  build context (names, modes, contents, link targets). An image with that tag is reused
  without building, in this session and in every later one; concurrent builders (xdist
  workers) take a file lock per digest, so one builds and the others reuse. A failed build is
  a :class:`BuildError` naming what was built and ending with the build's last lines; it is
  remembered for the process, so the other trials of the task fail at once.
- **Isolation**: the container runs with its own user namespace (container root is an
  unprivileged host uid: :data:`UID_BASE`), ``no-new-privileges``, no network unless the spec
  asks for one (``network``: podman's ``slirp4netns``; trials never do: their way out is the
  egress proxy forwarded in, :mod:`.environments.containernet`), and the resource limits given
  (cpus, memory, pids).
- **Nothing outlives the trial, also when pytest is killed**: the container's first process
  waits on its stdin, a pipe only this process holds; when this process dies (even by
  ``kill -9``) the pipe closes, the first process exits and ``--rm`` removes the container.
  The same pipe carries the trial's first copy in (:data:`FIRST`). Containers started ahead
  of the trial that takes them (:meth:`Container.take`) wait the same way and are ended when
  the session ends (:func:`release_spares`).
  Each container is labelled with its owner's pid and start time; :func:`reap_stale`, called
  when a session starts, removes any labelled container whose owner is gone (e.g. when the
  runtime itself was killed too).
- **Steps**: :meth:`Container.exec_argv` is the ``exec`` command line for
  :func:`~pytest_evalrun.trial.process.run_step` (timeout, output cap, process kill on the
  host side); values of the step's environment go to the runtime through its own environment
  (``--env NAME``), never on a command line. :meth:`Container.kill_all` ends every process in
  the container but the first (after the agent, before verify).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import select
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import tarfile

from ..sandboxkind import CONTAINER_RUNTIMES
from .containerexec import DirectExec

__all__ = [
    "BUILD_TAG_PREFIX",
    "LABEL",
    "TASK_LABEL",
    "TRIAL_LABEL",
    "UID_BASE",
    "BuildError",
    "Container",
    "ContainerError",
    "ContainerSpec",
    "Runtime",
    "build_image",
    "container_name",
    "context_digest",
    "detect_runtime",
    "merge_into",
    "reap_stale",
    "release_spares",
]

#: Every container we start carries this label (value ``1``) and ``evalrun.owner`` =
#: ``<pid>:<start time>`` of the process that started it.
LABEL = "io.evalrun"
OWNER_LABEL = "io.evalrun.owner"
BUILD_TAG_PREFIX = "localhost/evalrun-build"
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
#: How long one runtime call that is not a step may take (cp, rm, kill).
CALL_TIMEOUT = 120.0
BUILD_TAIL_LINES = 25
#: Shell commands that kill every process of the container but the first and the caller.
KILL_ALL = "kill -9 -1 2>/dev/null; true"
MAX_CONTEXT_FILES = 100_000
#: A container's private host directory (its id, the process descriptions of its steps):
#: ``<tmp>/evalrun-ctr-<pid>-<start time>-<random>``, removed with the container, or by
#: :func:`reap_stale` once its owner is gone.
SPOOL_PREFIX = "evalrun-ctr-"
#: How long the container may take to end by itself once its first process's stdin closes
#: (seconds) before it is removed by force.
REMOVE_WAIT = 10.0


#: The capabilities Docker gives a container by default that podman does not: dropped, so a
#: trial's root has the same powers in both (with MKNOD an agent could make a device node).
DOCKER_ONLY_CAPS = ("MKNOD", "NET_RAW", "AUDIT_WRITE")


class ContainerError(Exception):
    """The container runtime failed (missing, not answering, a call that failed)."""


class BuildError(ContainerError):
    """Building an image failed; the message names what and ends with the build's tail."""


@dataclass(frozen=True)
class Runtime:
    """A container runtime's CLI: ``name`` is ``podman`` or ``docker``."""

    name: str
    program: str

    def argv(self, *args: str) -> list[str]:
        return [self.program, *args]

    def call(
        self, *args: str, timeout: float = CALL_TIMEOUT, input_bytes: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the CLI to completion; :class:`ContainerError` when it cannot be run or times
        out (its exit status is the caller's to judge)."""
        try:
            return subprocess.run(
                self.argv(*args), input=input_bytes, capture_output=True, timeout=timeout,
                env=dict(env) if env is not None else None, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"{self.name} {args[0]} timed out after {timeout:g}s") from exc
        except OSError as exc:
            raise ContainerError(f"cannot run {self.program}: {exc.strerror or exc}") from exc

    def force_remove(self, *names: str, timeout: float = CALL_TIMEOUT) -> None:
        """Remove containers at once, running or not (:class:`ContainerError` when the CLI
        cannot be run); Docker's ``rm`` has no stop timeout to give."""
        wait = ("-t", "0") if self.name == "podman" else ()
        self.call("rm", "-f", *wait, *names, timeout=timeout)

    def label_template(self, label: str) -> str:
        """A ``--format`` template printing a container's label ``label`` (podman's
        ``.Labels`` is a map; Docker's is a string and has ``.Label "name"`` instead)."""
        if self.name == "podman":
            return f'{{{{index .Labels "{label}"}}}}'
        return f'{{{{.Label "{label}"}}}}'

    def image_exists(self, image: str) -> bool:
        if self.name == "podman":
            return self.call("image", "exists", image).returncode == 0
        return self.call("image", "inspect", image).returncode == 0


def _answers(runtime: Runtime) -> bool:
    try:
        return runtime.call("info", "--format", "{{.Host.Arch}}" if runtime.name == "podman"
                            else "{{.Architecture}}", timeout=30).returncode == 0
    except ContainerError:
        return False


_DETECTED: dict[str, Runtime | None] = {}


def detect_runtime(preference: str = "auto") -> Runtime | None:
    """The container runtime to use: ``podman``, ``docker`` or ``auto`` (podman where it
    runs, else Docker where its daemon answers). None when the one asked for is missing or
    does not answer. Cached per process."""
    if preference in _DETECTED:
        return _DETECTED[preference]
    names = CONTAINER_RUNTIMES if preference == "auto" else (preference,)
    found: Runtime | None = None
    for name in names:
        if name in _DETECTED:  # asked before on its own
            found = _DETECTED[name]
        else:
            program = shutil.which(name)
            found = Runtime(name, program) if program is not None else None
            if found is not None and not _answers(found):
                found = None
            _DETECTED[name] = found
        if found is not None:
            break
    _DETECTED[preference] = found
    return found


# -- images ------------------------------------------------------------------------------


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


def _lock_dir() -> Path:
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
    with open(_lock_dir() / f"{tag.rsplit(':', 1)[1]}.lock", "a+b") as lock:
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
    path = _lock_dir().parent / "seccomp" / f"evalrun-{digest}.json"
    _SECCOMP[text] = str(path)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return str(path)



def _start_time(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot ("" when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
        return text.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_token(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_time(pid)}"


def _owner_alive(token: str) -> bool:
    pid_text, _, started = token.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    return bool(started) and _start_time(pid) == started


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
            "--network", ("slirp4netns" if runtime.name == "podman" else "bridge")
            if spec.network else "none",
            "--entrypoint", "/bin/sh",
        ]
        spool = Path(tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{owner_token().replace(':', '-')}-"))
        if runtime.name == "podman":
            args += ["--cidfile", str(spool / "cid")]
        for key, value in spec.labels.items():
            args += ["--label", f"{key}={value}"]
        if spec.userns and runtime.name == "podman":
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
        if runtime.name == "podman":
            args += ["--security-opt", "mask=" + ":".join(MASKED)]
        else:
            for cap in DOCKER_ONLY_CAPS:
                args += ["--cap-drop", cap]
        for host, inside in spec.mounts:
            args += ["--volume", f"{host}:{inside}:ro"]
        pidfile = spec.pidfile or str(spool / "pid")
        if runtime.name == "podman":
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
        container.pidfile = Path(pidfile) if runtime.name == "podman" else None
        return container

    @classmethod
    def take(cls, runtime: Runtime, spec: ContainerSpec, *, ahead: int = 0) -> Container:
        """A container of ``spec`` launched (:meth:`launch`): one launched ahead for the same
        settings if there is one, else a new one; then as many are launched ahead as needed
        for ``ahead`` to wait for the next trial of these settings (:func:`release_spares`
        ends them when the session ends). A container launched ahead is as fresh as one
        launched now: only its image is in it, and nothing runs in it but its first process,
        which waits for its first copy in (:meth:`send_first`). It carries the labels of
        ``spec`` but :data:`AHEAD_DROPS` (it may serve another task of the same settings),
        and a name of its own. Only one set of settings has containers waiting: those of
        other settings are ended (a session of many images does not pile them up)."""
        key = _spare_key(runtime, spec)
        for other in [k for k in _SPARES if k != key]:
            for container in _SPARES.pop(other):
                container.discard()
        waiting = _SPARES.setdefault(key, [])
        while waiting:
            container = waiting.pop(0)
            if container.client.poll() is None:
                break
            container.remove()  # ended by itself (e.g. its image went away): not used
        else:
            container = cls.launch(runtime, spec)
        labels = {k: v for k, v in spec.labels.items() if k not in AHEAD_DROPS}
        while len(waiting) < ahead:
            waiting.append(cls.launch(runtime, dataclasses.replace(
                spec, name=container_name(), labels=labels, pidfile=None)))
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

    def kill_leftovers(self) -> bool:
        """Kill every process of the container but its first from the host, where that can
        be done (:meth:`.containerexec.DirectExec.kill_others`); False: it was not (kill
        from inside, :data:`KILL_ALL`)."""
        return self.direct is not None and self.direct.kill_others()

    def receive(self, archive: Path, length: int, target: Path) -> list[str]:
        """Extract the first ``length`` bytes of the file ``archive`` (a tar archive the
        container wrote) into ``target``, as :meth:`get` does; the names left out."""
        os.truncate(archive, length)
        target.mkdir(parents=True, exist_ok=True)
        with open(archive, "rb") as handle:
            return _extract(handle, target)

    def kill_all(self) -> None:
        """Kill every process in the container but its first (what a step left running)."""
        self.run(["/bin/sh", "-c", KILL_ALL])

    def exchange(self, script: str, args: Sequence[str] = (), *, send: Path | None = None,
                 receive: Path | None = None, what: str = "copying files") -> list[str]:
        """One ``exec`` of ``/bin/sh -c script sh args...``: the tar archive ``send`` (a file)
        on its stdin, and its stdout, a tar archive, extracted into ``receive`` (see
        :func:`_extract`; the names left out are returned). :class:`ContainerError` when it
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
            return _extract(out, receive)

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


#: Containers launched ahead of the trial that will use them (:meth:`Container.take`), by
#: their settings.
_SPARES: dict[str, list[Container]] = {}
#: The label naming the trial a container is for, and its task's.
TRIAL_LABEL = "io.evalrun.trial"
TASK_LABEL = "io.evalrun.task"
#: Not on a container launched ahead (:meth:`Container.take`).
AHEAD_DROPS = frozenset({TRIAL_LABEL, TASK_LABEL})


def container_name() -> str:
    """A new container name: ``evalrun-<pid>-<random>``."""
    return f"evalrun-{os.getpid()}-{os.urandom(6).hex()}"


def _spare_key(runtime: Runtime, spec: ContainerSpec) -> str:
    fields = dataclasses.asdict(spec)
    fields.update(name="", pidfile=None,
                  labels={k: v for k, v in spec.labels.items() if k not in AHEAD_DROPS})
    return json.dumps([runtime.program, fields], sort_keys=True, default=str)


def release_spares() -> None:
    """End every container launched ahead and not taken (at the end of a session; also at
    exit). Their first processes end at once (their stdin closes), then each is waited for."""
    waiting = [c for group in _SPARES.values() for c in group]
    _SPARES.clear()
    for container in waiting:
        container.end_first_process()
    for container in waiting:
        container.remove()


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
atexit.register(release_spares)  # (runs first: its removals may be left to _reap_pending)


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


def reap_stale(runtime: Runtime) -> list[str]:
    """Remove every container we labelled whose owner process is gone (their names), and
    the private directories such owners left (:data:`SPOOL_PREFIX`)."""
    _reap_spools()
    owner = runtime.label_template(OWNER_LABEL)
    try:
        listed = runtime.call("ps", "-a", "--filter", f"label={LABEL}=1", "--format",
                              f"{{{{.Names}}}}\t{owner}", timeout=60)
    except ContainerError:
        return []
    if listed.returncode != 0:
        return []
    stale = []
    for line in listed.stdout.decode(errors="replace").splitlines():
        name, _, owner = line.partition("\t")
        if name and not _owner_alive(owner.strip()):
            stale.append(name.strip())
    if stale:
        with contextlib.suppress(ContainerError):
            runtime.force_remove(*stale, timeout=120)
    return stale


def _reap_spools() -> None:
    base = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for path in base.glob(f"{SPOOL_PREFIX}*"):
            pid, _, rest = path.name[len(SPOOL_PREFIX):].partition("-")
            started = rest.rpartition("-")[0]
            if pid.isdigit() and started and not _owner_alive(f"{pid}:{started}"):
                shutil.rmtree(path, ignore_errors=True)


def pack(source: Path, target: str, archive: str) -> str:
    """Write ``source`` (a directory's content, or one file named as ``target``) as a tar
    archive owned by root; the directory to extract it in."""
    import tarfile  # only when a container trial copies files in

    with tarfile.open(archive, mode="w") as tar:
        if source.is_dir():
            for child in sorted(source.iterdir()):
                tar.add(child, arcname=child.name, filter=_as_root)
            return target
        tar.add(source, arcname=os.path.basename(target), filter=_as_root)
    return os.path.dirname(target) or "/"


def pack_at(items: Sequence[tuple[Path, str]], archive: str) -> None:
    """Write a tar archive, owned by root, to extract at ``/``: each ``(host path, absolute
    path inside)`` in order, a directory with its content. The directories above each
    inside path are not in it (created as needed, existing ones left as they are)."""
    import tarfile  # only when a container trial copies files in

    with tarfile.open(archive, mode="w") as tar:
        for source, inside in items:
            tar.add(source, arcname=inside.strip("/"), filter=_as_root)


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _extract(archive: IO[bytes], target: Path) -> list[str]:
    """Extract a tar stream the container wrote under ``target``: regular files, directories
    and symbolic links, each strictly inside ``target`` (never through a link it made);
    anything else is named in the list returned."""
    skipped: list[str] = []
    root = os.path.realpath(target)
    import tarfile

    with tarfile.open(fileobj=archive, mode="r|") as tar:
        for member in tar:
            name = os.path.normpath(member.name)
            if name in (".", ""):
                continue
            path = os.path.join(root, name)
            if name.startswith("..") or os.path.isabs(name) or not path.startswith(root + os.sep):
                skipped.append(member.name)
                continue
            parent = os.path.dirname(path)
            if os.path.realpath(parent) != os.path.normpath(parent):
                skipped.append(member.name)  # below a link the archive made
                continue
            try:
                if member.isdir():
                    os.makedirs(path, exist_ok=True)
                    os.chmod(path, 0o755 | (member.mode & 0o777))
                elif member.isreg():
                    source = tar.extractfile(member)
                    assert source is not None
                    os.makedirs(parent, exist_ok=True)
                    with open(path, "wb") as out:
                        shutil.copyfileobj(source, out)
                    os.chmod(path, member.mode & 0o777)
                elif member.issym():
                    os.makedirs(parent, exist_ok=True)
                    os.symlink(member.linkname, path)
                else:
                    skipped.append(member.name)
            except OSError:
                skipped.append(member.name)
    return skipped


def merge_into(source: Path, target: Path) -> None:
    """Move what ``source`` (a copy taken out of a container) holds into ``target``
    (created), replacing files of the same name; links are moved as links, never followed."""
    target.mkdir(parents=True, exist_ok=True)
    if source.is_symlink() or not source.is_dir():  # never through a link from inside
        return
    for child in source.iterdir():
        dest = target / child.name
        if child.is_dir() and not child.is_symlink() and dest.is_dir() and not dest.is_symlink():
            merge_into(child, dest)
            continue
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif os.path.lexists(dest):
            dest.unlink()
        os.replace(child, dest)
