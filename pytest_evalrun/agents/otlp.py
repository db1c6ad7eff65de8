"""OpenTelemetry for presets: a local OTLP/HTTP (JSON) receiver run for one trial, and the
conversion of Gemini CLI's telemetry file (concatenated pretty-printed JSON) to JSONL.

The receiver listens on 127.0.0.1 only, accepts ``POST /v1/logs|metrics|traces`` with a JSON
body (gzip or not) and appends each body as one line to the trial's ``<cli>-otel.jsonl``: the
OTLP/JSON file exporter's format (one export request per line). Protobuf bodies are answered
415, so an exporter configured for protobuf fails visibly instead of recording nothing.
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..store.atomic import strict_dumps

#: Largest OTLP request body accepted (bytes).
MAX_BODY = 32 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not self.path.split("?")[0].rstrip("/").endswith(("/v1/logs", "/v1/metrics",
                                                             "/v1/traces")):
            self._reply(404)
            return
        if length > MAX_BODY:
            self._reply(413)
            return
        body = self.rfile.read(length)
        if "gzip" in (self.headers.get("Content-Encoding") or ""):
            try:
                body = gzip.decompress(body)
            except OSError:
                self._reply(400)
                return
        if "json" not in (self.headers.get("Content-Type") or "json"):
            self._reply(415)
            return
        try:
            record = json.loads(body)
        except (ValueError, RecursionError):
            self._reply(400)
            return
        self.server.append(record)
        self._reply(200)

    def _reply(self, status: int) -> None:
        data = b"{}"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, out: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.out = out
        self.lock = threading.Lock()
        self.count = 0

    def append(self, record: Any) -> None:
        """Append one record (strict JSON: a NaN becomes null) to the file, never through a
        link or into a FIFO the agent may have put in its place (then the record is dropped:
        a blocked write would stall the trial)."""
        line = strict_dumps(record, separators=(",", ":")) + "\n"
        flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK
                 | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        with self.lock:
            try:
                fd = os.open(self.out, flags, 0o644)
            except OSError:
                return
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    return
                fh.write(line)
                self.count += 1


class OtlpReceiver:
    """``with OtlpReceiver(path) as receiver: ... receiver.endpoint``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> OtlpReceiver:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._server = _Server(self.out)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def count(self) -> int:
        return self._server.count if self._server is not None else 0


def otlp_lines_from_pretty_json(text: str) -> str:
    """Concatenated JSON documents (pretty-printed or not) as JSONL text."""
    decoder = json.JSONDecoder()
    lines = []
    index, end = 0, len(text)
    while index < end:
        while index < end and text[index] in " \t\r\n,":
            index += 1
        if index >= end:
            break
        try:
            value, index = decoder.raw_decode(text, index)
        except ValueError:
            next_start = text.find("\n{", index + 1)
            if next_start < 0:
                break
            index = next_start + 1
            continue
        lines.append(json.dumps(value, separators=(",", ":")))
    return "\n".join(lines) + "\n" if lines else ""
