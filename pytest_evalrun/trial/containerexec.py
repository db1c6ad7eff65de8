"""Processes in a running podman container started through its OCI runtime (``runc exec``).

``podman exec`` costs 0.25-0.45 s a call on a loaded 2-core machine, most of it podman's own
start-up and its exec session (conmon); ``runc exec`` on the same container costs 0.07-0.17 s
(docs/environments.md has the figures). The confinement is the container's own either way:
both take the process settings from the container's OCI configuration (its ``config.json``)
and join its namespaces (user, PID, mount, network), its cgroup (limits) and its seccomp
filter; masked paths are mounts of the container. :class:`DirectExec` reads that
configuration once per container and writes, per process, the same process description
``podman exec`` would give runc: the container's capabilities, ``noNewPrivileges``, rlimits,
user, AppArmor/SELinux labels, with the step's argv, environment and working directory. The
values of the environment go in a file only root can read, never on a command line.

Used only where it is known to be the same: podman as root with the ``runc`` runtime (the
container's runc state is in ``/run/runc/<id>``). Everywhere else (rootless podman, crun,
Docker), and with ``EVALRUN_CONTAINER_EXEC=podman``, steps go through ``podman exec``.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RUNC_ROOT", "SWITCH", "Batch", "DirectExec"]

#: runc's state directory when run as root (podman passes no ``--root`` of its own).
RUNC_ROOT = "/run/runc"
#: ``podman``: always go through ``podman exec`` (e.g. to compare).
SWITCH = "EVALRUN_CONTAINER_EXEC"
#: Settings of the container's process that belong to its first process only.
_FIRST_ONLY = ("terminal", "consoleSize")
_COUNTER = itertools.count()


@dataclass(frozen=True)
class DirectExec:
    """``runc exec`` into one container (see the module docstring)."""

    program: str
    root: str
    cid: str
    #: The container's process settings (``config.json``'s ``process``).
    process: Mapping[str, Any]
    #: A private directory (0700) for the process descriptions.
    spool: Path
    #: The container's first process (host pid) and its cgroup directories.
    init_pid: int = 0
    cgroups: Mapping[str, str] = field(default_factory=dict)
    #: bash on the host (to hand runc descriptors 3 and 4); None: no batching.
    bash: str | None = None

    @classmethod
    def find(cls, cid: str, spool: Path, root: str = RUNC_ROOT) -> DirectExec | None:
        """The direct way into container ``cid``, or None when it is not known to be the same
        as ``podman exec`` (not root, not runc, its state or configuration unreadable)."""
        if os.environ.get(SWITCH, "") == "podman" or os.geteuid() != 0 or not cid:
            return None
        program = shutil.which("runc")
        if program is None:
            return None
        try:
            state = json.loads((Path(root) / cid / "state.json").read_text())
            labels = state["config"]["labels"]
            bundle = next(str(label)[len("bundle="):] for label in labels
                          if str(label).startswith("bundle="))
            config = json.loads((Path(bundle) / "config.json").read_text())
            process = config["process"]
        except (OSError, ValueError, KeyError, TypeError, StopIteration):
            return None
        if not isinstance(process, dict) or not isinstance(process.get("env"), list) \
                or not isinstance(process.get("user"), dict):
            return None
        paths = state.get("cgroup_paths")
        cgroups = {str(k): str(v) for k, v in paths.items()} if isinstance(paths, dict) else {}
        init = state.get("init_process_pid")
        return cls(program, root, cid, process, spool,
                   init if isinstance(init, int) else 0, cgroups, shutil.which("bash"))

    def argv(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
             workdir: str | None = None) -> list[str]:
        """The command line that runs ``argv`` in the container with the container's own
        settings, its image's environment with ``env`` over it, in ``workdir`` (default the
        container's)."""
        spec = copy.deepcopy(dict(self.process))
        for key in _FIRST_ONLY:
            spec.pop(key, None)
        spec["args"] = list(argv)
        merged: dict[str, str] = {}
        for item in spec["env"]:
            name, _, value = str(item).partition("=")
            merged[name] = value
        merged.update(env or {})
        spec["env"] = [f"{k}={v}" for k, v in merged.items()]
        if workdir:
            spec["cwd"] = workdir
        path = self.spool / f"process-{next(_COUNTER)}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(spec, handle)
        return [self.program, "--root", self.root, "exec", "--process", str(path), self.cid]

    def batch(self, argv: Sequence[str], *, env: Mapping[str, str] | None, workdir: str | None,
              collect: Sequence[str], grader: Path | None = None,
              grader_dest: str = "/") -> Batch:
        """One process that extracts the tar archive ``grader`` (if given) at ``grader_dest``,
        runs ``argv`` (the step: with the copy-in and copy-out descriptors closed), then
        kills every other process of the container (counting those that were alive: what
        the step left) and writes the absolute paths ``collect`` that exist as a tar archive
        to a host file only it holds open (0600, the host's root: a process of the container
        cannot reopen it), ended by a trailer with the step's exit status and the count.
        See :class:`Batch`. Only where :attr:`bash` is set."""
        assert self.bash is not None
        rel = " ".join(shlex.quote(p.lstrip("/")) for p in collect)
        script = (
            "if [ -n \"$EVALRUN_GRADER_DEST\" ]; then "
            'mkdir -p "$EVALRUN_GRADER_DEST" && tar -x -f - -C "$EVALRUN_GRADER_DEST" <&3 '
            "|| { printf 'EVALRUN-END G 00000000 00000000 00000000\\n' >&4; exit 125; }; fi\n"
            "unset EVALRUN_GRADER_DEST\n"
            'if [ -n "$EVALRUN_STEP_CWD" ]; then cd "$EVALRUN_STEP_CWD" || exit 255; fi\n'
            "unset EVALRUN_STEP_CWD\n"
            '"$@" 3<&- 4>&-\n'
            "st=$?\n"
            # every process but the first and this one, not a zombie: what the step left
            "n=0; for d in /proc/[0-9]*; do case ${d#/proc/} in 1|$$) continue;; esac; "
            'l=; read -r l 2>/dev/null < "$d/stat" || continue; '
            'case $l in *") Z "*|*") X "*) ;; *) n=$((n+1));; esac; done\n'
            "kill -9 -1 2>/dev/null\n"
            f"cd / && set -- && for p in {rel}; do "
            '[ -e "$p" ] || [ -L "$p" ] && set -- "$@" "$p"; done\n'
            "if [ $# -eq 0 ]; then tar -c -f - -T /dev/null >&4 2>/dev/null; "
            'else tar -c -f - "$@" >&4 2>/dev/null; fi\n'
            "printf 'EVALRUN-END D %08d %08d %08d\\n' \"$st\" \"$?\" \"$n\" >&4\n"
            "exit $st\n"
        )
        values = dict(env or {})
        values["EVALRUN_GRADER_DEST"] = grader_dest if grader is not None else ""
        # the working directory may come with the grader's archive: entered after it
        values["EVALRUN_STEP_CWD"] = workdir or ""
        inner = self.argv(["/bin/sh", "-c", script, "sh", *argv], env=values, workdir="/")
        out = self.spool / f"out-{next(_COUNTER)}.tar"
        write = _high(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600))
        try:
            read = _high(os.open(grader if grader is not None else os.devnull, os.O_RDONLY))
        except OSError:
            os.close(write)
            raise
        # runc passes its descriptors 3 and 4 on (--preserve-fds 2): bash on the host (dash
        # cannot name descriptors above 9) puts ours there and execs runc
        call = [inner[0], *inner[1:4], "--preserve-fds", "2", *inner[4:]]
        wrapper = [self.bash, "-c", f'exec "$@" 3<&{read} 4>&{write} {read}<&- {write}>&-',
                   "bash", *call]
        return Batch(wrapper, (read, write), out)

    def kill_others(self, wait: float = 10.0) -> int | None:
        """Kill every process of the container but its first, from the host: the cgroup is
        frozen while its processes are listed and killed (none can fork or run meanwhile),
        then thawed, then we wait until only the first process (and zombies) are left.
        Unlike a ``kill -9 -1`` run inside, no process of the container can stop this or
        race it. How many processes were killed; None when the cgroup cannot be frozen here
        (the caller kills from inside)."""
        freezer = self.cgroups.get("freezer")
        state = Path(freezer) / "freezer.state" if freezer else None
        procs = Path(freezer) / "cgroup.procs" if freezer else None
        if state is None or procs is None or self.init_pid <= 0 or not state.exists():
            return None
        killed = 0
        try:
            state.write_text("FROZEN")
            deadline = time.monotonic() + wait
            while state.read_text().strip() != "FROZEN":
                if time.monotonic() > deadline:
                    raise OSError("the container's cgroup did not freeze")
                time.sleep(0.002)
            for pid in _pids(procs):
                if pid != self.init_pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        killed += 1
        except OSError:
            with contextlib.suppress(OSError):
                state.write_text("THAWED")
            return None
        state.write_text("THAWED")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if all(pid == self.init_pid or _zombie(pid) for pid in _pids(procs)):
                return killed
            time.sleep(0.002)
        return killed


