"""What a sandboxed trial's own network costs (issue 19): per step, per trial, per request.

    python bench/bench_egress.py [N]

1. ms per sandboxed ``true`` step (built per step, as a trial does): the host's network
   (0.3.0's default), its own network with nothing else (``network: false`` and ``sandbox:
   {unix_sockets: true}``), its own network and bubblewrap's seccomp filter (``network:
   false``), its own network with the egress proxy's forward (the default now: the starter in
   front of the command hands its listening socket out).
2. ms to start and stop one trial's egress proxy (:class:`~pytest_evalrun.trial.egress.Egress`).
3. Latency per HTTP request (a new connection each, as most clients through a proxy make):
   p50/p99 from a client on the host straight to a local server, and from a client inside the
   sandbox through its forward (accepted by the plugin outside) -> proxy -> server.
4. Throughput of one 64 MiB download, the same two ways.
5. Whole trials: ``pytest`` of 40 serial sandboxed trials (agent and verify ``true``), with the
   default network (starter and egress proxy) and with ``network: false`` and ``sandbox:
   {unix_sockets: true}`` (its own network, no starter: the closest to 0.3.0's steps), as
   seconds per trial.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pytest_evalrun.trial.bwrapprobe import probe
from pytest_evalrun.trial.egress import Egress
from pytest_evalrun.trial.network import NetLog, parse_allow
from pytest_evalrun.trial.process import run_step
from pytest_evalrun.trial.sandbox import Sandbox, SandboxPolicy, resolve

HOST = "127.0.0.2"
BIG = 64 * 1024 * 1024

CLIENT = r"""
import json, socket, sys, time
host, port, n, big, proxy = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:6]
def get(path):
    if proxy:
        ph, pp = proxy.rsplit(":", 1)
        s = socket.create_connection((ph, int(pp)))
        s.sendall(f"GET http://{host}:{port}{path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    else:
        s = socket.create_connection((host, port))
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    total = 0
    while True:
        data = s.recv(1 << 20)
        if not data:
            break
        total += len(data)
    s.close()
    return total
lat = []
for _ in range(n):
    t = time.perf_counter()
    get("/small")
    lat.append((time.perf_counter() - t) * 1000)
t = time.perf_counter()
size = get(big)
print(json.dumps({"lat": lat, "mbps": size / (time.perf_counter() - t) / 1e6}))
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"x" * (BIG if self.path == "/big" else 64)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def per_step(fn: Callable[[], object], n: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    found = probe()
    if not found.available or not found.network_isolation:
        sys.exit(f"bwrap with --unshare-net cannot run here: {found.reason}")
    root = Path(tempfile.mkdtemp(prefix="evalrun-bench-egress-"))
    ws, out = root / "ws", root / "out.txt"
    ws.mkdir()
    env = dict(os.environ)
    own = resolve("bwrap")
    host_net = dataclasses.replace(own, network_isolation=False)
    server = http.server.ThreadingHTTPServer((HOST, 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    log = NetLog(root / "network.log")
    egress = Egress((parse_allow(f"{HOST}:{port}"),), log)

    def boxed(isolation: object, forwards: bool, unix: bool = False) -> Callable[[], object]:
        def step() -> object:
            policy = SandboxPolicy(mode="bwrap", workspace=ws, unix_sockets=unix,
                                   forwards=egress.forwards if forwards else ())  # fmt: skip
            box = Sandbox(policy, isolation=isolation)  # type: ignore[arg-type]
            with box.launch(["true"], ws) as go:
                return run_step(go.argv, cwd=go.cwd, env=env, timeout=60, output=out,
                                pass_fds=go.pass_fds)  # fmt: skip

        return step

    print(f"bwrap {found.path} ({found.version}); {n} runs each, interleaved; median, p90")
    steps = {
        "step: host network (0.3.0 default)": boxed(host_net, False),
        "step: own network, nothing else": boxed(own, False, unix=True),
        "step: own network + seccomp, no forward": boxed(own, False),
        "step: own network + egress forward": boxed(own, True),
    }
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for fn in steps.values():
        fn()  # warm up
    for _ in range(n):  # round robin: a change of load hits every configuration alike
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1000)
    for name, values in samples.items():
        print(f"{name:40s} {statistics.median(values):7.2f} ms  p90 {pct(values, 0.9):7.2f} ms")
    results: dict[str, float] = {}

    def start_stop() -> None:
        Egress(None, NetLog(root / "x.log")).close()

    results["egress start+stop"] = per_step(start_stop, n)
    print(f"{'egress proxy start+stop per trial':40s} {results['egress start+stop']:7.2f} ms")

    client = root / "client.py"
    client.write_text(CLIENT)
    direct = subprocess.run(
        [sys.executable, str(client), HOST, str(port), str(n), "/big", ""],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    box = Sandbox(SandboxPolicy(mode="bwrap", workspace=ws, read=(root,),
                                forwards=egress.forwards), isolation=own)  # fmt: skip
    with box.launch(
        [sys.executable, str(client), HOST, str(port), str(n), "/big", f"127.0.0.1:{egress.port}"],
        ws,
    ) as go:
        proxied = subprocess.run(go.argv, cwd=go.cwd, capture_output=True, text=True,
                                 timeout=600, pass_fds=go.pass_fds)  # fmt: skip
    if proxied.returncode != 0:
        sys.exit(proxied.stderr)
    for name, done in (("direct (host)", direct), ("sandbox -> forward -> proxy", proxied)):
        data = json.loads(done.stdout)
        lat = data["lat"]
        print(f"request {name:28s} p50 {statistics.median(lat):6.2f} ms  "
              f"p99 {pct(lat, 0.99):6.2f} ms  64 MiB at {data['mbps']:7.1f} MB/s")  # fmt: skip
    egress.close()
    server.shutdown()
    trials(root)


EXPERIMENT = """\
experiment: net
trials: 20
defaults: {{agent: {{command: ["true"]}}}}
variants:
  a: {{}}
  b: {{}}
tasks:
  - {{name: t, prompt: p, verify: "true"}}
{extra}
"""


def trials(root: Path) -> None:
    for name, extra in (
        ("default network (starter + egress proxy)", ""),
        (
            "no starter (network: false, unix_sockets)",
            "network: false\nsandbox: {unix_sockets: true}",
        ),
    ):
        suite = root / f"suite-{len(extra)}"
        suite.mkdir()
        (suite / "pytest.ini").write_text("[pytest]\n")
        (suite / "x.eval.yaml").write_text(EXPERIMENT.format(extra=extra))
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                "--eval-sandbox=bwrap", "x.eval.yaml"]  # fmt: skip
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            done = subprocess.run(argv, cwd=suite, capture_output=True, text=True, timeout=900)
            best = min(best, time.perf_counter() - start)
            if done.returncode != 0:
                sys.exit(done.stdout[-3000:])
        print(f"40 trials, {name:42s} best of 3: {best:6.2f} s = {best / 40 * 1000:6.1f} ms/trial")


if __name__ == "__main__":
    main()
