"""A container trial's network and the host programs a preset needs inside it.

**Network** (docs/environments.md, docs/isolation.md): the container always runs with
``--network none`` (only ``lo``). With ``network`` on, the trial gets the local sandbox's way
out: the per-trial egress proxy (:class:`~..egress.Egress`: ``network: {allow: [...]}``
enforced, ``network.log`` written) at ``127.0.0.1:3128`` inside, the step's
``HTTP(S)_PROXY``/``ALL_PROXY`` pointing at it, and the allowed loopback ``host:port`` entries
at their port. Per step, the host services it is given as endpoints (the model gateway's Unix
socket, a preset's OpenTelemetry receiver) are forwarded at their port for that step only.
Every forward is a socket bound in the container's network namespace by this process
(:mod:`~..nsforward`); nothing of the host is mounted or runs inside for it. ``network:
false``: no forward at all.

**Presets**: the CLI's npm install (its ``node_modules``, or the program's own file) is
bound read-only at its host path, and the host's ``node`` at :data:`NODE_DIR_INSIDE`
(``bin/node``), put first on the step's ``PATH``. The CLI's config home (a directory of the
trial's, under its write paths) is copied in before the step and out after it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..containerruntime import ContainerError, Runtime
from ..containers import Container
from ..containertar import merge_into
from ..egress import Egress, loopback_forwards, url_port
from ..network import LOG_FILE, Forward, NetLog
from ..nsforward import NetnsForwards
from .base import EnvironmentUnavailable, TrialPlace

__all__ = ["NODE_DIR_INSIDE", "ContainerNet", "image_path", "program_mounts"]

#: Where the host's node is bound inside a container trial (``bin/node``).
NODE_DIR_INSIDE = "/opt/evalrun/node"
#: The PATH of an image that sets none (Docker's default).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PATHS: dict[tuple[str, str], str] = {}
#: Directories never bound whole into a container (a program in them is bound alone).
_SYSTEM = frozenset({"/", "/bin", "/sbin", "/usr", "/usr/bin", "/usr/sbin", "/usr/local",
                     "/usr/local/bin", "/usr/lib", "/lib", "/etc", "/opt", "/home", "/root",
                     "/tmp", "/var"})


def program_mounts(executable: str | None, node: str | None) -> list[tuple[str, str]]:
    """``(host, inside)`` read-only binds for a CLI ``executable`` and the ``node`` it runs
    on: the ``node_modules`` tree the CLI lives in (its ``.bin`` link and its real file,
    native sub-packages included) at its own path, else the program's file alone; node's
    real file at :data:`NODE_DIR_INSIDE`/bin/node."""
    mounts: dict[str, str] = {}
    if executable:
        for path in (os.path.abspath(executable), os.path.realpath(executable)):
            parts = Path(path).parts
            if "node_modules" in parts:
                root = str(Path(*parts[: parts.index("node_modules") + 1]))
                if root not in _SYSTEM:
                    mounts.setdefault(root, root)
                    continue
            mounts.setdefault(os.path.realpath(path), path)
    if node:
        mounts[os.path.realpath(node)] = f"{NODE_DIR_INSIDE}/bin/node"
    # a tree already bound covers the paths below it
    roots = sorted(mounts, key=len)
    kept = [h for h in roots
            if not any(h != r and h.startswith(r + os.sep) and mounts[r] == r for r in roots)]
    return [(h, mounts[h]) for h in kept]


def image_path(runtime: Runtime, image: str) -> str:
    """The ``PATH`` the image's config sets (:data:`DEFAULT_PATH` when none); cached."""
    key = (runtime.program, image)
    if key not in _PATHS:
        found = DEFAULT_PATH
        with contextlib.suppress(ContainerError):
            done = runtime.call("image", "inspect", "--format",
                                "{{range .Config.Env}}{{println .}}{{end}}", image)
            for line in done.stdout.decode(errors="replace").splitlines():
                if line.startswith("PATH="):
                    found = line[5:]
        _PATHS[key] = found
    return _PATHS[key]


def _container_pid(container: Container, pidfile: Path | None) -> int:
    """The host pid of the container's first process (podman's ``--pidfile``, else
    ``inspect``)."""
    if pidfile is not None:
        with contextlib.suppress(OSError, ValueError):
            return int(pidfile.read_text().strip())
    done = container.runtime.call("inspect", "--format", "{{.State.Pid}}", container.name)
    try:
        pid = int(done.stdout.decode(errors="replace").strip())
    except ValueError:
        pid = 0
    if pid <= 0:
        raise EnvironmentUnavailable(
            f"cannot find the container's first process ({container.runtime.name} inspect: "
            f"{done.stderr.decode(errors='replace').strip()[-300:]})")
    return pid


