"""The model gateway: an HTTP/1.1 reverse proxy between an agent's CLI and its model API.

Run by the plugin outside the sandbox, one per trial, on an asyncio loop in its own thread. The
CLI is given the gateway's base URL and a per-trial stand-in key; the gateway checks the stand-in,
puts the real key in its place (the same header or query parameter the CLI used) and forwards the
request to the real endpoint. Responses are passed through as they arrive: status, headers,
errors and streams (server-sent events, chunked bodies, re-chunked to the CLI piece by piece, in
bounded memory); a retry is the CLI's own and is forwarded like any request. On the way, the
model API's own usage fields of each model call are read (:mod:`.usage`) into the trial's
:class:`~.ledger.Ledger`, the budget is checked before each model call, and an exchange can be
recorded or answered from a recording (:mod:`.recording`).

What the gateway answers itself, always as a JSON error in the API's shape: a wrong stand-in key
(401), a spent budget (402, which the CLIs report and do not retry), an upstream that does not
accept a connection (502), a request with no recorded answer when replaying (502,
``replay_unmatched``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from .ledger import Budget, CallRecord, Ledger
from .usage import Meter, api_of, request_facts

#: Headers that carry an API key (their values are never recorded or logged).
KEY_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key", "openai-api-key")
#: Query parameters that carry an API key.
KEY_PARAMS = ("key", "api_key")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade", "proxy-connection"}
#: Largest request body accepted (bytes).
MAX_REQUEST = 64 * 1024 * 1024
#: Longest header section accepted (bytes).
MAX_HEAD = 256 * 1024
#: Bytes read from the upstream at a time.
READ_SIZE = 64 * 1024
#: Seconds to connect to the upstream.
CONNECT_TIMEOUT = 30.0
#: Idle upstream connections kept per gateway.
POOL_SIZE = 64


class Refusal(Exception):
    """The gateway answers the request itself (status, message, kind)."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def error_body(status: int, message: str, kind: str) -> bytes:
    """An error every API client reads: Anthropic's ``type/error``, OpenAI's ``error.message``
    and Gemini's ``error.code/status`` in one document."""
    return json.dumps({"type": "error", "error": {
        "type": f"evalrun_{kind}", "message": message, "code": status,
        "status": "RESOURCE_EXHAUSTED" if kind == "budget" else "UNAVAILABLE"}}).encode()


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


@dataclass
class Exchange:
    """A request as sent upstream (key-free) and what it was answered, for a recorder."""

    method: str
    path: str
    body: bytes
    status: int
    headers: list[tuple[str, str]]
    chunks: list[bytes]


#: A replay source: request (method, path, body) -> recorded answer, or None when unmatched.
Replayer = Callable[[str, str, bytes], Exchange | None]
#: A recorder: called with every finished exchange.
Recorder = Callable[[Exchange], None]


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise Refusal(431, "request header section too large", "bad_request") from None
    return head if len(head) <= MAX_HEAD else None


def _parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers.append((key.strip(), value.strip()))
    return lines[0], headers


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]],
                     limit: int) -> bytes:
    lower = {k.lower(): v for k, v in headers}
    if "chunked" in lower.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()).strip():
                    pass
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readline()
            if len(out) > limit:
                raise Refusal(413, "request body too large", "bad_request")
    length = int(lower.get("content-length") or 0)
    if length > limit:
        raise Refusal(413, "request body too large", "bad_request")
    return await reader.readexactly(length) if length else b""


