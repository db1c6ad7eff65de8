"""``network: {allow: [...]}`` entries (the experiment file's side of
:mod:`pytest_evalrun.trial.network`): which hosts a trial's egress proxy may reach."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["LOOPBACK_NAMES", "Allow", "combined", "is_loopback_host", "norm_host", "parse_allow"]

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True)
class Allow:
    """One ``network: allow:`` entry: ``host``, ``host:port``, ``*.domain[:port]``, an IP
    address (``[v6]:port`` with a port)."""

    host: str
    port: int | None = None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        host = norm_host(host)
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    @property
    def loopback(self) -> bool:
        """Does it name the host's own loopback (``127.0.0.1``, ``localhost``, ``::1``)?"""
        return is_loopback_host(self.host)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def norm_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def is_loopback_host(host: str) -> bool:
    host = norm_host(host)
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_allow(text: str) -> Allow:
    """An allow entry, or :class:`ValueError` saying what is wrong with it."""
    raw = text.strip()
    if not raw or any(c.isspace() or ord(c) < 32 for c in raw) or "/" in raw or "@" in raw:
        raise ValueError(f"{text!r} is not a host or host:port")
    host, port_text = raw, None
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: unclosed '['")
        host, rest = raw[1:end], raw[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r} is not a host or host:port")
            port_text = rest[1:]
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
    elif raw.count(":") > 1:
        host = raw  # a bare IPv6 address
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    if host == "*" or "*" in host.removeprefix("*."):
        raise ValueError(f"{text!r}: a wildcard may only start a domain ('*.example.com')")
    norm = norm_host(host)
    if not norm or norm.startswith(".") or ".." in norm:
        raise ValueError(f"{text!r} is not a host or host:port")
    if ":" in norm:
        try:
            ipaddress.IPv6Address(norm)
        except ValueError:
            raise ValueError(
                f"{text!r}: write an IPv6 address with a port as [address]:port"
            ) from None
    return Allow(norm, port)


def combined(outer: tuple[Allow, ...] | None,
             inner: tuple[Allow, ...] | None) -> tuple[Allow, ...] | None:
    """A trial's allow list from the variant's ``network: {allow:}`` (``outer``) and a task's
    own (``inner``: a Harbor task's allowlist); None: no list, any public host. With only one,
    that one; with both, every entry of either: the variant's hosts are added to the task's,
    as Harbor's run-level ``extra_allowed_hosts`` are merged into a task's allowlist (a
    variant's agent that needs its model API or package registry on a task that names only
    what the task needs)."""
    if inner is None:
        return outer
    if outer is None:
        return inner
    return tuple(dict.fromkeys((*inner, *outer)))
