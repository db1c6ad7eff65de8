"""One mock model server on one 127.0.0.1 port serving every API by path, plus a refusing proxy.

Routes: ``POST /v1/messages`` (Anthropic; ``?beta=true`` too) and ``/v1/messages/count_tokens``,
``POST /v1/responses`` and ``/v1/chat/completions`` (OpenAI; also under ``/openai/v1`` or any other
prefix ending in those paths), ``POST /v1beta/models/<m>:generateContent`` and
``:streamGenerateContent`` (Gemini), ``POST /v1/logs|metrics|traces`` (OTLP/HTTP JSON, kept in
:attr:`MockLLM.otlp`). Anything else is answered 404 and logged. ``CONNECT`` is refused (proxy.py).

Every request that has tools takes the next turn of the script; one without tools is auxiliary
(a session title, a model router) and is answered from the script's ``aux_*`` fields.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import socket
import threading
import time
import zlib
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import anthropic, gemini_api, openai_chat, openai_responses
from .proxy import own_target, proxy_env, refusal
from .script import Script, Turn, find_cwd, resolve
from .wire import Answer, json_answer

SECRET_HEADERS = {"authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie",
                  "proxy-authorization", "openai-api-key"}
_GEMINI = re.compile(r"/models/([^/:]+):(generateContent|streamGenerateContent)$")


def redact(headers: dict[str, str]) -> dict[str, str]:
    """Headers with secret values replaced by ``<redacted>`` (the names stay, to show they came)."""
    return {k: ("<redacted>" if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


class MockLLM:
    """A scripted model server; a context manager (``with MockLLM(script) as mock: ...``)."""

    def __init__(self, script: Script | None = None, log_path: Path | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.script = script or Script(turns=[])
        self.host, self._port = host, port
        self.log_path = log_path
        #: Every HTTP request other than proxy attempts, in arrival order.
        self.requests: list[dict[str, Any]] = []
        #: Refused attempts to reach any other host (CONNECT or absolute-form requests).
        self.outside: list[dict[str, Any]] = []
        #: OTLP/HTTP payloads received (signal, body).
        self.otlp: list[dict[str, Any]] = []
        #: Each scripted turn as served: index, api, text, calls (resolved), usage.
        self.served: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> MockLLM:
        mock = self

        class Handler(_Handler):
            owner = mock

        self._server = _Server((self.host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> MockLLM:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    def proxy_env(self) -> dict[str, str]:
        """``HTTPS_PROXY`` and friends pointing at this server, the mock itself exempted."""
        return proxy_env(self.url)

    def load(self, script: Script) -> None:
        """Serve ``script`` from now on (the logs are kept)."""
        self.script = script

    def model_requests(self) -> list[dict[str, Any]]:
        """The logged requests that reached a model API (scripted, auxiliary or exhausted)."""
        return [r for r in self.requests if r.get("api") and r["answered"] != "otlp"]

    # ----------------------------------------------------------------- recording
    def record(self, entry: dict[str, Any], outside: bool = False) -> None:
        with self._lock:
            (self.outside if outside else self.requests).append(entry)
            if self.log_path is not None:
                with self.log_path.open("a") as fh:
                    fh.write(json.dumps(dict(entry, outside=outside)) + "\n")

    # ----------------------------------------------------------------- answering
    def answer(self, method: str, target: str, headers: dict[str, str],
               body: Any) -> Answer:
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        entry: dict[str, Any] = {"ts": time.time(), "method": method, "path": target,
                                 "headers": redact(headers), "body": body, "api": None,
                                 "answered": "404"}
        answer: Answer
        if method == "POST" and path.endswith(("/v1/logs", "/v1/metrics", "/v1/traces")):
            entry.update(api="otlp", answered="otlp")
            self.otlp.append({"signal": path.rsplit("/", 1)[1], "body": body})
            answer = json_answer({"partialSuccess": {}})
        elif method == "POST" and path.endswith("/messages/count_tokens"):
            entry.update(api="anthropic", answered="count_tokens")
            answer = anthropic.count_tokens(body if isinstance(body, dict) else {})
        elif method == "POST" and isinstance(body, dict) and path.endswith("/messages"):
            entry["api"] = "anthropic"
            answer = self._model(entry, body, anthropic, lambda t: anthropic.answer(t, body))
        elif method == "POST" and isinstance(body, dict) and path.endswith("/responses"):
            entry["api"] = "openai-responses"
            answer = self._model(entry, body, openai_responses,
                                 lambda t: openai_responses.answer(t, body))
        elif method == "POST" and isinstance(body, dict) and path.endswith("/chat/completions"):
            entry["api"] = "openai-chat"
            answer = self._model(entry, body, openai_chat, lambda t: openai_chat.answer(t, body))
        elif method == "POST" and isinstance(body, dict) and _GEMINI.search(path):
            match = _GEMINI.search(path)
            assert match is not None
            model, verb = match.groups()
            stream = verb == "streamGenerateContent"
            sse = query.get("alt") == ["sse"]
            entry["api"] = "gemini"
            answer = self._model(entry, body, gemini_api,
                                 lambda t: gemini_api.answer(t, body, model, stream, sse))
        else:
            answer = json_answer({"error": {"message": f"mock: no route for {method} {path}"}},
                                 404)
        entry["status"] = answer.status
        self.record(entry)
        return answer

    def _model(self, entry: dict[str, Any], body: dict[str, Any], api: Any,
               render: Any) -> Answer:
        offered = api.tool_names(body)
        if api.is_aux(body):
            text = self.script.aux_text
            if api is gemini_api:
                text = gemini_api.aux_text(body, text, self.script.aux_json)
            entry["answered"] = "aux"
            return render(Turn(usage=self.script.aux_usage, text=text))  # type: ignore[no-any-return]
        taken = self.script.take()
        if taken is None:
            entry["answered"] = "exhausted"
            return render(Turn(usage=self.script.aux_usage,  # type: ignore[no-any-return]
                               text=self.script.exhausted_text,
                               error_status=self.script.exhausted_status))
        index, turn = taken
        turn = resolve(turn, find_cwd(body), offered)
        entry["answered"] = f"turn {index}"
        entry["served"] = {
            "index": index, "api": entry["api"], "text": turn.text,
            "calls": [{"name": c.name, "input": c.input} for c in turn.calls],
            "usage": asdict(turn.usage), "error_status": turn.error_status,
        }
        with self._lock:
            self.served.append(entry["served"])
        return render(turn)  # type: ignore[no-any-return]


class _Server(ThreadingHTTPServer):
    #: Many CLIs (or a benchmark's 50 streams) connect at once: the default backlog is 5.
    request_queue_size = 128


class _Handler(BaseHTTPRequestHandler):
    owner: MockLLM
    protocol_version = "HTTP/1.1"
    server_version = "mockllm/1"

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK hold every small response for ~40 ms.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> Any:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                raw += self.rfile.read(size)
                self.rfile.readline()
        else:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = self.headers.get("Content-Encoding", "").lower()
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding == "deflate":
            raw = zlib.decompress(raw)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return {"_raw_bytes": len(raw), "_content_type": self.headers.get("Content-Type")}

    def _handle(self) -> None:
        body = self._body()
        target = own_target(self.path, {self.owner.port})
        if target is None:
            self.owner.record(refusal(self.command, self.path), outside=True)
            self._send(json_answer({"error": "mock proxy: outside connections are refused"}, 403))
            return
        self._send(self.owner.answer(self.command, target, dict(self.headers.items()), body))

    def _send(self, answer: Answer) -> None:
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            for key, value in answer.headers.items():
                self.send_header(key, value)
            if answer.stream:
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                for chunk in answer.chunks:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            else:
                data = b"".join(answer.chunks)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def do_CONNECT(self) -> None:
        self.owner.record(refusal("CONNECT", self.path), outside=True)
        self.send_response(403, "Forbidden by mockllm")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
