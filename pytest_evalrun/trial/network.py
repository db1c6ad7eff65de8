"""A sandboxed step's network: its own namespace, reached from outside only through forwards.

Every sandboxed step runs in a network namespace of its own (``bwrap --unshare-net``; bwrap
brings up ``lo``): the host's loopback, the host's abstract Unix sockets and other trials are
not there.  What the step may reach outside goes through **forwards**:

    Forward(port=P, socket=S)   inside the sandbox, TCP 127.0.0.1:P (and [::1]:P) reaches
                                the server of the host's Unix socket S

The starter in front of the step's command (:mod:`~.starter`) listens on the ports inside and
hands the listening sockets out; the plugin accepts on them (:mod:`~.forwards`).  The
plugin's own forwards:

* the **egress proxy** (:mod:`~.egress`): an HTTP(S) forward proxy outside the sandbox, at
  :data:`PROXY_PORT` inside; steps get ``HTTP(S)_PROXY``/``ALL_PROXY`` for it
  (:func:`proxy_env`), and ``NO_PROXY`` names only the sandbox's own loopback;
* a loopback ``host:port`` the experiment allows explicitly (``network: {allow:
  ["127.0.0.1:8080"]}``): the same port inside reaches the host's;
* a preset's model endpoint and OpenTelemetry receiver on the host's loopback
  (:mod:`pytest_evalrun.agents.runner`); the model gateway uses the same mechanism.

This module holds the parts without I/O: :class:`Forward`, the allow list (:class:`Allow`),
the proxy's decision (:func:`decide`) and the bounded connection log (:class:`NetLog`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..experiment.allowlist import Allow, is_loopback_host, norm_host, parse_allow

__all__ = [
    "LOG_FILE",
    "PROXY_PORT",
    "Allow",
    "Decision",
    "Forward",
    "NetLog",
    "Upstream",
    "decide",
    "is_loopback_host",
    "parse_allow",
    "proxy_env",
    "upstream_proxy",
]

#: The egress proxy's port on the sandbox's own 127.0.0.1 (another one when an allowed
#: loopback port takes it: :func:`proxy_port`).
PROXY_PORT = 3128
#: The trial's connection log (JSON lines), in its trial directory.
LOG_FILE = "network.log"
#: Connections logged per trial; the rest are counted in the log's last line.
LOG_LIMIT = 2000


@dataclass(frozen=True)
class Forward:
    """Inside the sandbox, TCP ``127.0.0.1:port`` (and ``[::1]:port`` where IPv6 is up)
    reaches the server of the host's Unix socket ``socket`` (:mod:`~.forwards`: handed to it
    when it runs in this process, else through a connection to ``socket``).

    ``name`` says what it is (for errors and docs: ``"egress"``, ``"gateway"``,
    ``"127.0.0.1:8080"``).  The socket must exist when the step starts and keep accepting
    until it ends; its path must be shorter than 108 bytes (a Unix socket's limit)."""

    port: int
    socket: Path
    name: str = ""


def proxy_env(port: int) -> dict[str, str]:
    """The variables that send a step's HTTP(S) clients through the egress proxy at
    ``127.0.0.1:port`` inside; only the sandbox's own loopback is reached directly."""
    url = f"http://127.0.0.1:{port}"
    env: dict[str, str] = {}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = url
    env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1,::1"
    return env


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    """The proxy's answer for ``host:port``: the addresses to connect to, or why not."""

    allowed: bool
    addresses: tuple[str, ...] = ()
    reason: str = ""
    #: The name could not be resolved here (an upstream proxy may still reach it).
    unresolved: bool = False


Resolver = Callable[[str, int], Sequence[str]]


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _range(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``ip`` is not a public address (None when it is)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _range(ip.ipv4_mapped)
    for name in ("loopback", "link_local", "unspecified", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    return None if ip.is_global else "not public"


def decide(
    host: str, port: int, allow: Sequence[Allow] | None, resolve: Resolver = _resolve
) -> Decision:
    """May the proxy connect to ``host:port``?

    With an allow list (``allow`` not None) only hosts it names are reached, at whatever
    address they have (an entry is the experiment's explicit choice, a loopback or private
    one included).  Without one, any host whose every address is public: never the host's
    loopback, link-local (cloud metadata), private, multicast or reserved ranges."""
    name = norm_host(host)
    if not name or not 0 < port < 65536:
        return Decision(False, reason=f"bad destination {host!r}:{port}")
    if allow is not None and not any(a.matches(name, port) for a in allow):
        return Decision(
            False, reason=f"{name}:{port} is not in the trial's network allow list"
        )
    try:
        addresses = tuple(resolve(name, port))
    except (OSError, UnicodeError) as exc:
        return Decision(False, reason=f"cannot resolve {name}: {exc}", unresolved=True)
    if not addresses:
        return Decision(False, reason=f"cannot resolve {name}", unresolved=True)
    if allow is None:
        for address in addresses:
            why = _range(ipaddress.ip_address(address.split("%")[0]))
            if why is not None:
                return Decision(
                    False,
                    reason=f"{name} is {address} ({why} address): name it under "
                    f"'network: allow:' to reach it",
                )
    return Decision(True, addresses)


# --------------------------------------------------------------------------- upstream


@dataclass(frozen=True)
class Upstream:
    """The proxy the environment pytest runs in names (``https_proxy``, ``all_proxy``,
    ``http_proxy``): the egress proxy goes out through it, except to ``no_proxy`` hosts."""

    host: str
    port: int
    #: ``Proxy-Authorization`` value from the URL's user:password, if any.
    auth: str | None = None
    no_proxy: tuple[str, ...] = ()

    def bypass(self, host: str) -> bool:
        host = norm_host(host)
        for entry in self.no_proxy:
            entry = norm_host(entry.lstrip("*"))
            if entry == "*" or host == entry.lstrip(".") or host.endswith("." + entry.lstrip(".")):
                return True
        return False


def upstream_proxy(env: Mapping[str, str]) -> Upstream | None:
    """The upstream proxy ``env`` names (an ``http://`` URL), or None."""
    import base64
    from urllib.parse import unquote, urlsplit

    for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "http_proxy",
                 "HTTP_PROXY"):  # fmt: skip
        url = env.get(name, "").strip()
        if not url:
            continue
        try:
            parts = urlsplit(url if "://" in url else f"http://{url}")
            port = parts.port or 80
        except ValueError:
            return None
        if parts.scheme != "http" or not parts.hostname:
            return None  # socks://, https:// proxies: not supported, go direct
        auth = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            auth = "Basic " + base64.b64encode(pair.encode()).decode()
        raw = env.get("no_proxy") or env.get("NO_PROXY") or ""
        skip = tuple(e.strip() for e in raw.split(",") if e.strip())
        return Upstream(parts.hostname, port, auth, skip)
    return None


# --------------------------------------------------------------------------- the log


class NetLog:
    """The trial's connection log: one JSON line per connection (``step``, ``via``,
    ``host``, ``port``, ``allowed``, ``reason`` when refused, ``sent``/``received`` bytes,
    ``seconds``), at most :data:`LOG_LIMIT` lines, then a count of the rest.  Thread-safe;
    also keeps the totals for meta.json (:meth:`summary`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.step = ""
        self._lock = threading.Lock()
        self._lines = 0
        self._dropped = 0
        self.connections = self.refused = self.sent = self.received = 0

    def record(
        self,
        via: str,
        host: str,
        port: int,
        allowed: bool,
        reason: str = "",
        sent: int = 0,
        received: int = 0,
        seconds: float = 0.0,
    ) -> None:
        entry: dict[str, object] = {
            "step": self.step, "via": via, "host": host[:255], "port": port, "allowed": allowed,
        }  # fmt: skip
        if reason:
            entry["reason"] = reason[:300]
        entry.update(sent=sent, received=received, seconds=round(seconds, 3))
        with self._lock:
            self.connections += 1
            self.refused += not allowed
            self.sent += sent
            self.received += received
            if self._lines >= LOG_LIMIT:
                self._dropped += 1
                return
            self._lines += 1
            self._append(entry)

    def _append(self, entry: dict[str, object]) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError:
            return
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            out.write(json.dumps(entry, ensure_ascii=True) + "\n")

    def close(self) -> None:
        with self._lock:
            if self._dropped:
                self._append({"not_logged": self._dropped})
                self._dropped = 0

    def summary(self) -> dict[str, int]:
        with self._lock:
            return {
                "connections": self.connections,
                "refused": self.refused,
                "bytes_sent": self.sent,
                "bytes_received": self.received,
            }
