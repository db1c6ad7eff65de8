"""The host side of a sandboxed step's forwards (:class:`~.network.Forward`): the step's
listening sockets, accepted on outside the sandbox.

The starter in front of the step's command (:mod:`~.starter`) listens on each forward's port
in the sandbox's own network namespace and sends the listening sockets here over a Unix socket
pair the step inherits (``SCM_RIGHTS``), then execs the command.  :class:`Listeners` receives
them and accepts in one thread of the process that runs the step; each connection goes to its
forward's server:

* a server of this process registered for the forward's socket path (:func:`register`: the
  egress proxy, a TCP forward) gets the connection itself, with no copy in between;
* any other (the model gateway's socket) through a connection to the forward's Unix socket,
  both ways copied by two threads.

When the step ends, :meth:`Listeners.close` closes the listening sockets (the namespace goes
with the last of them) and the copies it made.  :func:`hand_over` is the same choice for a
connection accepted elsewhere (a container's forwards, :mod:`~.nsforward`).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import threading
from collections.abc import Callable, Sequence

from .connections import Connections, copy_both_ways
from .network import Forward

__all__ = ["Listeners", "hand_over", "register", "unregister"]

#: In-process servers by their Unix socket's path: a connection for it is handed over.
_LOCAL: dict[str, Callable[[socket.socket], None]] = {}
_LOCAL_LOCK = threading.Lock()


def register(path: str, take: Callable[[socket.socket], None]) -> None:
    """``take(conn)`` serves connections meant for the Unix socket at ``path`` (it owns
    ``conn`` from then on, and must not block)."""
    with _LOCAL_LOCK:
        _LOCAL[os.path.abspath(path)] = take


def unregister(path: str) -> None:
    with _LOCAL_LOCK:
        _LOCAL.pop(os.path.abspath(path), None)


def _local(path: str) -> Callable[[socket.socket], None] | None:
    with _LOCAL_LOCK:
        return _LOCAL.get(os.path.abspath(path))


def hand_over(conn: socket.socket, path: str, conns: Connections) -> None:
    """``conn`` (accepted for the forward whose host socket is ``path``) to the server of
    this process registered for ``path`` (which owns it from then on), or else copied to and
    from a connection to the Unix socket ``path`` by threads of its own, tracked in
    ``conns`` (refused, closed, when ``conns`` does not admit it)."""
    take = _local(path)
    if take is not None:
        take(conn)
        return
    if not conns.admit(conn):
        conn.close()
        return
    threading.Thread(target=_relay, args=(conn, path, conns), daemon=True).start()


def _relay(conn: socket.socket, path: str, conns: Connections) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        conns.forget(conn, upstream)
        return
    if not conns.track(upstream):
        conns.forget(conn, upstream)
        return
    copy_both_ways(conn, upstream)
    conns.forget(conn, upstream)


class Listeners:
    """One step's forwards, outside the sandbox: :attr:`child_fd` goes to the step (the
    starter's ``--listeners-fd``); :meth:`start` before the step starts (a thread waits for
    the listening sockets, then accepts), :meth:`close` after it ended."""

    def __init__(self, forwards: Sequence[Forward]) -> None:
        self.forwards = {f.port: f for f in forwards}
        self._ours, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.Lock()
        self._listening: list[tuple[socket.socket, Forward]] = []
        self._conns = Connections()
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Why the step's listening sockets did not arrive (None: they did, or not yet).
        self.error: str | None = None

    @property
    def child_fd(self) -> int:
        return self._theirs.fileno()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="evalrun-forwards")
        self._thread.start()

    def _receive(self) -> list[tuple[socket.socket, Forward]]:
        wanted = 2 * len(self.forwards)
        try:
            data, ancillary, flags, _ = self._ours.recvmsg(4096, socket.CMSG_SPACE(wanted * 4))
        except OSError as exc:
            self.error = f"no listening sockets from the sandbox: {exc}"
            return []
        fds: list[int] = []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                fds += [int.from_bytes(payload[i : i + 4], sys.byteorder)
                        for i in range(0, usable, 4)]  # fmt: skip
        ports = data.decode("ascii", "replace").split()
        found: list[tuple[socket.socket, Forward]] = []
        for i, fd in enumerate(fds):
            sock = socket.socket(fileno=fd)
            port = ports[i] if i < len(ports) else ""
            forward = self.forwards.get(int(port)) if port.isdigit() else None
            if forward is None or flags & socket.MSG_CTRUNC:
                sock.close()
                continue
            sock.setblocking(False)
            found.append((sock, forward))
        if not data and not fds:
            self.error = "the sandbox's starter sent no listening socket"
        return found

    def _run(self) -> None:
        found = self._receive()
        with self._lock:
            if self._closed:
                for sock, _ in found:
                    sock.close()
                return
            self._listening = found
        if not found:
            return
        poll = select.poll()
        poll.register(self._wake_r, select.POLLIN)
        by_fd = {sock.fileno(): (sock, forward) for sock, forward in found}
        for fd in by_fd:
            poll.register(fd, select.POLLIN)
        while True:
            for fd, _ in poll.poll():
                if fd == self._wake_r:
                    return
                sock, forward = by_fd[fd]
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except OSError:  # out of descriptors: let connections end
                    poll.poll(50)
                    continue
                conn.setblocking(True)
                hand_over(conn, str(forward.socket), self._conns)

    def close(self) -> None:
        """The step ended: stop accepting, close the listening sockets and the copies."""
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._theirs.close()
        with contextlib.suppress(OSError):
            self._ours.shutdown(socket.SHUT_RDWR)  # a receive still waiting ends
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        for sock, _ in self._listening:
            sock.close()
        self._conns.close()
        self._ours.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

