"""The mock server as an HTTP(S) proxy that lets nothing out.

``CONNECT host:port`` is answered 403 and logged; so is an absolute-form request
(``GET http://host/...``) for any host other than the mock itself. Point a CLI's ``HTTPS_PROXY``
and ``HTTP_PROXY`` at the mock (and exempt the mock with ``NO_PROXY``): then every attempt to
reach the outside shows up in :attr:`MockLLM.outside` instead of leaving the machine.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit


def proxy_env(url: str) -> dict[str, str]:
    """Environment variables that send a CLI's outside traffic to the refusing proxy at ``url``."""
    no_proxy = "127.0.0.1,localhost,::1"
    return {
        "HTTPS_PROXY": url, "https_proxy": url, "HTTP_PROXY": url, "http_proxy": url,
        "ALL_PROXY": url, "all_proxy": url, "NO_PROXY": no_proxy, "no_proxy": no_proxy,
    }


def own_target(request_target: str, own_ports: set[int]) -> str | None:
    """For an absolute-form target naming the mock itself, its path; None for any other host.

    Origin-form targets (``/v1/...``) are returned unchanged.
    """
    if request_target.startswith("/"):
        return request_target
    parts = urlsplit(request_target)
    if parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.port in own_ports:
        return parts.path + (f"?{parts.query}" if parts.query else "")
    return None


def refusal(method: str, target: str) -> dict[str, Any]:
    """The log entry of a refused outside connection."""
    host = target if method == "CONNECT" else (urlsplit(target).netloc or target)
    return {"ts": time.time(), "method": method, "target": target, "host": host}
