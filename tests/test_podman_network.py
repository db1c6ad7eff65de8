"""A container trial's network (issue 22): only the per-trial egress proxy, as in the local
sandbox, and nothing of the host.

Real pytest sessions with real podman and real Docker (``--eval-environment podman`` and
``docker``: the first test runs with both), judged by what a user
sees: the trial's status, what the host's services received, the secret in no file under
results/, the trial's network.log and meta.json. A hostile agent (bash's ``/dev/tcp``: the base
image has no curl) tries the host's services on 127.0.0.1 and on every other address of the
host, podman's host alias 10.0.2.2, cloud metadata (169.254.169.254), and the egress proxy for
an allowed and a refused host. ``network: false`` gives no network at all.

Needs podman and the base image (``tests/tools/install_podman.sh``), for Docker its engine with
that image (``tests/tools/install_docker.sh``): skipped, saying so, where they are missing.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import run_pytest
from test_podman import BASE_IMAGE, Engine, engine, podman, trials

import pytest_evalrun
from pytest_evalrun.trial.containerruntime import detect_runtime
from pytest_evalrun.trial.containers import Container, ContainerSpec

__all__ = ["engine", "podman"]  # the fixtures, imported for their use here

ALLOWED_HOST = "127.0.0.2"


class Server:
    """A TCP server answering ``body`` to whatever connects, counting the connections."""

    def __init__(self, host: str, body: str) -> None:
        self.body = body
        self.hits = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(32)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.hits += 1
            with contextlib.suppress(OSError):
                conn.recv(4096)
                conn.sendall(f"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
                             f"{self.body}\n".encode())
            conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def host_addresses() -> list[str]:
    """Every IPv4 address of this host but loopback (``ip -4 -o addr``)."""
    done = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                          check=False)
    found = []
    for line in done.stdout.splitlines():
        words = line.split()
        if "inet" in words:
            address = words[words.index("inet") + 1].split("/")[0]
            if not address.startswith("127."):
                found.append(address)
    return found


@pytest.fixture
def services() -> Iterator[dict[str, Server]]:
    secret = Server("0.0.0.0", f"TOK-host-service-{uuid.uuid4().hex}")  # every host address
    allowed = Server(ALLOWED_HOST, "allowed-ok")
    other = Server(ALLOWED_HOST, "should-not-be-seen")
    try:
        yield {"secret": secret, "allowed": allowed, "other": other}
    finally:
        for server in (secret, allowed, other):
            server.close()


#: probe NAME HOST PORT URL: sends "GET URL" to HOST:PORT; one line "NAME <exit status> <first
#: line of the answer>" in probes.txt, the whole answer in raw.txt (bash's /dev/tcp; 5 s at most).
PROBE = r"""
probe() {
  out=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 7
    printf "GET %s HTTP/1.0\r\nHost: x\r\n\r\n" "$2" >&3
    head -c 400 <&3' "$2" "$3" "$4" 2>&1)
  rc=$?
  first=$(printf '%s' "$out" | head -n 1 | tr -d '\r')
  echo "$1 $rc $first" >> "$EVALRUN_ARTIFACTS_DIR/probes.txt"
  printf '== %s\n%s\n' "$1" "$out" >> "$EVALRUN_ARTIFACTS_DIR/raw.txt"
}
"""


def hostile(secret: Server, allowed: Server, other: Server) -> str:
    lines = [PROBE]
    direct = [("loopback", "127.0.0.1"), ("slirp-host", "10.0.2.2"),
              *((f"host-{a}", a) for a in host_addresses())]
    for name, address in direct:
        lines.append(f"probe direct-{name} {address} {secret.port} /")
    lines.append("probe direct-metadata 169.254.169.254 80 /")
    lines.append('proxy_port=$${HTTP_PROXY##*:}; proxy_port=$${proxy_port%%/*}')
    lines.append('echo "proxy $${HTTP_PROXY:-none}" >> "$EVALRUN_ARTIFACTS_DIR/probes.txt"')
    for name, url in (("loopback", f"http://127.0.0.1:{secret.port}/"),
                      ("metadata", "http://169.254.169.254/latest/meta-data/"),
                      ("allowed", f"http://{ALLOWED_HOST}:{allowed.port}/"),
                      ("other", f"http://{ALLOWED_HOST}:{other.port}/")):
        lines.append(f'[ -n "$HTTP_PROXY" ] && probe proxy-{name} 127.0.0.1 "$proxy_port" '
                     f"{url}")
    lines.append("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' "
                 '> "$EVALRUN_ARTIFACTS_DIR/interfaces.txt"')
    lines.append("true")
    return "\n".join(lines) + "\n"


def probes(trial: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for line in (trial / "artifacts" / "probes.txt").read_text().splitlines():
        name, _, rest = line.partition(" ")
        code, _, first = rest.partition(" ")
        if name != "proxy":
            out[name] = (int(code), first)
    return out


def leaked(root: Path, secret: str) -> list[str]:
    return [str(p) for p in (root / "results").rglob("*")
            if p.is_file() and secret.encode() in p.read_bytes()]


def test_a_container_trial_reaches_no_host_service_and_only_allowed_hosts_via_the_proxy(
    tmp_path: Path, engine: Engine, services: dict[str, Server]
) -> None:
    secret, allowed, other = services["secret"], services["allowed"], services["other"]
    agent = hostile(secret, allowed, other)
    spec: dict[str, Any] = {
        "experiment": "container-attacks",
        "environment": {"image": BASE_IMAGE},
        "timeout": 120,
        "variants": {
            "listed": {"agent": agent,
                       "network": {"allow": [f"{ALLOWED_HOST}:{allowed.port}"]}},
            "open": {"agent": agent},
            "offline": {"agent": agent, "network": False},
        },
        "tasks": [{"name": "t", "prompt": "p", "verify": "true"}],
    }
    (tmp_path / "a.eval.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    done = run_pytest(tmp_path, "-n", "2", engine.option)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    found = {v: meta for (v, _, _), meta in trials(tmp_path).items()}
    assert set(found) == {"listed", "open", "offline"}
    assert secret.hits == 0 and other.hits == 0
    assert leaked(tmp_path, secret.body) == []
    for variant, meta in found.items():
        assert meta["status"] == "passed", (variant, meta.get("message"))
        seen = probes(meta["_dir"])
        for name, (code, first) in seen.items():
            if name.startswith("direct-"):
                assert code != 0 and "200" not in first, (variant, name, code, first)
        interfaces = (meta["_dir"] / "artifacts" / "interfaces.txt").read_text().split()
        assert interfaces == ["lo"], (variant, interfaces)
        assert meta["isolation"]["environment"] == engine.name
        assert meta["isolation"]["network_isolated"] is True
    # network: false: no proxy, nothing but lo, no log
    offline = found["offline"]
    assert not any(n.startswith("proxy-") for n in probes(offline["_dir"]))
    assert offline["isolation"]["network"] is False and offline["isolation"]["egress"] is None
    assert not (offline["_dir"] / "network.log").exists()
    # the allow list: the allowed host through the proxy, every other one refused (403)
    listed = probes(found["listed"]["_dir"])
    assert listed["proxy-allowed"][0] == 0 and " 200 " in listed["proxy-allowed"][1]
    raw = (found["listed"]["_dir"] / "artifacts" / "raw.txt").read_text()
    assert "allowed-ok" in raw
    assert allowed.hits == 1
    for name in ("proxy-loopback", "proxy-metadata", "proxy-other"):
        assert " 403 " in listed[name][1], (name, listed[name])
    # no allow list: public hosts only, so the host's loopback and metadata are refused too
    open_ = probes(found["open"]["_dir"])
    for name in ("proxy-loopback", "proxy-metadata", "proxy-allowed", "proxy-other"):
        assert " 403 " in open_[name][1], (name, open_[name])
    # network.log and meta.json of the trials with a network
    for variant in ("listed", "open"):
        meta = found[variant]
        egress = meta["isolation"]["egress"]
        assert egress is not None and egress["log"] == "network.log"
        log = [json.loads(line) for line in
               (meta["_dir"] / "network.log").read_text().splitlines()]
        refused = [e for e in log if not e["allowed"]]
        assert {e["port"] for e in refused} >= {secret.port, other.port, 80}
        assert all(e["reason"] for e in refused)
        assert all(e["step"] == "agent" for e in log)
        assert egress["refused"] == len(refused)
    listed_log = [json.loads(line) for line in
                  (found["listed"]["_dir"] / "network.log").read_text().splitlines()]
    assert [(e["host"], e["port"]) for e in listed_log if e["allowed"]] == [
        (ALLOWED_HOST, allowed.port)]
    assert found["listed"]["isolation"]["egress"]["allow"] == [f"{ALLOWED_HOST}:{allowed.port}"]


NOT_ROOT = r"""
import sys
sys.path.insert(0, sys.argv[2])
from pytest_evalrun.trial.nsforward import NetnsError, NetnsForwards
try:
    NetnsForwards(int(sys.argv[1])).check()
except NetnsError as exc:
    print("refused:", exc)
else:
    print("entered")
"""


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is missing")
def test_without_root_the_container_network_is_refused_with_a_reason(
    tmp_path: Path, podman: str
) -> None:
    """A process without root cannot enter a root container's network namespace: the forward
    is refused with a reason that says what it needs (never a wider network instead)."""
    runtime = detect_runtime("podman")
    assert runtime is not None
    pidfile = tmp_path / "pid"
    spec = ContainerSpec(image=BASE_IMAGE, name=f"evalrun-test-{uuid.uuid4().hex[:12]}",
                         pidfile=str(pidfile))
    package = Path(pytest_evalrun.__file__).resolve().parent.parent
    with Container.start(runtime, spec):
        pid = pidfile.read_text().strip()
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               sys.executable, "-c", NOT_ROOT, pid, str(package)],
                              capture_output=True, text=True, timeout=60, cwd="/")
    assert done.stdout.startswith("refused:"), done.stdout + done.stderr
    assert "root" in done.stdout