class ContainerNet:
    """One container trial's network (see the module docstring). ``on``: the trial has a
    network (``network`` not false); :meth:`attach` once the container runs; :meth:`close`
    at the end (always)."""

    def __init__(self, place: TrialPlace, on: bool) -> None:
        self.place = place
        self.on = on
        self.egress: Egress | None = None
        self.ns: NetnsForwards | None = None
        self._record: dict[str, Any] | None = None

    def attach(self, container: Container, pidfile: Path | None) -> None:
        """Start the egress proxy and forward it (and the allowed loopback ports) into the
        container's network namespace. :class:`EnvironmentUnavailable` when it cannot be done
        (never a wider network instead)."""
        if not self.on:
            return
        place = self.place
        try:
            self.ns = NetnsForwards(_container_pid(container, pidfile))
            self.ns.check()
            self.egress = Egress(place.network_allow, NetLog(place.trial_dir / LOG_FILE),
                                 place.upstream)
            self._record = {
                "allow": ([str(a) for a in place.network_allow]
                          if place.network_allow is not None else None),
                "log": LOG_FILE,
            }
            for forward in self.egress.forwards:
                self.ns.add(forward)
        except OSError as exc:
            raise EnvironmentUnavailable(
                f"the container's network could not be set up: {exc.strerror or exc}") from exc

    def step_env(self, phase: str) -> dict[str, str]:
        """Variables of every step: the egress proxy's (and the log names the step)."""
        if self.egress is None:
            return {}
        self.egress.log.step = phase
        return self.egress.env

    @contextlib.contextmanager
    def step(self, endpoints: Sequence[str | Forward]) -> Iterator[None]:
        """For one step: the host services named by ``endpoints`` reachable inside at their
        port (a :class:`Forward`'s socket; a URL on the host's loopback through a logged
        forward), on ports the trial's own forwards leave free; removed afterwards.
        :class:`NetnsError` when one cannot be bound."""
        if self.ns is None or not endpoints:
            yield
            return
        ns = self.ns
        taken = set(ns.ports)
        given = [e for e in endpoints if isinstance(e, Forward) and e.port not in taken]
        taken |= {f.port for f in given}
        urls = [e for e in endpoints if isinstance(e, str) and url_port(e) not in taken]
        log = self.egress.log if self.egress is not None else None
        added: list[int] = []
        with loopback_forwards(urls, log) as forwards:
            try:
                for forward in (*given, *forwards):
                    if forward.port in added:
                        continue
                    ns.add(forward)
                    added.append(forward.port)
                yield
            finally:
                for port in added:
                    ns.remove(port)

    def close(self) -> None:
        """Stop the forwards and the egress proxy (its totals go into :meth:`record`)."""
        if self.ns is not None:
            self.ns.close()
            self.ns = None
        if self.egress is not None:
            egress, self.egress = self.egress, None
            egress.close()
            if self._record is not None:
                self._record.update(egress.log.summary())

    def record(self, runtime: str) -> dict[str, Any]:
        """meta.json's ``network_isolated``, ``egress`` and ``network_note``."""
        note = (f"{runtime} --network none; outbound only through the trial's egress proxy"
                if self.on else "no network (--network none)")
        return {"network_isolated": True,
                "egress": dict(self._record) if self._record is not None else None,
                "network_note": note}


def copy_in(container: Container, write: Sequence[Path], inside: Any) -> list[tuple[Path, str]]:
    """Copy each directory of ``write`` that is the trial's (mapped inside by ``inside``)
    into the container; the ``(host, inside)`` pairs to copy back with :func:`copy_out`."""
    pairs: list[tuple[Path, str]] = []
    for path in write:
        seen = str(inside(path))
        if seen == os.path.abspath(path) or not path.is_dir():
            continue  # not one of the trial's directories
        container.put(path, seen)
        pairs.append((path, seen))
    return pairs


def copy_out(container: Container, pairs: Sequence[tuple[Path, str]]) -> None:
    """The directories :func:`copy_in` copied in, copied back: each file of the container's
    copy replaces the host's of the same name (a file written on the host meanwhile, e.g. a
    step's output file there, is kept; links are copied as links, never followed)."""
    for host, seen in pairs:
        fresh = host.with_name(host.name + ".from-container")
        shutil.rmtree(fresh, ignore_errors=True)
        try:
            container.get(seen, fresh)
            merge_into(fresh, host)
        finally:
            shutil.rmtree(fresh, ignore_errors=True)



def step_home(env: Mapping[str, str], pairs: Sequence[tuple[Path, str]],
              rewrite: Any) -> dict[str, str]:
    """``HOME`` (rewritten) when the step's is one of the copied directories or below one."""
    home = env.get("HOME")
    if not home:
        return {}
    for host, _ in pairs:
        text = os.path.abspath(home)
        if text == str(host) or text.startswith(str(host) + os.sep):
            return {"HOME": str(rewrite(home))}
    return {}



__all__ += ["copy_in", "copy_out", "step_home"]
