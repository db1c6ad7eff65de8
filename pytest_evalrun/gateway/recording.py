"""Record a trial's model exchanges (``--eval-record DIR``) and answer from them
(``--eval-replay DIR``) with no network.

One file per trial, ``DIR/<variant>/<task>/<trial>.jsonl``: a header line, then one line per
exchange as it went upstream: method, path (key parameters removed), the request body, status,
response headers (cookies dropped) and the response body in the pieces it arrived in (base64).
Keys are never written: the gateway records the request as the CLI sent it to the gateway,
which only ever carried the stand-in, and headers are not kept.

Replay answers the n-th request of a method and path with the n-th recorded one of that method
and path (request bodies differ between runs: session ids, times, paths); a request with no
recorded answer is refused and named, and the trial is an error (``replay_unmatched``).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import defaultdict
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..store.atomic import write_text_atomic
from .server import KEY_PARAMS, Exchange

FORMAT = "evalrun-gateway-recording/1"
DROPPED_HEADERS = {"set-cookie", "date", "content-length", "transfer-encoding", "connection"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def clean_path(target: str) -> str:
    """``target`` without key query parameters."""
    parts = urlsplit(target)
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in KEY_PARAMS]
    return parts.path + (f"?{urlencode(pairs)}" if pairs else "")


def trial_file(root: Path, name: str) -> Path:
    """The recording of trial ``name`` (``variant/task/trial``) under ``root``."""
    parts = [_UNSAFE.sub("_", p) or "_" for p in name.split("/") if p not in ("", ".", "..")]
    return root.joinpath(*parts).with_suffix(".jsonl")


class Recording:
    """One trial's recording, being written (``replay=False``) or served."""

    def __init__(self, root: Path, name: str, replay: bool) -> None:
        self.root, self.name, self.replay = root, name, replay
        self.path = trial_file(root, name)
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._recorded: dict[tuple[str, str], list[Exchange]] = defaultdict(list)
        self._served: dict[tuple[str, str], int] = defaultdict(int)
        #: Set when the recording could not be read: why.
        self.problem: str | None = None
        if replay:
            self._load()

    def _load(self) -> None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            self.problem = f"no recording of this trial at {self.path}: {exc.strerror or exc}"
            return
        for line in lines[1:]:
            try:
                doc = json.loads(line)
                exchange = Exchange(doc["method"], doc["path"], b"", int(doc["status"]),
                                    [(str(k), str(v)) for k, v in doc["headers"]],
                                    [base64.b64decode(c) for c in doc["chunks"]])
            except (ValueError, KeyError, TypeError) as exc:
                self.problem = f"{self.path}: a damaged line: {exc}"
                continue
            self._recorded[(exchange.method, exchange.path)].append(exchange)

    def record(self, exchange: Exchange) -> None:
        line = json.dumps({
            "method": exchange.method, "path": clean_path(exchange.path),
            "request": exchange.body.decode("utf-8", errors="replace"),
            "status": exchange.status,
            "headers": [[k, v] for k, v in exchange.headers if k.lower() not in DROPPED_HEADERS],
            "chunks": [base64.b64encode(c).decode("ascii") for c in exchange.chunks],
        }, ensure_ascii=False)
        with self._lock:
            self._lines.append(line)

    def answer(self, method: str, target: str, body: bytes) -> Exchange | None:
        key = (method, clean_path(target))
        with self._lock:
            index = self._served[key]
            found = self._recorded.get(key, [])
            if index >= len(found):
                return None
            self._served[key] = index + 1
            return found[index]

    def close(self) -> None:
        if self.replay:
            return
        with self._lock:
            lines = [json.dumps({"format": FORMAT, "trial": self.name}), *self._lines]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, "\n".join(lines) + "\n")
