"""Forwards into another process's network namespace, served from this process: a container's.

A container trial's network is ``--network none`` (only ``lo``). What its steps may reach on
the host (the trial's egress proxy, the model gateway, an OpenTelemetry receiver) is a
:class:`~.network.Forward`, as in the local sandbox, but nothing runs inside the container for
it: this process enters the container's network namespace for a moment (``setns(2)`` in a
short-lived thread of its own), binds ``127.0.0.1:port`` (and ``[::1]:port`` where IPv6 is up)
there, and leaves; the listening socket stays in the container's namespace while its
connections are accepted and relayed here, in threads, to the forward's host Unix socket.
The container sees a TCP port on its own loopback and nothing else of the host: no socket
file, no route out, no process of ours.

Entering a namespace needs ``CAP_SYS_ADMIN`` over the user namespace that owns it: root (rootful
podman, Docker) has it; :class:`NetnsError` says so otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import threading
from pathlib import Path

from .connections import Connections
from .forwards import hand_over
from .network import Forward

__all__ = ["NetnsError", "NetnsForwards"]

_CLONE_NEWNET = 0x40000000
_MAX_CONNECTIONS = 256
_NEEDS = ("this needs root (rootful podman, or Docker as root); give the trial 'network: false' "
          "to run it without")


class NetnsError(OSError):
    """The namespace cannot be entered or a port cannot be bound in it."""


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise NetnsError(errno, os.strerror(errno))


def _bind_in(ns_fd: int, port: int) -> list[socket.socket]:
    """Listening sockets on 127.0.0.1:port (and [::1]:port when there is IPv6) in the network
    namespace ``ns_fd``, made by a thread that enters it and ends (this process's other
    threads never leave their own namespace)."""
    out: list[socket.socket] = []
    error: list[BaseException] = []

    def work() -> None:
        try:
            _setns(ns_fd)
            for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                sock = socket.socket(family, socket.SOCK_STREAM)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind((host, port))
                    sock.listen(128)
                except OSError:
                    sock.close()
                    if family == socket.AF_INET:
                        raise
                    continue
                out.append(sock)
        except BaseException as exc:  # reported to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=work, name="evalrun-netns-bind", daemon=True)
    thread.start()
    thread.join()
    if error:
        for sock in out:
            sock.close()
        exc = error[0]
        if isinstance(exc, OSError):
            raise NetnsError(exc.errno or 0, f"cannot listen on 127.0.0.1:{port} in the "
                             f"container's network: {exc.strerror or exc}") from exc
        raise exc
    return out


class NetnsForwards:
    """The forwards of one network namespace (the container whose first process is ``pid``
    as the host sees it): :meth:`add` one, :meth:`remove` it by port, :meth:`close` all.
    The namespace is held open from the start (a later reuse of ``pid`` changes nothing)."""

    def __init__(self, pid: int) -> None:
        path = Path(f"/proc/{pid}/ns/net")
        try:
            self._ns = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NetnsError(exc.errno or 0,
                             f"cannot open the container's network namespace {path} "
                             f"({exc.strerror or exc}) to forward the trial's proxy or model "
                             f"gateway into it: {_NEEDS}") from exc
        self._lock = threading.Lock()
        self._listeners: dict[int, list[socket.socket]] = {}
        self._conns = Connections(limit=_MAX_CONNECTIONS * 2)
        self._closed = False

    def check(self) -> None:
        """Can this process enter the namespace? :class:`NetnsError` saying why not."""
        error: list[OSError] = []

        def work() -> None:
            try:
                _setns(self._ns)
            except OSError as exc:
                error.append(exc)

        thread = threading.Thread(target=work, name="evalrun-netns-check", daemon=True)
        thread.start()
        thread.join()
        if error:
            raise NetnsError(error[0].errno or 0,
                             "cannot enter the container's network namespace to forward the "
                             f"trial's proxy or model gateway into it ({error[0].strerror}): "
                             f"{_NEEDS}")

    @property
    def ports(self) -> tuple[int, ...]:
        with self._lock:
            return tuple(self._listeners)

    def add(self, forward: Forward) -> None:
        """Serve ``forward`` (its port inside, its host socket) until removed."""
        with self._lock:
            if self._closed:
                raise NetnsError(0, "the container's forwards are closed")
            if forward.port in self._listeners:
                raise NetnsError(0, f"port {forward.port} is forwarded already")
        listeners = _bind_in(self._ns, forward.port)
        with self._lock:
            self._listeners[forward.port] = listeners
        for sock in listeners:
            threading.Thread(target=self._accept, args=(sock, str(forward.socket)),
                             daemon=True, name=f"evalrun-netns-{forward.port}").start()

    def remove(self, port: int) -> None:
        with self._lock:
            listeners = self._listeners.pop(port, [])
        for sock in listeners:
            _close(sock)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            listeners = [s for group in self._listeners.values() for s in group]
            self._listeners.clear()
        for sock in listeners:
            _close(sock)
        self._conns.close()
        with contextlib.suppress(OSError):
            os.close(self._ns)

    def _accept(self, listener: socket.socket, path: str) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed (removed), or the namespace is gone
            hand_over(client, path, self._conns)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
