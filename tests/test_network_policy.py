"""The egress proxy's decisions and the ``network:`` key, without a sandbox: the allow list's
syntax, what the default refuses (every loopback, link-local and private spelling), errors
naming the file and line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import GOOD_AND_BAD, Suite

from pytest_evalrun.experiment.errors import ExperimentError
from pytest_evalrun.experiment.load import load_experiment
from pytest_evalrun.trial.network import Allow, decide, parse_allow


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("pypi.org", Allow("pypi.org")),
        ("PyPI.org.", Allow("pypi.org")),
        ("pypi.org:443", Allow("pypi.org", 443)),
        ("*.githubusercontent.com", Allow("*.githubusercontent.com")),
        ("127.0.0.1:8080", Allow("127.0.0.1", 8080)),
        ("[::1]:8080", Allow("::1", 8080)),
        ("::1", Allow("::1")),
        ("10.0.0.5", Allow("10.0.0.5")),
    ],
)
def test_allow_entries(text: str, want: Allow) -> None:
    assert parse_allow(text) == want


@pytest.mark.parametrize(
    "text",
    ["", "a b", "http://x", "x:0", "x:65536", "x:y", "*", "a.*.com", "x@y", "[::1", "fe80::1:80x"],
)
def test_bad_allow_entries(text: str) -> None:
    with pytest.raises(ValueError):
        parse_allow(text)


def resolver(table: dict[str, Sequence[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> Sequence[str]:
        if host not in table:
            raise OSError("unknown host")
        return table[host]

    return resolve


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.5.5.5", "::1", "169.254.169.254", "10.1.2.3", "172.16.0.1", "192.168.1.1",
     "100.64.0.1", "fc00::1", "fe80::1", "0.0.0.0", "224.0.0.1", "::ffff:127.0.0.1", "240.0.0.1"],
)  # fmt: skip
def test_the_default_refuses_every_non_public_address(address: str) -> None:
    d = decide("sneaky.example", 443, None, resolver({"sneaky.example": [address]}))
    assert not d.allowed and "allow" in d.reason
    # an IP literal too
    assert not decide(address, 80, None, resolver({address: [address]})).allowed


def test_the_default_refuses_a_name_with_any_private_address() -> None:
    table = {"mixed.example": ["93.184.216.34", "127.0.0.1"]}
    assert not decide("mixed.example", 443, None, resolver(table)).allowed


def test_the_default_allows_public_hosts_and_connects_to_the_checked_address() -> None:
    d = decide("example.com", 443, None, resolver({"example.com": ["93.184.216.34"]}))
    assert d.allowed and d.addresses == ("93.184.216.34",)


def test_an_allow_list_names_hosts_and_ports() -> None:
    allow = [parse_allow(t) for t in ("pypi.org", "*.example.com:443", "127.0.0.1:8080")]
    table = {"pypi.org": ["151.101.0.223"], "a.b.example.com": ["93.184.216.34"],
             "127.0.0.1": ["127.0.0.1"], "github.com": ["140.82.112.3"]}  # fmt: skip
    r = resolver(table)
    assert decide("pypi.org", 443, allow, r).allowed
    assert decide("pypi.org", 8443, allow, r).allowed  # no port: any port
    assert decide("a.b.example.com", 443, allow, r).allowed
    assert not decide("a.b.example.com", 80, allow, r).allowed
    assert not decide("example.com", 443, allow, r).allowed  # *. is subdomains only
    # a listed loopback host:port is reached (the experiment named it), no other port
    assert decide("127.0.0.1", 8080, allow, r).addresses == ("127.0.0.1",)
    refused = decide("127.0.0.1", 8081, allow, r)
    assert not refused.allowed and "allow list" in refused.reason
    assert "allow list" in decide("github.com", 443, allow, r).reason


def write(tmp_path: Path, network: str) -> Path:
    path = tmp_path / "x.eval.yaml"
    path.write_text(
        "experiment: x\n"
        "defaults:\n  agent: {command: 'true'}\n"
        f"network: {network}\n"
        "variants:\n  a: {}\n  b: {network: false}\n"
        "tasks:\n  - {name: t, prompt: p, verify: 'true'}\n"
    )
    return path


def test_the_network_key(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, '{allow: [pypi.org, "127.0.0.1:8080"]}'), environ={})
    a, b = exp.variants
    assert a.network and a.network_allow == (Allow("pypi.org"), Allow("127.0.0.1", 8080))
    assert not b.network and b.network_allow is None
    exp = load_experiment(write(tmp_path, "true"), environ={})
    assert exp.variants[0].network and exp.variants[0].network_allow is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("3", "'network' at the top level must be true, false or a mapping"),
        ("{alow: [x]}", "unknown key 'alow' in 'network' at the top level; did you mean 'allow'?"),
        ("{allow: x y}", "'allow' in 'network' at the top level: 'x y' is not a host"),
        ("{allow: {a: 1}}", "'allow' in 'network' at the top level must be a list of hosts"),
        ('{allow: ["x:99999"]}', "the port must be a number from 1 to 65535"),
    ],
)
def test_bad_network_values_name_the_file_and_line(
    tmp_path: Path, value: str, message: str
) -> None:
    path = write(tmp_path, value)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path, environ={})
    text = str(info.value)
    assert f"{path}:4:" in text and message in text, text


def test_a_bad_unix_sockets_value_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "true\nsandbox: {unix_sockets: yes please}")
    with pytest.raises(ExperimentError) as info:
        load_experiment(path, environ={})
    assert f"{path}:5: 'unix_sockets' in 'sandbox' at the top level must be true or false" in (
        str(info.value)
    )
    path = write(tmp_path, "true\nsandbox: {unix_sockets: true}")
    assert load_experiment(path, environ={}).variants[0].sandbox.unix_sockets is True


def test_unsandboxed_trials_say_their_network_is_the_hosts(suite: Suite) -> None:
    suite.experiment(tasks=[dict(GOOD_AND_BAD[0])], network={"allow": ["pypi.org"]})
    r = suite.pytester.runpytest("-p", "no:cacheprovider", "--eval-sandbox=none")
    r.assert_outcomes(passed=1)
    iso = suite.meta("base", "good")["isolation"]
    assert iso["sandbox"] == "none" and iso["network_isolated"] is False
    assert "host's network" in iso["network_note"] and "egress" not in iso
    assert not (suite.trial_dir("base", "good", 1) / "network.log").exists()


def test_the_starter_imports_only_what_python_has_loaded_or_built_in() -> None:
    """starter.py runs inside the sandbox as ``python -I -S -c SOURCE`` in front of every step
    with a forward: nothing of this package (nor site-packages) is importable there, and each
    module it imports is paid by every step (``os`` alone is ~2 ms): only built-in modules
    and ``_socket``."""
    import ast
    import sys

    from pytest_evalrun.trial import starter

    tree = ast.parse(Path(starter.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("from " + (node.module or ""))
    assert names and names <= set(sys.builtin_module_names) | {"_socket"}, names


class FakeUpstream:
    """A corporate proxy on 127.0.0.1: records each request head, tunnels CONNECTs to an echo
    of the bytes sent, answers plain requests with ``via-upstream``."""

    def __init__(self) -> None:
        import socket
        import threading

        self.heads: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            head = data.split(b"\r\n\r\n")[0].decode()
            self.heads.append(head)
            if head.startswith("CONNECT"):
                conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
                conn.sendall(b"echo:" + conn.recv(100))
            else:
                conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nvia-upstream")
            conn.close()


def test_the_egress_proxy_goes_out_through_the_environments_proxy(tmp_path: Path) -> None:
    import socket

    from pytest_evalrun.trial.egress import EgressProxy
    from pytest_evalrun.trial.network import NetLog, upstream_proxy

    fake = FakeUpstream()
    env = {"HTTPS_PROXY": f"http://user:pw@127.0.0.1:{fake.port}", "NO_PROXY": "intranet.test"}
    up = upstream_proxy(env)
    assert up is not None and up.port == fake.port and up.auth and up.bypass("a.intranet.test")
    proxy = EgressProxy(tmp_path / "p.sock", None, NetLog(tmp_path / "n.log"), up)

    def ask(request: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(tmp_path / "p.sock"))
            s.sendall(request)
            got = s.recv(4096)
            if b" 200 Connection established" in got:
                s.sendall(b"hello")  # through the tunnel
            while chunk := s.recv(4096):
                got += chunk
            return got

    try:
        # a name this machine cannot resolve: the upstream proxy is asked for it by name
        tunnel = ask(b"CONNECT api.example.invalid:443 HTTP/1.1\r\n\r\n")
        assert b"200 Connection established" in tunnel and tunnel.endswith(b"echo:hello")
        plain = ask(b"GET http://api.example.invalid/x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert plain.endswith(b"via-upstream")
        # never the host's loopback, through the upstream proxy either; no_proxy goes direct
        assert b" 403 " in ask(b"CONNECT localhost:22 HTTP/1.1\r\n\r\n")
        assert b" 403 " in ask(b"CONNECT x.intranet.test:443 HTTP/1.1\r\n\r\n")
    finally:
        proxy.close()
        fake.sock.close()
    assert fake.heads[0].startswith("CONNECT api.example.invalid:443 HTTP/1.1")
    assert "Proxy-Authorization: Basic dXNlcjpwdw==" in fake.heads[0]
    assert fake.heads[1].startswith("GET http://api.example.invalid/x HTTP/1.1")
    assert len(fake.heads) == 2
