"""The host side of a sandboxed trial's network (:mod:`~.network`): servers on Unix sockets,
run by the plugin outside the sandbox, in threads of the process that runs the trial.

* :class:`EgressProxy`: an HTTP(S) forward proxy (``CONNECT host:port`` for https and any
  tunnel, absolute-URI requests for plain http).  Each destination is decided by
  :func:`~.network.decide` (the allow list, never the host's loopback, link-local or private
  ranges unless named); a refused one gets ``403 Forbidden`` with the reason in its body and
  in an ``X-Evalrun-Refused`` header.  The checked address is the one connected to (a name is
  resolved once).
* :class:`TcpForward`: each connection to its socket goes to one fixed TCP address (an allowed
  loopback ``host:port``, a preset's model endpoint on the host).
* :class:`Egress`: one trial's proxy and loopback forwards, their :class:`~.network.Forward`
  entries for the sandbox, the proxy variables, the log.

Every connection is logged (:class:`~.network.NetLog`) when a log is given.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from .connections import Connections, copy_both_ways
from .forwards import register, unregister
from .network import (
    PROXY_PORT,
    Allow,
    Decision,
    Forward,
    NetLog,
    Upstream,
    decide,
    is_loopback_host,
    proxy_env,
)

__all__ = ["Egress", "EgressProxy", "TcpForward", "loopback_forwards", "url_port"]

_HEAD_LIMIT = 65536
_HEAD_TIMEOUT = 30.0
_CONNECT_TIMEOUT = 15.0
_MAX_CONNECTIONS = 256
_BUFFER = 65536


def _socket_dir() -> str:
    """A private directory with a short path (a Unix socket's path has at most 107 bytes)."""
    base = "/tmp" if os.access("/tmp", os.W_OK) else None
    return tempfile.mkdtemp(prefix="evalrun-net-", dir=base)


class _UnixServer:
    """Accepts connections on a Unix socket in a thread; one thread per connection."""

    via = "unix"

    def __init__(self, path: Path, log: NetLog | None) -> None:
        self.path = path
        self.log = log
        self._conns = Connections(limit=_MAX_CONNECTIONS * 2)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(128)
        register(str(path), self._take)
        self._thread = threading.Thread(
            target=self._accept, daemon=True, name=f"evalrun-{self.via}"
        )
        self._thread.start()

    def _accept(self) -> None:
        while not self._conns.closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                if self._conns.closed:
                    return
                time.sleep(0.05)
                continue
            self._take(client)

    def _take(self, client: socket.socket) -> None:
        """Serve ``client`` in a thread of its own: a connection to the Unix socket, or one
        a step's forward accepted in the sandbox (:mod:`~.forwards`)."""
        if not self._conns.admit(client):
            client.close()
            return
        threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        raise NotImplementedError

    def _relay(self, client: socket.socket, upstream: socket.socket) -> tuple[int, int]:
        """Copy both ways until both sides are done: ``(bytes sent up, bytes received)``."""
        client.settimeout(None)
        upstream.settimeout(None)
        return copy_both_ways(client, upstream)

    def close(self) -> None:
        unregister(str(self.path))
        self._conns.close()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _connect(addresses: Sequence[str], port: int) -> socket.socket:
    error: OSError = OSError("no address")
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=_CONNECT_TIMEOUT)
        except OSError as exc:
            error = exc
    raise error


class TcpForward(_UnixServer):
    """Each connection to ``path`` goes to ``host:port`` (resolved once per connection)."""

    via = "forward"

    def __init__(self, path: Path, host: str, port: int, log: NetLog | None = None) -> None:
        self.host, self.port = host, port
        super().__init__(path, log)

    def _serve(self, client: socket.socket) -> None:
        started = time.monotonic()
        try:
            upstream = socket.create_connection((self.host, self.port), timeout=_CONNECT_TIMEOUT)
        except OSError as exc:
            self._conns.forget(client)
            if self.log is not None:
                self.log.record(self.via, self.host, self.port, True, f"connect failed: {exc}")
            return
        if not self._conns.track(upstream):
            self._conns.forget(client, upstream)
            return
        sent, received = self._relay(client, upstream)
        self._conns.forget(client, upstream)
        if self.log is not None:
            self.log.record(
                self.via, self.host, self.port, True, "", sent, received,
                time.monotonic() - started,
            )  # fmt: skip


