"""The model gateway's own cost: latency it adds per call and to a stream's first byte.

Run: python bench/bench_gateway.py [--calls N] [--streams N]
Against the package's mock model server (``evalrun mock-llm``, a process of its own), the same
requests go to the mock directly and through a gateway (a process of its own) in front of it,
interleaved, from this process:

* per call: N sequential non-streamed Chat Completions calls on a kept-alive connection; the
  added latency is p50/p99 (gateway) - p50/p99 (direct);
* first byte: 50 concurrent streamed Anthropic Messages calls (one thread and new connection
  each), time from connecting to the first body byte; added = p50/p99 (gateway) - p50/p99
  (direct).

Goals (issue 21): <= 2 ms added p50 per call, <= 5 ms added to the first byte.
Writes bench/out/gateway.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))


GOAL_CALL_MS = 2.0
GOAL_FIRST_BYTE_MS = 5.0
KEY = "sk-bench"
CHAT = json.dumps({"model": "m", "stream": False, "tools": [{"type": "function", "function": {
    "name": "bash"}}], "messages": [{"role": "user", "content": "hi"}]})
MESSAGES = json.dumps({"model": "m", "stream": True, "tools": [{"name": "Bash"}],
                       "messages": [{"role": "user", "content": "hi"}]})


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sequential(port: int, headers: dict[str, str], n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    for _ in range(n):
        start = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", CHAT, headers)
        response = conn.getresponse()
        response.read()
        out.append((time.perf_counter() - start) * 1e3)
    conn.close()
    return out


def first_bytes(port: int, headers: dict[str, str], n: int) -> list[float]:
    out: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n)

    def one() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        barrier.wait()
        start = time.perf_counter()  # a new connection each, as a CLI's first call makes
        conn.request("POST", "/v1/messages", MESSAGES, headers)
        response = conn.getresponse()
        response.read1(1)
        took = (time.perf_counter() - start) * 1e3
        response.read()
        conn.close()
        with lock:
            out.append(took)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


GATEWAY_PROCESS = """
import json, sys
from pytest_evalrun.gateway import Gateway
with Gateway(sys.argv[1], sys.argv[2]) as gw:
    print(json.dumps({"port": gw.port, "stand_in": gw.stand_in}), flush=True)
    sys.stdin.read()
    print(json.dumps({"counted": len(gw.ledger.calls)}), flush=True)
"""


def start(argv: list[str]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """A server process (the mock or a gateway, each with an interpreter of its own, as in a
    trial: the gateway runs in the pytest worker, which only waits for the CLI meanwhile)."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first: dict[str, Any] = json.loads(proc.stdout.readline())
    return proc, first


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    turns = [{"say": "x" * 600, "usage": {"input": 1000, "output": 50}}] * (
        args.rounds * (args.calls + args.streams) * 2 + 50)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "script.json"
        script.write_text(json.dumps({"turns": turns}))
        mock, info = start([sys.executable, "-m", "pytest_evalrun.cli.main", "mock-llm",
                            str(script)])
        url = info["url"]
        gateway, gw = start([sys.executable, "-c", GATEWAY_PROCESS, url, KEY])
        mock_port = int(url.rsplit(":", 1)[1])
        direct_h = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
        gw_h = {"Content-Type": "application/json", "Authorization": f"Bearer {gw['stand_in']}"}
        sequential(mock_port, direct_h, 20)
        sequential(gw["port"], gw_h, 20)  # warm-up
        calls: dict[str, list[float]] = {"direct": [], "gateway": []}
        firsts: dict[str, list[float]] = {"direct": [], "gateway": []}
        for _ in range(args.rounds):
            calls["direct"] += sequential(mock_port, direct_h, args.calls // args.rounds)
            calls["gateway"] += sequential(gw["port"], gw_h, args.calls // args.rounds)
            firsts["direct"] += first_bytes(mock_port, direct_h, args.streams)
            firsts["gateway"] += first_bytes(gw["port"], gw_h, args.streams)
        out_text, _ = gateway.communicate("", timeout=60)
        counted = json.loads(out_text.strip().splitlines()[-1])["counted"]
        mock.send_signal(signal.SIGTERM)
        mock.communicate(timeout=60)
    result = {
        "calls": len(calls["gateway"]), "streams": args.streams, "rounds": args.rounds,
        "gateway_calls_counted": counted,
        "call_ms": {k: {"p50": round(statistics.median(v), 3), "p99": round(pct(v, 0.99), 3)}
                    for k, v in calls.items()},
        "first_byte_ms": {k: {"p50": round(statistics.median(v), 3),
                              "p99": round(pct(v, 0.99), 3)} for k, v in firsts.items()},
    }
    added_call = result["call_ms"]["gateway"]["p50"] - result["call_ms"]["direct"]["p50"]
    added_call99 = result["call_ms"]["gateway"]["p99"] - result["call_ms"]["direct"]["p99"]
    added_first = (result["first_byte_ms"]["gateway"]["p50"]
                   - result["first_byte_ms"]["direct"]["p50"])
    added_first99 = (result["first_byte_ms"]["gateway"]["p99"]
                     - result["first_byte_ms"]["direct"]["p99"])
    result["added_ms"] = {"call_p50": round(added_call, 3), "call_p99": round(added_call99, 3),
                          "first_byte_p50": round(added_first, 3),
                          "first_byte_p99": round(added_first99, 3)}
    result["goals_met"] = {"call_p50": added_call <= GOAL_CALL_MS,
                           "first_byte_p50": added_first <= GOAL_FIRST_BYTE_MS}
    out = BENCH / "out"
    out.mkdir(exist_ok=True)
    (out / "gateway.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