class ChunkDecoder:
    """Decodes a chunked body fed in arbitrary pieces: :meth:`feed` returns how many bytes
    belonged to the body (the rest, none from a well-behaved server, is not passed on) and the
    payload pieces found; :attr:`done` after the last chunk and its trailers."""

    def __init__(self) -> None:
        self.done = False
        self._line = b""
        self._remaining = 0
        #: "size", "data", "crlf" (after a chunk's data), "trailer"
        self._state = "size"

    def feed(self, data: bytes) -> tuple[int, list[bytes]]:
        pieces: list[bytes] = []
        i, n = 0, len(data)
        while i < n and not self.done:
            if self._state == "data":
                take = min(self._remaining, n - i)
                pieces.append(data[i:i + take])
                self._remaining -= take
                i += take
                if not self._remaining:
                    self._state = "crlf"
                continue
            end = data.find(b"\n", i)
            if end < 0:
                self._line += data[i:]
                if len(self._line) > MAX_HEAD:
                    raise ValueError("chunk header too long")
                return n, pieces
            line, self._line = (self._line + data[i:end]).strip(), b""
            i = end + 1
            if self._state == "size":
                size = int(line.split(b";")[0] or b"0", 16)
                if size:
                    self._remaining, self._state = size, "data"
                else:
                    self._state = "trailer"
            elif self._state == "crlf":
                self._state = "size"
            elif not line:  # the blank line that ends the trailers
                self.done = True
        return i, pieces