def _reply(client: socket.socket, status: str, reason: str) -> None:
    body = f"evalrun egress proxy: {status}: {reason}\n".encode("utf-8", "replace")
    header = reason.encode("ascii", "replace").replace(b"\r", b" ").replace(b"\n", b" ")
    head = (
        (
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        ).encode()
        + b"X-Evalrun-Refused: "
        + header[:300]
        + b"\r\n\r\n"
    )
    with contextlib.suppress(OSError):
        client.sendall(head + body)


def _split_hostport(text: str, default: int) -> tuple[str, int]:
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        port = int(rest[1:]) if rest.startswith(":") else default
        return host, port
    if text.count(":") == 1:
        host, port_text = text.split(":")
        return host, int(port_text)
    return text, default


class EgressProxy(_UnixServer):
    """An HTTP(S) forward proxy on a Unix socket (see the module's docstring)."""

    via = "proxy"

    def __init__(
        self,
        path: Path,
        allow: Sequence[Allow] | None,
        log: NetLog | None,
        upstream: Upstream | None = None,
    ) -> None:
        self.allow = tuple(allow) if allow is not None else None
        self.upstream = upstream
        super().__init__(path, log)

    def _head(self, client: socket.socket) -> tuple[bytes, bytes] | None:
        client.settimeout(_HEAD_TIMEOUT)
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > _HEAD_LIMIT:
                return None
            chunk = client.recv(_BUFFER)
            if not chunk:
                return None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        return head, rest

    def _serve(self, client: socket.socket) -> None:
        started = time.monotonic()
        try:
            got = self._head(client)
        except OSError:
            got = None
        if got is None:
            _reply(client, "400 Bad Request", "no complete request head")
            self._conns.forget(client)
            return
        head, rest = got
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        host, port, first, absolute = "", 0, b"", b""
        try:
            if len(parts) != 3:
                raise ValueError("bad request line")
            method, target, version = parts
            if method == "CONNECT":
                host, port = _split_hostport(target, 443)
            else:
                url = urlsplit(target)
                if url.scheme != "http" or not url.hostname:
                    raise ValueError("only CONNECT and absolute http:// requests are proxied")
                host, port = url.hostname, url.port or 80
                path = url.path or "/"
                if url.query:
                    path += "?" + url.query
                kept = [
                    line for line in lines[1:]
                    if line.split(":", 1)[0].strip().lower()
                    not in ("proxy-connection", "proxy-authorization")
                ]  # fmt: skip
                first = "\r\n".join([f"{method} {path} {version}", *kept, "", ""]).encode("latin-1")
                absolute = "\r\n".join([f"{method} {target} {version}", *kept]).encode("latin-1")
        except ValueError as exc:
            _reply(client, "400 Bad Request", str(exc))
            self._conns.forget(client)
            return
        decision = decide(host, port, self.allow)
        up = self.upstream if self.upstream and not self.upstream.bypass(host) else None
        if not decision.allowed and decision.unresolved and up and not is_loopback_host(host):
            decision = Decision(True)  # not resolvable here: the upstream proxy resolves it
        if not decision.allowed:
            _reply(client, "403 Forbidden", decision.reason)
            self._conns.forget(client)
            if self.log is not None:
                self.log.record(self.via, host, port, False, decision.reason)
            return
        try:
            if up is not None:
                upstream = _through(up, host, port, decision.addresses, absolute)
            else:
                upstream = _connect(decision.addresses, port)
        except OSError as exc:
            _reply(client, "502 Bad Gateway", f"cannot connect to {host}:{port}: {exc}")
            self._conns.forget(client)
            if self.log is not None:
                self.log.record(self.via, host, port, True, f"connect failed: {exc}")
            return
        if not self._conns.track(upstream):
            self._conns.forget(client, upstream)
            return
        try:
            if absolute and up is not None:
                if rest:
                    upstream.sendall(rest)
            elif first:
                upstream.sendall(first + rest)
            else:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
        except OSError:
            self._conns.forget(client, upstream)
            return
        sent, received = self._relay(client, upstream)
        self._conns.forget(client, upstream)
        if self.log is not None:
            self.log.record(
                self.via, host, port, True, "", sent + len(first) + len(rest), received,
                time.monotonic() - started,
            )  # fmt: skip


