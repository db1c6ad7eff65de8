"""A network of its own per sandboxed trial (issue 19; docs/isolation.md): the attacks.

Every test is a real pytest session with the real bubblewrap, judged by what a user sees: the
trial's status, what the host's services received (nothing), the secret they hold in no file
under results/ and jobs/, the trial's network.log and meta.json.  A hostile agent tries the
host's loopback (directly and through the egress proxy, by every name), the host's abstract
Unix sockets, a socket file it can see, cloud metadata, and (concurrently, with ``-n 2``)
another trial's verifier.  ``tests/test_attacks_as_user.py`` runs this file again as an
ordinary user.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Suite

from pytest_evalrun.trial.bwrapprobe import probe

pytestmark = pytest.mark.skipif(
    not (probe().available and probe().network_isolation),
    reason=f"bubblewrap (with --unshare-net) cannot run here: {probe().reason}",
)


class Service:
    """A host service holding a secret: a TCP server on 127.0.0.1, an abstract Unix socket
    and a socket file; each answers the secret and counts who connected."""

    def __init__(self, socket_dir: Path) -> None:
        self.secret = f"TOK-host-service-{uuid.uuid4().hex}"
        self.hits: dict[str, int] = {"tcp": 0, "abstract": 0, "file": 0}
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.abstract_name = f"evalrun-test-{uuid.uuid4().hex}"
        self.abstract = socket.socket(socket.AF_UNIX)
        self.abstract.bind("\0" + self.abstract_name)
        self.path = socket_dir / "docker.sock"
        self.file = socket.socket(socket.AF_UNIX)
        self.file.bind(str(self.path))
        os.chmod(self.path, 0o777)
        self._threads = []
        for name, sock in (("tcp", self.tcp), ("abstract", self.abstract), ("file", self.file)):
            sock.listen(16)
            thread = threading.Thread(target=self._serve, args=(name, sock), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, name: str, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self.hits[name] += 1
            with contextlib.suppress(OSError):
                conn.sendall(f"HTTP/1.0 200 OK\r\n\r\n{self.secret}\n".encode())
            conn.close()

    def close(self) -> None:
        for sock in (self.tcp, self.abstract, self.file):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def service(suite: Suite) -> Iterator[Service]:
    made = Service(suite.shared)  # shared/: a directory every step sees (sandbox: write:)
    yield made
    made.close()


#: The hostile agent: every way to the host's service, each READ (with what it got) or
#: DENIED (why) in artifacts/loot.json; what it got also goes to its stdout and workspace.
HOSTILE = r"""
import json, os, pathlib, socket, sys, urllib.request
port, abstract, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
loot = {}
def attempt(name, fn):
    try:
        loot[name] = "READ " + fn()
    except Exception as exc:
        loot[name] = f"DENIED {type(exc).__name__}: {exc}"
def tcp(host):
    def go():
        with socket.create_connection((host, port), timeout=5) as s:
            return s.recv(4096).decode()
    return go
def unix(address):
    def go():
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(address)
        return s.recv(4096).decode()
    return go
proxy = os.environ.get("HTTP_PROXY", "")
def via_proxy(url):
    def go():
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
        return opener.open(url, timeout=10).read().decode()
    return go
def connect(host):
    def go():
        hostport = proxy.rsplit("/", 1)[-1].split(":")
        with socket.create_connection((hostport[0], int(hostport[1])), timeout=5) as s:
            s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            head = s.recv(4096).decode(errors="replace")
            if " 200 " not in head.split("\r\n")[0]:
                raise ConnectionRefusedError(head.split("\r\n")[0])
            return head + s.recv(4096).decode()
    return go
for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2", "0.0.0.0"):
    attempt(f"tcp {host}", tcp(host))