class Gateway:
    """One trial's gateway; a context manager (``with Gateway(...) as gw: gw.url``).

    ``upstream``: the real endpoint's base URL (scheme, host, port; its path is kept by the CLI,
    which is given the gateway's origin with the same path). ``key``: the real key (None: the
    request goes out without one and the upstream answers as it does). ``unix``: listen on this
    Unix socket instead of a TCP port on 127.0.0.1.
    """

    def __init__(self, upstream: str, key: str | None = None, *,
                 pricing: Any = None, budget: Budget | None = None,
                 unix: Path | None = None, recorder: Recorder | None = None,
                 replayer: Replayer | None = None) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {upstream!r}")
        self.upstream = upstream
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._host_header = parts.netloc.rsplit("@", 1)[-1]
        self.base_path = parts.path.rstrip("/")
        self.key = key or None
        #: The per-trial stand-in the CLI is given instead of the key.
        self.stand_in = "evalrun-" + secrets.token_hex(16)
        self.ledger = Ledger(pricing=pricing, budget=budget)
        self.unix = unix
        self.recorder = recorder
        self.replayer = replayer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Gateway:
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="evalrun-gateway", daemon=True)
        self._thread.start()
        ready.wait()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), loop).result(30)
        return self

    async def _listen(self) -> asyncio.Server:
        if self.unix is not None:
            with contextlib.suppress(FileNotFoundError):
                self.unix.unlink()
            return await asyncio.start_unix_server(self._client, path=str(self.unix),
                                                   limit=MAX_HEAD)
        return await asyncio.start_server(self._client, "127.0.0.1", 0, limit=MAX_HEAD)

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            for _, writer in self._pool:
                writer.close()
            self._pool.clear()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        with contextlib.suppress(Exception):
            loop.close()
        self._loop = None
        if self.unix is not None:
            with contextlib.suppress(OSError):
                self.unix.unlink()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None and self.unix is None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` (TCP mode)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL to give the CLI in place of the upstream's (TCP mode)."""
        return self.origin + self.base_path

    # ------------------------------------------------------------------ serving
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                try:
                    head = await _read_head(reader)
                    if head is None:
                        return
                    line, headers = _parse_head(head)
                    method, target, _ = [*line.split(" ", 2), "", ""][:3]
                    body = await _read_body(reader, headers, MAX_REQUEST)
                except Refusal as refusal:
                    await self._answer(writer, refusal.status,
                                       error_body(refusal.status, refusal.message, refusal.kind))
                    return
                except (asyncio.IncompleteReadError, ValueError, ConnectionError):
                    return
                request = Request(method, target, headers, body)
                keep = await self._serve(request, writer)
                if not keep or (request.header("connection") or "").lower() == "close":
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            if task is not None:
                self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, status: int, body: bytes,
                      content_type: str = "application/json") -> None:
        writer.write(f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                     f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
                     .encode() + body)
        await writer.drain()

    def _check_key(self, request: Request) -> bool:
        for key, value in request.headers:
            if key.lower() in KEY_HEADERS and self.stand_in in value:
                return True
        query = urlsplit(request.target).query
        return any(k in KEY_PARAMS and v == self.stand_in for k, v in parse_qsl(query))

    def _outgoing(self, request: Request) -> tuple[str, list[tuple[str, str]]]:
        """The request's target and headers as sent upstream: the stand-in replaced by the real
        key (or dropped when there is none), hop-by-hop headers dropped, identity encoding."""
        parts = urlsplit(request.target)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(k in KEY_PARAMS for k, _ in pairs):
            pairs = [(k, self.key or "") if k in KEY_PARAMS and v == self.stand_in else (k, v)
                     for k, v in pairs if not (k in KEY_PARAMS and v == self.stand_in
                                               and not self.key)]
        target = parts.path + (f"?{urlencode(pairs)}" if pairs else "")
        headers = []
        for key, value in request.headers:
            lower = key.lower()
            if lower in HOP_BY_HOP or lower in ("host", "content-length", "accept-encoding"):
                continue
            if lower in KEY_HEADERS and self.stand_in in value:
                if not self.key:
                    continue
                value = value.replace(self.stand_in, self.key)
            headers.append((key, value))
        headers += [("Host", self._host_header), ("Accept-Encoding", "identity"),
                    ("Content-Length", str(len(request.body)))]
        return target, headers

    async def _serve(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; whether the client connection may be kept."""
        path = urlsplit(request.target).path
        api = api_of(path) if request.method == "POST" else None
        record = self.ledger.open(request.method, request.target, api)
        started = time.perf_counter()
        if api is not None:
            record.model, record.streamed, record.tools = request_facts(api, request.body)
            record.streamed = record.streamed or "streamGenerateContent" in path
        try:
            if not self._check_key(request):
                raise Refusal(401, "evalrun gateway: the request did not carry this trial's "
                                   "key", "key")
            if api is not None:
                spent = self.ledger.over_budget(record)
                if spent is not None:
                    self.ledger.budget_stop = self.ledger.budget_stop or spent
                    raise Refusal(402, f"evalrun: the trial's budget is spent: {spent}; no "
                                       "further model calls are allowed", "budget")
            target, headers = self._outgoing(request)
            if self.replayer is not None:
                return await self._replay(request, target, record, writer, started)
            return await self._forward(request, target, headers, record, writer, started)
        except Refusal as refusal:
            record.status, record.refused, record.error = (refusal.status, refusal.kind,
                                                           refusal.message)
            record.latency_s = time.perf_counter() - started
            await self._answer(writer, refusal.status,
                               error_body(refusal.status, refusal.message, refusal.kind))
            return True

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        while self._pool:
            reader, writer = self._pool.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer, True
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port, ssl=self._ssl,
                                        limit=MAX_HEAD),
                CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            raise Refusal(502, f"evalrun gateway: the model endpoint {self.upstream} does not "
                               f"accept connections: {exc}", "unreachable") from None
        return reader, writer, False

    async def _forward(self, request: Request, target: str, headers: list[tuple[str, str]],
                       record: CallRecord, writer: asyncio.StreamWriter,
                       started: float) -> bool:
        head = (f"{request.method} {target} HTTP/1.1\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1")
        raw: bytes | None = None
        for attempt in (0, 1):
            up_reader, up_writer, pooled = await self._connect()
            try:
                up_writer.write(head + request.body)
                await up_writer.drain()
                raw = await _read_head(up_reader)
                if raw is None:
                    raise ConnectionError("upstream closed the connection")
                break
            except (ConnectionError, OSError):
                up_writer.close()
                if pooled and attempt == 0:
                    continue  # a stale kept-alive connection: once more on a fresh one
                raise Refusal(502, f"evalrun gateway: the model endpoint {self.upstream} "
                                   "closed the connection", "unreachable") from None
        assert raw is not None
        record.first_byte_s = time.perf_counter() - started
        status_line, up_headers = _parse_head(raw)
        status = int(status_line.split(" ", 2)[1])
        record.status = status
        lower = {k.lower(): v for k, v in up_headers}
        chunked = "chunked" in lower.get("transfer-encoding", "").lower()
        length = None if chunked or "content-length" not in lower else int(lower["content-length"])
        bodyless = request.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        close_delimited = not bodyless and not chunked and length is None
        reuse = not close_delimited and "close" not in lower.get("connection", "").lower()
        streamed = "text/event-stream" in lower.get("content-type", "") or chunked
        meter = Meter(record.api, streamed) if record.api is not None else None
        if meter is None and status >= 400:
            meter = Meter("", False)  # for the error message
        keep_chunks: list[bytes] | None = [] if self.recorder is not None else None
        out_headers = [(k, v) for k, v in up_headers
                       if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
        # A chunked body is passed on as it came, framing and all (decoded on the side for the
        # meter); a close-delimited one is chunked here.
        rechunk = not bodyless and length is None and not chunked
        framing = ("Transfer-Encoding: chunked\r\n" if rechunk or chunked
                   else "" if bodyless else f"Content-Length: {length}\r\n")
        writer.write((f"HTTP/1.1 {status_line.split(' ', 1)[1]}\r\n"
                      + "".join(f"{k}: {v}\r\n" for k, v in out_headers) + framing + "\r\n")
                     .encode("latin-1"))

        async def send(data: bytes) -> None:
            if meter is not None:
                meter.feed(data)
            if keep_chunks is not None:
                keep_chunks.append(data)
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n" if rechunk else data)
            await writer.drain()

        client_ok = True
        try:
            if chunked:
                decoder = ChunkDecoder()
                while not decoder.done:
                    data = await up_reader.read(READ_SIZE)
                    if not data:
                        raise ConnectionError("upstream ended mid-body")
                    used, pieces = decoder.feed(data)
                    for piece in pieces:
                        if meter is not None:
                            meter.feed(piece)
                        if keep_chunks is not None:
                            keep_chunks.append(piece)
                    writer.write(data[:used])
                    await writer.drain()
            elif length is not None:
                remaining = length
                while remaining:
                    data = await up_reader.read(min(remaining, READ_SIZE))
                    if not data:
                        raise ConnectionError("upstream ended mid-body")
                    remaining -= len(data)
                    await send(data)
            elif not bodyless:
                while data := await up_reader.read(READ_SIZE):
                    await send(data)
            if rechunk:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            reuse = client_ok = False
            record.note = f"stream cut: {exc}"
        finally:
            if reuse:
                if len(self._pool) < POOL_SIZE:
                    self._pool.append((up_reader, up_writer))
                else:
                    up_writer.close()
            else:
                up_writer.close()
        record.latency_s = time.perf_counter() - started
        self._settle(record, meter)
        if self.recorder is not None and keep_chunks is not None:
            self.recorder(Exchange(request.method, target, request.body, status, out_headers,
                                   keep_chunks))
        return client_ok

    def _settle(self, record: CallRecord, meter: Meter | None) -> None:
        if meter is not None:
            meter.finish()
            if record.status is not None and record.status < 400:
                record.tokens = meter.tokens
            record.model = meter.model or record.model
            record.error = meter.error if record.status and record.status >= 400 else None
            record.note = record.note or meter.note
            if record.api is not None and record.status == 200 and meter.tokens is None:
                record.note = record.note or "the response carried no usage"
        self.ledger.close(record)

    async def _replay(self, request: Request, target: str, record: CallRecord,
                      writer: asyncio.StreamWriter, started: float) -> bool:
        assert self.replayer is not None
        found = self.replayer(request.method, target, request.body)
        if found is None:
            raise Refusal(502, f"evalrun replay: no recorded answer for {request.method} "
                               f"{target.split('?', 1)[0]} (call {record.seq} of the trial)",
                          "replay_unmatched")
        record.first_byte_s = time.perf_counter() - started
        record.status = found.status
        lower = {k.lower(): v for k, v in found.headers}
        streamed = "text/event-stream" in lower.get("content-type", "")
        meter = Meter(record.api or "", streamed) if (record.api or found.status >= 400) else None
        writer.write((f"HTTP/1.1 {found.status} {_REASONS.get(found.status, 'OK')}\r\n"
                      + "".join(f"{k}: {v}\r\n" for k, v in found.headers)
                      + "Transfer-Encoding: chunked\r\n\r\n").encode("latin-1"))
        for data in found.chunks:
            if meter is not None:
                meter.feed(data)
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        record.latency_s = time.perf_counter() - started
        self._settle(record, meter)
        return True


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
            403: "Forbidden", 404: "Not Found", 413: "Payload Too Large", 429: "Too Many Requests",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable"}