def _through(
    up: Upstream, host: str, port: int, addresses: Sequence[str], absolute: bytes
) -> socket.socket:
    """A connection to ``host:port`` through the upstream proxy ``up``: a tunnel
    (``CONNECT``, to the address checked here when there is one), or, for a plain http
    request (``absolute``, its head without the blank line), that request sent on."""
    sock = socket.create_connection((up.host, up.port), timeout=_CONNECT_TIMEOUT)
    auth = f"Proxy-Authorization: {up.auth}\r\n".encode() if up.auth else b""
    try:
        if absolute:
            sock.sendall(absolute + b"\r\n" + auth + b"\r\n")
            return sock
        target = addresses[0] if addresses else host
        target = f"[{target}]" if ":" in target else target
        sock.sendall(
            f"CONNECT {target}:{port} HTTP/1.1\r\nHost: {target}:{port}\r\n".encode()
            + auth + b"\r\n"
        )  # fmt: skip
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk or len(head) > _HEAD_LIMIT:
                raise OSError("the upstream proxy closed the connection")
            head += chunk
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if status.split(" ")[1:2] != ["200"]:
            raise OSError(f"the upstream proxy answered {status[:100]!r}")
        if head.partition(b"\r\n\r\n")[2]:
            raise OSError("the upstream proxy sent data before the tunnel")
        return sock
    except BaseException:
        sock.close()
        raise


class Egress:
    """One trial's way out: the egress proxy and a forward per allowed loopback
    ``host:port``, in a private socket directory; :meth:`close` ends them all.

    ``allow``: the experiment's allow list (None: any public host).  ``log``: where each
    connection is recorded."""

    def __init__(
        self, allow: Sequence[Allow] | None, log: NetLog, upstream: Upstream | None = None
    ) -> None:
        self.log = log
        self.dir = Path(_socket_dir())
        self._servers: list[_UnixServer] = []
        forwards: list[Forward] = []
        try:
            for entry in allow or ():
                if entry.loopback and entry.port is not None:
                    if any(f.port == entry.port for f in forwards):
                        continue
                    path = self.dir / f"{entry.port}.sock"
                    host = "localhost" if entry.host in ("localhost",) else entry.host
                    self._servers.append(TcpForward(path, host, entry.port, log))
                    forwards.append(Forward(entry.port, path, str(entry)))
            self.port = proxy_port({f.port for f in forwards})
            path = self.dir / "proxy.sock"
            self._servers.append(EgressProxy(path, allow, log, upstream))
            forwards.insert(0, Forward(self.port, path, "egress"))
        except BaseException:
            self.close()
            raise
        self.forwards: tuple[Forward, ...] = tuple(forwards)

    @property
    def env(self) -> dict[str, str]:
        return proxy_env(self.port)

    def close(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def proxy_port(taken: set[int]) -> int:
    """:data:`~.network.PROXY_PORT`, or the next port no forward takes."""
    port = PROXY_PORT
    while port in taken:
        port += 1
    return port


def url_port(url: str) -> int | None:
    """The port ``url`` names (its scheme's default where it names none); None when it is
    not a URL that has one."""
    try:
        parts = urlsplit(url)
        return parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None


@contextlib.contextmanager
def loopback_forwards(
    urls: Sequence[str | None], log: NetLog | None = None
) -> Iterator[tuple[Forward, ...]]:
    """Forwards for the URLs among ``urls`` whose host is the host's loopback (a preset's
    model endpoint or OpenTelemetry receiver on 127.0.0.1): inside the sandbox the same
    port reaches the host's.  Ended on leaving the ``with`` block."""
    targets: dict[int, tuple[str, str]] = {}
    for url in urls:
        if not url:
            continue
        port = url_port(url)
        if port is None:
            continue
        parts = urlsplit(url)
        if parts.hostname and is_loopback_host(parts.hostname):
            targets.setdefault(port, (parts.hostname, url))
    if not targets:
        yield ()
        return
    directory = Path(_socket_dir())
    servers: list[TcpForward] = []
    try:
        forwards: list[Forward] = []
        for port, (host, url) in targets.items():
            path = directory / f"{port}.sock"
            servers.append(TcpForward(path, host, port, log))
            forwards.append(Forward(port, path, url))
        yield tuple(forwards)
    finally:
        for server in servers:
            server.close()
        shutil.rmtree(directory, ignore_errors=True)
