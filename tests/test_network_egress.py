"""The default network mode still gets out: pip, npm, git (https) and curl inside a sandboxed
trial reach a local server through the egress proxy (CONNECT for https, absolute URIs for
http), only where the experiment's allow list names it; what it refused says why.

The local servers listen on 127.0.0.2 (the host's loopback, not the sandbox's): a host the
proxy reaches only because ``network: {allow: [...]}`` names it, and one clients do not
exempt from the proxy (``NO_PROXY`` is the sandbox's own 127.0.0.1, localhost and ::1).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import shutil
import ssl
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import Suite
from mockllm import MockLLM
from test_agent_clis_mock import edit_script
from test_presets import PRESETS, experiment, refuse_script, require_cli

from pytest_evalrun.trial.bwrapprobe import probe

pytestmark = pytest.mark.skipif(
    not (probe().available and probe().network_isolation),
    reason=f"bubblewrap (with --unshare-net) cannot run here: {probe().reason}",
)

HOST = "127.0.0.2"


def _wheel(path: Path) -> None:
    files = {
        "tinypkg/__init__.py": b"VALUE = 'tinypkg-ok'\n",
        "tinypkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tinypkg-1.0.dist-info/RECORD,,")
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("tinypkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")


def _npm_package(root: Path, base: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in (
            ("package/package.json", '{"name": "tinynpm", "version": "1.0.0"}'),
            ("package/index.js", "module.exports = 'tinynpm-ok';\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tgz = buf.getvalue()
    (root / "tinynpm-1.0.0.tgz").write_bytes(tgz)
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    packument = {
        "name": "tinynpm", "dist-tags": {"latest": "1.0.0"},
        "versions": {"1.0.0": {"name": "tinynpm", "version": "1.0.0", "dist": {
            "tarball": f"{base}/tinynpm-1.0.0.tgz", "integrity": integrity,
            "shasum": hashlib.sha1(tgz).hexdigest()}}},
    }  # fmt: skip
    (root / "tinynpm").write_text(json.dumps(packument))


class Servers:
    """An HTTPS and an HTTP server on 127.0.0.2 serving one directory: a file, a pip index
    with one wheel, an npm registry with one package, a git repository (dumb HTTP)."""

    def __init__(self, root: Path, certs: Path) -> None:
        self.root = root
        handler = lambda *a: http.server.SimpleHTTPRequestHandler(  # noqa: E731
            *a, directory=str(root)
        )
        self.https = http.server.ThreadingHTTPServer((HOST, 0), handler)
        self.http = http.server.ThreadingHTTPServer((HOST, 0), handler)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST},DNS:localhost",
             "-keyout", str(certs / "key.pem"), "-out", str(certs / "ca.pem")],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs / "ca.pem", certs / "key.pem")
        # (npm's proxy agent checks an IP target's certificate against "localhost")
        self.https.socket = context.wrap_socket(self.https.socket, server_side=True)
        self.https_port = self.https.server_address[1]
        self.http_port = self.http.server_address[1]
        base = f"https://{HOST}:{self.https_port}"
        (root / "hello.txt").write_text("hello-through-the-proxy\n")
        (root / "simple" / "tinypkg").mkdir(parents=True)
        _wheel(root / "tinypkg-1.0-py3-none-any.whl")
        (root / "simple" / "tinypkg" / "index.html").write_text(
            '<html><body><a href="/tinypkg-1.0-py3-none-any.whl">'
            "tinypkg-1.0-py3-none-any.whl</a></body></html>\n"
        )
        _npm_package(root, base)
        src = certs / "src"
        src.mkdir()
        (src / "README.md").write_text("cloned-through-the-proxy\n")
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
        for argv in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"]):
            subprocess.run([*git, "-C", str(src), *argv], check=True, timeout=60)
        subprocess.run([*git, "clone", "-q", "--bare", str(src), str(root / "repo.git")],
                       check=True, timeout=60)  # fmt: skip
        subprocess.run(["git", "-C", str(root / "repo.git"), "update-server-info"],
                       check=True, timeout=60)  # fmt: skip
        for server in (self.https, self.http):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        for server in (self.https, self.http):
            server.shutdown()
            server.server_close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    if shutil.which("openssl") is None or shutil.which("git") is None:
        pytest.skip("openssl and git are needed for the local HTTPS server")
    root, certs = tmp_path / "served", tmp_path / "certs"
    root.mkdir()
    certs.mkdir()
    made = Servers(root, certs)
    yield made
    made.close()


AGENT = """\
set -u
S=https://{host}:{https}
H=http://{host}:{http}
curl -sS --cacert ca.pem $S/hello.txt > curl-https.txt 2> curl-https.err
curl -sS $H/hello.txt > curl-http.txt 2> curl-http.err
git -c http.sslCAInfo=$PWD/ca.pem clone -q $S/repo.git cloned > git.err 2>&1
{python} -m pip install -q --no-cache-dir --disable-pip-version-check --retries 0 \\
  --trusted-host {host}:{https} --index-url $S/simple --target pipdir tinypkg > pip.err 2>&1
{npm}
# not in the allow list: another port of the same host, and a public name
curl -s -o /dev/null -w '%{{http_connect}}' https://{host}:{other}/ > refused-port.txt
curl -s -D - -o /dev/null http://example.com/ > refused-name.txt
echo "HTTPS_PROXY=$HTTPS_PROXY NO_PROXY=$NO_PROXY" > env.txt
"""

NPM = ("npm install -q --no-audit --no-fund --prefix npmdir --registry $S/ --cafile ca.pem "
       "tinynpm > npm.err 2>&1")  # fmt: skip

VERIFY = """\
grep -q hello-through-the-proxy curl-https.txt \
&& grep -q hello-through-the-proxy curl-http.txt \
&& grep -q cloned-through-the-proxy cloned/README.md \
&& grep -q tinypkg-ok pipdir/tinypkg/__init__.py {npm_check}
"""


@pytest.mark.parametrize("workers", ["serial", "-n 2"])
def test_pip_npm_git_and_curl_get_out_through_the_proxy(
    suite: Suite, servers: Servers, workers: str, tmp_path: Path
) -> None:
    fixture = suite.root / "fixtures" / "net"
    fixture.mkdir(parents=True)
    shutil.copy(tmp_path / "certs" / "ca.pem", fixture / "ca.pem")
    npm = shutil.which("npm") is not None
    agent = AGENT.format(
        host=HOST, https=servers.https_port, http=servers.http_port, other=1,
        python=sys.executable, npm=NPM if npm else "",
    )  # fmt: skip
    suite.write("net-agent.sh", agent)
    verify = VERIFY.format(npm_check="&& grep -q tinynpm-ok npmdir/node_modules/tinynpm/index.js"
                           if npm else "")  # fmt: skip
    suite.experiment(
        defaults={"agent": {"command": ["sh", str(suite.root / "net-agent.sh")]}},
        network={"allow": [f"{HOST}:{servers.https_port}", f"{HOST}:{servers.http_port}"]},
        tasks=[{"name": "t", "prompt": "x", "fixture": "fixtures/net", "verify": verify}],
    )
    dist = ["-n", "2"] if workers != "serial" else ["-p", "no:xdist"]
    r = suite.pytester.runpytest("-p", "no:cacheprovider", "--eval-sandbox=bwrap", *dist)
    trial = suite.trial_dir("base", "t", 1)
    ws = trial / "workspace"

    def show(name: str) -> str:
        p = ws / name
        return p.read_text() if p.is_file() else f"({name} missing)"

    errors = "\n".join(f"{n}: {show(n)}" for n in ("curl-https.err", "curl-http.err", "git.err",
                                                   "pip.err", "npm.err"))  # fmt: skip
    assert suite.meta("base", "t")["status"] == "passed", r.stdout.str() + errors
    # refused: a port and a host the allow list does not name, with the reason
    assert show("refused-port.txt") == "403"
    refused = show("refused-name.txt")
    assert refused.startswith("HTTP/1.1 403") and "allow list" in refused
    assert "NO_PROXY=localhost,127.0.0.1,::1" in show("env.txt")
    log = [json.loads(line) for line in (trial / "network.log").read_text().splitlines()]
    allowed = {(e["host"], e["port"]) for e in log if e["allowed"]}
    assert (HOST, servers.https_port) in allowed and (HOST, servers.http_port) in allowed
    assert any(e["host"] == "example.com" and not e["allowed"] for e in log)
    assert all(e["via"] == "proxy" and e["step"] == "agent" for e in log)
    assert sum(e["received"] for e in log) > 1000
    egress = suite.meta("base", "t")["isolation"]["egress"]
    assert egress["allow"] == [f"{HOST}:{servers.https_port}", f"{HOST}:{servers.http_port}"]
    assert egress["connections"] == len(log) and egress["refused"] == 2


@pytest.mark.slow
def test_a_real_cli_reaches_its_mock_model_through_the_allowed_port(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """claude-code (the real CLI) in sandboxed trials whose allow list names only one mock
    model server on the host's 127.0.0.1: the CLI edits the file through the model, every
    model call goes through the trial's model gateway (its Unix socket forwarded inside by the
    environment), and nothing else gets out.  The other task's endpoint is not in the allow
    list: as the preset's own model endpoint (the variant's ANTHROPIC_BASE_URL) the gateway
    reaches it all the same, from outside the sandbox."""
    exe = require_cli("claude")
    with MockLLM(edit_script("claude"), log_path=tmp_path / "e.jsonl") as m1, \
            MockLLM(refuse_script(), log_path=tmp_path / "r.jsonl") as m2:  # fmt: skip
        spec = experiment("claude", exe, m1, m2)
        spec["network"] = {"allow": [f"127.0.0.1:{m1.port}"]}
        (pytester.path / "claude.eval.yaml").write_text(yaml.safe_dump(spec))
        run = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--eval-sandbox=bwrap")
        served, ports = (len(m1.served), len(m2.served)), (m1.port, m2.port)
        outside = list(m1.outside) + list(m2.outside)
    outcomes = run.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("failed")) == (1, 1), run.stdout.str()[-4000:]
    assert served == (3, 1) and outside == []
    for task, port, calls in zip(("edit", "refuse"), ports, served, strict=True):
        (meta,) = pytester.path.glob(
            f"results/presets-claude/*/variants/{PRESETS['claude']}/tasks/{task}/trials/001/"
            "meta.json"
        )
        trial = meta.parent
        # the model calls went through the trial's model gateway (its Unix socket forwarded
        # into the sandbox: the environment's endpoint), which called the mock from outside
        gateway = json.loads((trial / "artifacts" / "metrics.json").read_text())["gateway"]
        assert gateway["listen"] == "unix" and f"127.0.0.1:{port}" in gateway["upstream"]
        assert len(gateway["requests"]) == calls
        netlog = trial / "network.log"
        log = [json.loads(line) for line in netlog.read_text().splitlines()] \
            if netlog.exists() else []  # fmt: skip
        assert all(e["allowed"] is False for e in log if e["via"] == "proxy")
        iso = json.loads(meta.read_text())["isolation"]
        assert iso["network_isolated"] is True
        assert iso["egress"]["allow"] == spec["network"]["allow"]
    edited = meta.parent.parent.parent.parent / "edit" / "trials" / "001"
    assert (edited / "workspace" / "hello.txt").read_text().strip() == "hi"