def _high(fd: int) -> int:
    """``fd`` moved to a number of 10 or more (clear of 0-4 in the shell that renumbers)."""
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    finally:
        os.close(fd)


def _pids(procs: Path) -> list[int]:
    try:
        return [int(word) for word in procs.read_text().split()]
    except (OSError, ValueError):
        return []


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return True


_TRAILER = re.compile(rb"EVALRUN-END ([DG]) (\d{8}) (\d{8}) (\d{8})\n\Z")
TRAILER_SIZE = len(b"EVALRUN-END D 00000000 00000000 00000000\n")


@dataclass
class Batch:
    """A step with its copies in one process (:meth:`DirectExec.batch`): give :attr:`argv`
    and :attr:`fds` to run_step, then :meth:`close` and :meth:`outcome`."""

    argv: list[str]
    fds: tuple[int, ...]
    out: Path
    closed: bool = False
    #: The processes the step left, killed after it (known once :meth:`outcome` found the
    #: trailer).
    killed: int = 0

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for fd in self.fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def outcome(self) -> tuple[str, int] | None:
        """``("done", tar status)`` when the copy out was written whole (the archive is
        :meth:`archive`), ``("grader", 0)`` when the grader's files could not be copied in
        (the step did not run), None when the process did not get that far (killed, timed
        out: copy out by other means)."""
        try:
            size = self.out.stat().st_size
            with open(self.out, "rb") as handle:
                handle.seek(max(0, size - TRAILER_SIZE))
                tail = handle.read()
        except OSError:
            return None
        found = _TRAILER.search(tail)
        if found is None:
            return None
        if found.group(1) == b"G":
            return ("grader", 0)
        self.killed = int(found.group(4))
        return ("done", int(found.group(3)))

    def archive(self) -> tuple[Path, int]:
        """The file holding the archive and the archive's length (the trailer excluded)."""
        return self.out, self.out.stat().st_size - TRAILER_SIZE
