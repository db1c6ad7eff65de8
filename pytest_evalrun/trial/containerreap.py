"""Who owns a container, and the reaper of those whose owner is gone: every container a
process starts is labelled with :data:`LABEL` and the owner's pid and start time
(:func:`owner_token`), and its private host directory is named after them
(:data:`SPOOL_PREFIX`); :func:`reap_stale`, called when a session starts, removes the labelled
containers and the directories whose owner died (e.g. when the runtime itself was killed too).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .containerruntime import ContainerError, Runtime

#: Every container we start carries this label (value ``1``) and ``evalrun.owner`` =
#: ``<pid>:<start time>`` of the process that started it.
LABEL = "io.evalrun"
OWNER_LABEL = "io.evalrun.owner"


#: A container's private host directory (its id, the process descriptions of its steps):
#: ``<tmp>/evalrun-ctr-<pid>-<start time>-<random>``, removed with the container, or by
#: :func:`reap_stale` once its owner is gone.
SPOOL_PREFIX = "evalrun-ctr-"


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
