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

import copy
import itertools
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RUNC_ROOT", "SWITCH", "DirectExec"]

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
        return cls(program, root, cid, process, spool)

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