attempt("abstract", unix("\0" + abstract))
attempt("socket file", unix(path))
if proxy:
    os.environ.pop("no_proxy", None); os.environ.pop("NO_PROXY", None)
    for host in ("127.0.0.1", "localhost", "[::1]", "127.1", "2130706433",
                 socket.gethostname()):
        attempt(f"proxy http {host}", via_proxy(f"http://{host}:{port}/"))
    for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]"):
        attempt(f"proxy connect {host}", connect(host))
    attempt("proxy metadata", via_proxy("http://169.254.169.254/latest/meta-data/"))
else:
    loot["no proxy"] = "DENIED no HTTP_PROXY"
got = "\n".join(loot.values())
print(got)
pathlib.Path("stolen.txt").write_text(got)
art = pathlib.Path(os.environ["EVALRUN_ARTIFACTS_DIR"])
(art / "loot.json").write_text(json.dumps(loot))
pathlib.Path("answer.txt").write_text("ok\n")
"""


def hostile(suite: Suite, service: Service) -> list[str]:
    suite.write("hostile.py", HOSTILE)
    return [sys.executable, str(suite.root / "hostile.py"), str(service.port),
            service.abstract_name, str(service.path)]  # fmt: skip


def leaked(suite: Suite, secret: str) -> list[str]:
    found = []
    for root in (suite.results(), suite.root / "jobs"):
        for dirpath, _, files in os.walk(root):
            for name in files:
                p = Path(dirpath, name)
                if not p.is_symlink() and secret.encode() in p.read_bytes():
                    found.append(str(p.relative_to(suite.root)))
    return found


def run(suite: Suite, workers: str, *args: str) -> pytest.RunResult:
    dist = ["-n", "2"] if workers != "serial" else ["-p", "no:xdist"]
    return suite.pytester.runpytest(
        "-p", "no:cacheprovider", "--eval-sandbox=bwrap", *dist, *args
    )  # fmt: skip


TASK = {"name": "t", "prompt": "x", "fixture": "fixtures/basic", "verify": "grep -q ok answer.txt"}


@pytest.mark.parametrize("workers", ["serial", "-n 2"])
def test_the_agent_reaches_no_host_service(suite: Suite, service: Service, workers: str) -> None:
    suite.experiment(
        defaults={"agent": {"command": hostile(suite, service)}},
        variants={"default": {}, "offline": {"network": False}},
        tasks=[TASK],
    )
    r = run(suite, workers)
    r.assert_outcomes(passed=2)
    for variant in ("default", "offline"):
        trial = suite.trial_dir(variant, "t", 1)
        loot = json.loads((trial / "artifacts" / "loot.json").read_text())
        read = {k: v for k, v in loot.items() if not v.startswith("DENIED")}
        assert read == {}, f"{variant}: the agent reached {read}"
        iso = suite.meta(variant, "t")["isolation"]
        assert iso["network_isolated"] is True
    assert service.hits == {"tcp": 0, "abstract": 0, "file": 0}
    assert leaked(suite, service.secret) == []
    # the default variant's proxy said why, in the trial's network.log and meta.json
    default = suite.trial_dir("default", "t", 1)
    loot = json.loads((default / "artifacts" / "loot.json").read_text())
    assert "403" in loot["proxy http 127.0.0.1"] and "403" in loot["proxy connect localhost"]
    log = [json.loads(line) for line in (default / "network.log").read_text().splitlines()]
    refused = [e for e in log if not e["allowed"]]
    assert refused and all(e["step"] == "agent" and e["via"] == "proxy" for e in refused)
    assert any(e["host"] == "169.254.169.254" and "link-local" in e["reason"] for e in refused)
    egress = suite.meta("default", "t")["isolation"]["egress"]
    assert egress["refused"] == len(refused) and egress["allow"] is None
    # network: false: no proxy at all
    offline = suite.trial_dir("offline", "t", 1)
    assert not (offline / "network.log").exists()
    assert suite.meta("offline", "t")["isolation"]["egress"] is None
    assert "DENIED no HTTP_PROXY" in (offline / "stdout.txt").read_text()


#: Another trial's verifier checks a server on its port 127.0.0.1:PORT (it starts the
#: workspace's server.py, which the victim's agent left broken); the hostile agent, in a
#: concurrent trial, answers on that port first.
VERIFY_SERVER = r"""
import socket, subprocess, sys, time
port = int(sys.argv[1])
server = subprocess.Popen([sys.executable, "server.py", str(port)])
deadline = time.monotonic() + 8
while time.monotonic() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            answer = s.recv(100).decode()
            sys.exit(0 if answer.strip() == "CORRECT" else 1)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
