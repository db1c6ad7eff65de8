"""Headless Chromium for the HTML report's tests and benchmark: screenshots, the DOM after the
page's script ran, a proxy that records every connection, and a PNG reader (standard library).

Chromium is Debian's package (``tests/tools/install_chromium.sh``); tests that need it skip when
it is absent.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = shutil.which("chromium")
SKIP_REASON = "chromium is not installed (tests/tools/install_chromium.sh installs it)"

#: Hosts of Chromium's own background requests (extension and component updates, sign-in), made
#: whatever page is open; Debian's wrapper enables them (/etc/chromium.d/). A page's request to
#: any other host counts as leaving the file.
BROWSER_SERVICE_HOSTS = ("google.com", "googleapis.com", "gvt1.com", "gstatic.com")

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-features=Translate,OptimizationHints,MediaRouter,NetworkTimeServiceQuerying",
)


def run_chromium(
    args: Sequence[str], url: str, *, timeout: float = 180.0
) -> subprocess.CompletedProcess[bytes]:
    """Run headless Chromium once on ``url`` with a fresh profile."""
    assert CHROMIUM, SKIP_REASON
    with tempfile.TemporaryDirectory(prefix="evalrun-chromium-") as profile:
        return subprocess.run(
            [CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *args, url],
            capture_output=True,
            timeout=timeout,
            check=False,
        )


def screenshot(
    url: str, png: Path, *, size: tuple[int, int] = (1280, 2000), budget_ms: int = 5000
) -> None:
    proc = run_chromium(
        [
            f"--screenshot={png}",
            f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={budget_ms}",
        ],
        url,
    )
    assert png.is_file(), proc.stderr.decode(errors="replace")[-2000:]


def dump_dom(url: str, *, budget_ms: int = 5000, extra: Sequence[str] = ()) -> str:
    """The DOM as serialised after the page's scripts ran."""
    proc = run_chromium([f"--virtual-time-budget={budget_ms}", *extra, "--dump-dom"], url)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc.stdout.decode("utf-8", errors="replace")


class RecordingProxy:
    """A local socket given to Chromium as its HTTP proxy: it records the first line of every
    connection (``GET http://host/...`` or ``CONNECT host:443``) and answers nothing."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    first = conn.recv(4096).split(b"\r\n", 1)[0]
                except OSError:
                    first = b"?"
            with self._lock:
                self.requests.append(first.decode("latin-1"))

    def page_requests(self) -> list[str]:
        """Requests to hosts other than Chromium's own services."""
        with self._lock:
            return [r for r in self.requests if not _is_browser_service(r)]

    def close(self) -> None:
        self.sock.close()


def _is_browser_service(request_line: str) -> bool:
    parts = request_line.split()
    if len(parts) < 2:
        return False
    target = parts[1]
    host = target.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].lower()
    return any(host == h or host.endswith("." + h) for h in BROWSER_SERVICE_HOSTS)


@contextmanager
def recording_proxy() -> Iterator[RecordingProxy]:
    proxy = RecordingProxy()
    try:
        yield proxy
    finally:
        proxy.close()


# --------------------------------------------------------------------------------------------
# PNG (8-bit RGB / RGBA, non-interlaced: what Chromium writes)


def png_pixels(path: Path) -> tuple[int, int, int, list[bytes]]:
    """``(width, height, bytes per pixel, rows)``: each row the unfiltered pixel bytes."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    width = height = bpp = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6) and body[12] == 0, "unsupported PNG"
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    prev = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind_ = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(kind_, line, prev, bpp)
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def _unfilter(kind: int, line: bytearray, prev: bytearray, bpp: int) -> None:
    n = len(line)
    if kind == 1:
        for i in range(bpp, n):
            line[i] = (line[i] + line[i - bpp]) & 255
    elif kind == 2:
        line[:] = bytes((a + b) & 255 for a, b in zip(line, prev, strict=True))
    elif kind == 3:
        for i in range(n):
            left = line[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + (left + prev[i]) // 2) & 255
    elif kind == 4:
        for i in range(n):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
            line[i] = (line[i] + pred) & 255
    else:
        assert kind == 0, f"bad PNG filter {kind}"


def png_colours(path: Path) -> set[tuple[int, int, int]]:
    """The distinct RGB colours of a PNG."""
    width, _, bpp, rows = png_pixels(path)
    colours: set[tuple[int, int, int]] = set()
    for row in rows:
        colours.update(
            (row[i], row[i + 1], row[i + 2]) for i in range(0, width * bpp, bpp)
        )
    return colours
