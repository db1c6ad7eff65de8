"""What every forwarding server of this process shares (the egress proxy and TCP forwards in
:mod:`~.egress`, a sandboxed step's listeners in :mod:`~.forwards`, a container's in
:mod:`~.nsforward`): the set of its live connections, closed all at once when the server
ends, and the copy of one connection to another, both ways."""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["Connections", "copy_both_ways"]

_BUFFER = 65536


class Connections:
    """The live sockets of one server. :meth:`admit` a client (refused once closed, or at
    ``limit``), :meth:`track` a socket of its own (refused once closed), :meth:`forget`
    and close them when done; :meth:`close` ends them all."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def admit(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._closed or (self.limit is not None and len(self._live) >= self.limit):
                return False
            self._live.add(sock)
            return True

    def track(self, *socks: socket.socket) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._live.update(socks)
            return True

    def forget(self, *socks: socket.socket) -> None:
        with self._lock:
            for sock in socks:
                self._live.discard(sock)
        for sock in socks:
            sock.close()

    def close(self) -> None:
        """Refuse new ones; shut and close every live one."""
        with self._lock:
            self._closed = True
            live = list(self._live)
            self._live.clear()
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def copy_both_ways(client: socket.socket, upstream: socket.socket) -> tuple[int, int]:
    """Copy until both sides are done (each direction's end is passed on as a shutdown of
    the other side's writing): ``(bytes sent up, bytes received)``."""
    counts = [0, 0]

    def pump(src: socket.socket, dst: socket.socket, i: int) -> None:
        try:
            while True:
                data = src.recv(_BUFFER)
                if not data:
                    break
                dst.sendall(data)
                counts[i] += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    back = threading.Thread(target=pump, args=(upstream, client, 1), daemon=True)
    back.start()
    pump(client, upstream, 0)
    back.join()
    return counts[0], counts[1]