"""

RACE_AGENT = r"""
import os, pathlib, socket, sys, time
port, flags = int(sys.argv[1]), pathlib.Path(sys.argv[2])
me = os.environ["EVALRUN_VARIANT"]
(flags / f"{me}.started").write_text("x")
other = "victim" if me == "hostile" else "hostile"
deadline = time.monotonic() + 60
while not (flags / f"{other}.started").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
if me == "victim":
    # a server that cannot answer: the honest verdict is failed
    pathlib.Path("server.py").write_text("import sys\nsys.exit(1)\n")
    while not (flags / "hostile.listening").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
else:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    srv.settimeout(0.2)
    (flags / "hostile.listening").write_text("x")
    served = 0
    end = time.monotonic() + 20
    while time.monotonic() < end and not (flags / "victim.verified").exists():
        try:
            conn, _ = srv.accept()
        except OSError:
            continue
        conn.sendall(b"CORRECT\n")
        conn.close()
        served += 1
    print("served", served)
pathlib.Path("answer.txt").write_text("ok\n")
"""


def test_a_concurrent_trial_cannot_answer_another_trials_verifier(suite: Suite) -> None:
    flags = suite.shared
    port = 20000 + uuid.uuid4().int % 20000
    suite.write("race.py", RACE_AGENT)
    suite.write("verify_server.py", VERIFY_SERVER)
    verify = f"{sys.executable} {suite.root / 'verify_server.py'} {port}; " \
             f"s=$?; touch {flags / 'victim.verified'}; exit $s"  # fmt: skip
    suite.experiment(
        defaults={"agent": {"command": [sys.executable, str(suite.root / "race.py"), str(port),
                                        str(flags)]}},
        variants={"hostile": {}, "victim": {}},
        tasks=[{**TASK, "verify": verify}],
    )  # fmt: skip
    r = run(suite, "-n 2")
    out = r.stdout.str()
    # both trials ran at once: the hostile one was listening while the victim was verified
    assert (flags / "hostile.listening").exists() and (flags / "victim.verified").exists(), out
    assert suite.meta("victim", "t")["status"] == "failed", out
    hostile_out = (suite.trial_dir("hostile", "t", 1) / "stdout.txt").read_text()
    assert "served 0" in hostile_out


MANAGER = r"""
import multiprocessing, pathlib
if __name__ == "__main__":
    try:
        with multiprocessing.Manager() as m:
            print("MANAGER", list(m.list([1, 2])))
    except Exception as exc:
        print("NO MANAGER", type(exc).__name__)
    pathlib.Path("answer.txt").write_text("ok\n")
"""


def test_unix_sockets_inside_a_step_only_where_the_experiment_allows_them(suite: Suite) -> None:
    suite.write("manager.py", MANAGER)
    shared = {"write": [str(suite.shared)]}
    suite.experiment(
        defaults={"agent": {"command": [sys.executable, str(suite.root / "manager.py")]}},
        variants={"default": {}, "unix": {"sandbox": {**shared, "unix_sockets": True}}},
        tasks=[TASK],
    )
    run(suite, "serial").assert_outcomes(passed=2)
    out = {v: (suite.trial_dir(v, "t", 1) / "stdout.txt").read_text() for v in ("default", "unix")}
    assert "NO MANAGER" in out["default"]  # multiprocessing.Manager listens on a Unix socket
    assert "MANAGER [1, 2]" in out["unix"]
