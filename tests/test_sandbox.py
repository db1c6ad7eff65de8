"""The step sandbox (pytest_evalrun.trial.sandbox) with the real bwrap: what a step sees."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import GOOD_AND_BAD, Suite

from pytest_evalrun.trial import bwrapprobe, cstarter
from pytest_evalrun.trial import sandbox as sb
from pytest_evalrun.trial.egress import TcpForward
from pytest_evalrun.trial.network import Forward
from pytest_evalrun.trial.process import find_cookie_processes, kill_cookie_processes
from pytest_evalrun.trial.sandbox import (
    Sandbox,
    SandboxError,
    SandboxPolicy,
)
from pytest_evalrun.trial.sandboxview import HOME_INSIDE, WORKSPACE_INSIDE
from pytest_evalrun.trial.stepenv import step_environment

PROBE = bwrapprobe.probe()
needs_bwrap = pytest.mark.skipif(
    not PROBE.available, reason=f"bwrap cannot run here: {PROBE.reason}"
)


class Trial:
    """A suite directory with results/ of two trials, and a fake user home."""

    def __init__(self, root: Path) -> None:
        self.suite = root / "suite"
        self.results = self.suite / "results"
        self.trial = self.results / "run1" / "trials" / "001"
        self.other = self.results / "run1" / "trials" / "002"
        self.workspace = self.trial / "workspace"
        self.artifacts = self.trial / "artifacts"
        for d in (self.workspace, self.artifacts, self.other):
            d.mkdir(parents=True)
        (self.suite / "pyproject.toml").write_text("[tool.pytest.ini_options]\naddopts='-x'\n")
        (self.suite / "conftest.py").write_text("raise SystemExit('suite conftest loaded')\n")
        (self.other / "meta.json").write_text('{"status": "failed"}\n')
        (self.trial / "prompt.md").write_text("do it\n")
        self.home = root / "home"
        (self.home / ".ssh").mkdir(parents=True)
        (self.home / ".ssh" / "id_rsa").write_text("PRIVATE KEY\n")
        (self.home / ".aws").mkdir()
        (self.home / ".aws" / "credentials").write_text("aws_secret_access_key=x\n")
        (self.home / ".netrc").write_text("machine x password hunter22\n")
        (self.home / ".claude.json").write_text('{"token": "t"}\n')
        (self.home / ".bashrc").write_text("# visible\n")

    def policy(self, **kw: object) -> SandboxPolicy:
        defaults: dict[str, object] = {
            "mode": "bwrap",
            "workspace": self.workspace,
            "writable": (self.artifacts,),
            "read": (self.suite, self.trial, self.home),
            "hide": (self.results,),
            "user_home": self.home,
        }
        defaults.update(kw)
        return SandboxPolicy(**defaults)  # type: ignore[arg-type]

    def run(
        self, script: str, *, extra_env: dict[str, str] | None = None, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        box = Sandbox(self.policy(**kw))
        env = step_environment(
            inherited=os.environ,
            home=box.home,
            cwd=box.inside(self.workspace),
            tmpdir=box.tmp,
            evalrun={"EVALRUN_WORKSPACE": box.inside(self.workspace)},
            declared=extra_env or {},
        )
        with box.launch([sys.executable, "-c", script], self.workspace) as launch:
            return subprocess.run(
                launch.argv, cwd=launch.cwd, env=env, capture_output=True, text=True,
                timeout=60, check=False, pass_fds=launch.pass_fds,
            )  # fmt: skip


@pytest.fixture
def trial(tmp_path: Path) -> Trial:
    return Trial(tmp_path)


@needs_bwrap
def test_host_is_read_only_and_workspace_writable(trial: Trial) -> None:
    script = (
        "import os, pathlib\n"
        "for p in [os.environ['SUITE'] + '/new.txt', '/etc/evalrun-probe', "
        "os.environ['TRIAL'] + '/meta.json']:\n"
        "    try:\n"
        "        open(p, 'w').write('x')\n"
        "        print('WROTE', p)\n"
        "    except OSError as e:\n"
        "        print('DENIED', p)\n"
        "pathlib.Path('made-inside.txt').write_text('hello')\n"
        "pathlib.Path(os.environ['ART'], 'note.txt').write_text('art')\n"
        "print('CWD', os.getcwd(), os.environ['PWD'], os.environ['EVALRUN_WORKSPACE'])\n"
    )
    env = {"SUITE": str(trial.suite), "TRIAL": str(trial.trial), "ART": str(trial.artifacts)}
    done = trial.run(script, extra_env=env)
    assert done.returncode == 0, done.stderr
    assert "WROTE" not in done.stdout
    assert done.stdout.count("DENIED") == 3
    assert f"CWD {WORKSPACE_INSIDE} {WORKSPACE_INSIDE} {WORKSPACE_INSIDE}" in done.stdout
    assert (trial.workspace / "made-inside.txt").read_text() == "hello"
    assert (trial.artifacts / "note.txt").read_text() == "art"
    assert not (trial.suite / "new.txt").exists()


@needs_bwrap
def test_home_and_tmp_are_private_and_empty(trial: Trial) -> None:
    fd, marker = tempfile.mkstemp(prefix="evalrun-host-tmp-", dir="/tmp")
    os.close(fd)
    try:
        script = (
            "import os, sys\n"
            "print('HOME', os.environ['HOME'], sorted(os.listdir(os.environ['HOME'])))\n"
            "print('MARKER', os.path.exists(sys.argv[1]))\n"
            "open(os.path.join(os.environ['HOME'], 'x'), 'w').write('ok')\n"
            "open('/tmp/scratch', 'w').write('ok')\n"
            "print('TMP', sorted(os.listdir('/tmp')))\n"
        )
        done = trial.run(script.replace("sys.argv[1]", repr(marker)))
        assert done.returncode == 0, done.stderr
        assert f"HOME {HOME_INSIDE} []" in done.stdout
        assert "MARKER False" in done.stdout
        assert "evalrun-host-tmp-" not in done.stdout
        assert not Path("/tmp/scratch").exists() or Path("/tmp/scratch").read_text() != "ok"
    finally:
        os.unlink(marker)


@needs_bwrap
def test_credential_stores_are_hidden(trial: Trial) -> None:
    script = (
        "import os, sys\n"
        "h = sys.argv[1]\n"
        "print('SSH', os.listdir(h + '/.ssh'))\n"
        "print('AWS', os.listdir(h + '/.aws'))\n"
        "print('NETRC', repr(open(h + '/.netrc').read()))\n"
        "print('CLAUDE', repr(open(h + '/.claude.json').read()))\n"
        "print('BASHRC', repr(open(h + '/.bashrc').read()))\n"
    ).replace("sys.argv[1]", repr(str(trial.home)))
    done = trial.run(script)
    assert done.returncode == 0, done.stderr
    assert "SSH []" in done.stdout
    assert "AWS []" in done.stdout
    assert "NETRC ''" in done.stdout
    assert "CLAUDE ''" in done.stdout
    assert "# visible" in done.stdout  # the rest of the home stays readable
    # negative control: unhidden, the same script sees them
    shown = trial.run(script, hide_credentials=False)
    assert "id_rsa" in shown.stdout and "hunter22" in shown.stdout


@needs_bwrap
def test_other_trials_are_invisible(trial: Trial) -> None:
    script = (
        "import os, sys\n"
        "print('RUN', sorted(os.listdir(sys.argv[1])))\n"
        "print('OTHER', os.path.exists(sys.argv[2]))\n"
        "print('OWN', open(sys.argv[3]).read())\n"
    )
    for i, p in enumerate(
        (trial.results / "run1" / "trials", trial.other / "meta.json", trial.trial / "prompt.md")
    ):
        script = script.replace(f"sys.argv[{i + 1}]", repr(str(p)))
    done = trial.run(script)
    assert done.returncode == 0, done.stderr
    assert "RUN ['001']" in done.stdout
    assert "OTHER False" in done.stdout
    assert "OWN do it" in done.stdout


@needs_bwrap
def test_workspace_does_not_see_the_suite_configuration(trial: Trial) -> None:
    script = (
        "import pathlib\n"
        "here = pathlib.Path.cwd()\n"
        "found = [str(d) for d in [here, *here.parents]\n"
        "         for n in ('conftest.py', 'pyproject.toml') if (d / n).exists()]\n"
        "print('FOUND', found)\n"
    )
    done = trial.run(script)
    assert done.returncode == 0, done.stderr
    assert "FOUND []" in done.stdout
    # negative control: the real workspace, walked up outside, does find them
    real = [d for d in [trial.workspace, *trial.workspace.parents] if (d / "conftest.py").exists()]
    assert real == [trial.suite]


@pytest.fixture
def marker() -> Iterator[str]:
    value = uuid.uuid4().hex
    yield value
    kill_cookie_processes(f"EVALRUN_TEST_MARK={value}", grace=0)


def _alive(mark: str) -> list[int]:
    return find_cookie_processes(f"EVALRUN_TEST_MARK={mark}")


def _wait_for(predicate: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


@needs_bwrap
@pytest.mark.parametrize("sandboxed", [True, False])
def test_background_process_dies_with_the_step(
    trial: Trial, marker: str, sandboxed: bool, tmp_path: Path
) -> None:
    ready = trial.artifacts / "ready"
    script = (
        "import subprocess, sys, os\n"
        "subprocess.Popen(['sh', '-c', 'trap \"\" TERM; touch ' + sys.argv[1] + '; "
        "exec sleep 1000'], start_new_session=True)\n"
        "import time\n"
        "while not os.path.exists(sys.argv[1]): time.sleep(0.01)\n"
    ).replace("sys.argv[1]", repr(str(ready)))
    env = {"EVALRUN_TEST_MARK": marker}
    if sandboxed:
        done = trial.run(script, extra_env=env)
    else:
        done = subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, **env}, timeout=60, check=False
        )
    assert done.returncode == 0
    if sandboxed:
        assert _wait_for(lambda: not _alive(marker)), "a step's background process survived"
    else:  # negative control: without the sandbox the daemon outlives the step
        assert _alive(marker)


@needs_bwrap
def test_the_host_loopback_is_reached_only_through_a_forward(trial: Trial) -> None:
    if not PROBE.network_isolation:
        pytest.skip("bwrap --unshare-net does not work here")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    port = server.getsockname()[1]
    script = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=5).close()\n"
        "    print('CONNECTED')\n"
        "except OSError as e:\n"
        "    print('BLOCKED', e)\n"
    )
    sockets = Path(tempfile.mkdtemp(prefix="evalrun-test-"))
    forward = TcpForward(sockets / "f.sock", "127.0.0.1", port)
    try:
        off = trial.run(script, network=False)
        own = trial.run(script, network=True)
        forwarded = trial.run(
            script, network=True, forwards=(Forward(port, forward.path, "test"),)
        )
    finally:
        forward.close()
        server.close()
    # the step's network is its own: the host's loopback is not there, with or without network
    assert "BLOCKED" in off.stdout, off.stdout + off.stderr
    assert "BLOCKED" in own.stdout, own.stdout + own.stderr
    # a forward: the same port inside reaches the host's
    assert "CONNECTED" in forwarded.stdout, forwarded.stdout + forwarded.stderr


@needs_bwrap
def test_symlinked_artifacts_dir_is_refused(trial: Trial, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    link = trial.trial / "linked"
    link.symlink_to(outside)
    with pytest.raises(SandboxError, match="symbolic link"):
        Sandbox(trial.policy(writable=(link,)))


def test_inside_paths(trial: Trial) -> None:
    isolation = sb.Isolation("bwrap", "bwrap", "/usr/bin/bwrap")
    box = Sandbox(trial.policy(), isolation=isolation)
    assert box.inside(trial.workspace / "src" / "a.py") == f"{WORKSPACE_INSIDE}/src/a.py"
    assert box.inside(trial.artifacts) == str(trial.artifacts)
    assert box.inside(os.path.realpath(trial.workspace)) == WORKSPACE_INSIDE
    plain = Sandbox(trial.policy(mode="none"), private=trial.trial / ".private")
    assert not plain.sandboxed
    assert plain.inside(trial.workspace) == str(trial.workspace)
    assert Path(plain.home).is_dir() and Path(plain.tmp).is_dir()
    with plain.launch(["true"], trial.workspace) as launch:
        assert (launch.argv, launch.cwd, launch.pass_fds) == (["true"], trial.workspace, ())


def test_probe_reports_why_bwrap_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    bwrapprobe.probe.cache_clear()
    try:
        monkeypatch.setattr(bwrapprobe, "bwrap_candidates", lambda: [])
        assert "no bwrap found" in (bwrapprobe.probe().reason or "")
        bwrapprobe.probe.cache_clear()
        monkeypatch.setattr(bwrapprobe, "bwrap_candidates", lambda: ["/bin/false"])
        found = bwrapprobe.probe()
        assert not found.available and "/bin/false" in (found.reason or "")
        auto = sb.resolve("auto")
        assert auto.sandbox == "none" and auto.warning and "/bin/false" in auto.warning
        with pytest.raises(SandboxError, match="bwrap was asked for"):
            sb.resolve("bwrap")
        assert sb.resolve("none").sandbox == "none"
        with pytest.raises(SandboxError):
            sb.resolve("docker")
    finally:
        bwrapprobe.probe.cache_clear()


def test_a_probe_started_early_answers_only_the_same_question(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """probe_soon() asks in the background; probe() takes that answer only when the bwrap
    candidates are still the ones it tried (else it asks again)."""
    bwrapprobe.probe.cache_clear()
    try:
        monkeypatch.setattr(bwrapprobe, "bwrap_candidates", lambda: ["/bin/false"])
        bwrapprobe.probe_soon()
        monkeypatch.setattr(bwrapprobe, "bwrap_candidates", lambda: [])
        assert "no bwrap found" in (bwrapprobe.probe().reason or "")
        bwrapprobe.probe.cache_clear()
        monkeypatch.setattr(bwrapprobe, "bwrap_candidates", lambda: ["/bin/false"])
        bwrapprobe.probe_soon()
        found = bwrapprobe.probe()
        assert not found.available and "/bin/false: exit status 1" in (found.reason or "")
        bwrapprobe.probe_soon()  # answered already: nothing more starts
        assert bwrapprobe._early is None
    finally:
        bwrapprobe.probe.cache_clear()


BWRAP_FAILS = """
from pytest_evalrun.trial import bwrapprobe


def pytest_configure(config):
    bwrapprobe.bwrap_candidates = lambda: ["/bin/false"]
"""


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "xdist"])
def test_auto_without_a_working_bwrap_warns_once_and_says_why(suite: Suite, xdist: bool) -> None:
    """``sandbox: auto`` where no bwrap runs (the probe runs in the background while the
    session sets up): one warning names why trials run unsandboxed, the trial runs, and
    run.json and meta.json record the isolation it got."""
    suite.experiment(tasks=[dict(GOOD_AND_BAD[0])])
    suite.write("conftest.py", BWRAP_FAILS)
    r = suite.pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", *(["-n", "1"] if xdist else ["-p", "no:xdist"])
    )
    r.assert_outcomes(passed=1)
    why = "bwrap cannot run: /bin/false: exit status 1"
    assert r.stdout.str().count(f"trials run unsandboxed: {why}") == 1
    run = json.loads((suite.run_dirs()[-1] / "run.json").read_text())
    assert run["isolation"]["base"]["sandbox"] == "none"
    assert run["isolation"]["base"]["reason"] == why
    meta = suite.meta("base", "good")["isolation"]
    assert (meta["sandbox"], meta["requested"], meta["reason"]) == ("none", "auto", why)


@needs_bwrap
def test_a_step_sees_the_system_and_nothing_else_of_the_host(trial: Trial) -> None:
    """An allowlist: programs, libraries and /etc are there; homes, /run (runtime sockets),
    /var/tmp, /srv, /mnt and the host's /tmp are not; the skeleton leading to a bound path is
    read-only."""
    fd, marker = tempfile.mkstemp(prefix="evalrun-vartmp-", dir="/var/tmp")
    os.close(fd)
    try:
        script = (
            "import os, sys\n"
            "for p in ['/usr/bin', '/etc/passwd', '/run', '/var/tmp', '/var', '/srv', '/mnt',\n"
            "          '/home', sys.argv[2]]:\n"
            "    print('SEEN' if os.path.exists(p) else 'GONE', p)\n"
            "home = os.path.expanduser('~' + sys.argv[1])\n"
            "print('HOME', sorted(os.listdir(home)) if os.path.isdir(home) else [])\n"
            "for p in ['/planted', sys.argv[3] + '/planted']:\n"
            "    try:\n"
            "        open(p, 'w').write('x'); print('WROTE', p)\n"
            "    except OSError as e:\n"
            "        print('DENIED', p, e.errno)\n"
        )
        user = os.environ.get("USER", "root")
        argv = f"import sys; sys.argv[1:] = {[user, marker, str(trial.suite)]!r}\n" + script
        done = trial.run(argv, read=(trial.trial,))
        assert done.returncode == 0, done.stderr
        seen = {line.split(" ", 1)[1] for line in done.stdout.splitlines() if line[:4] == "SEEN"}
        assert seen == {"/usr/bin", "/etc/passwd"}, done.stdout
        # of the evaluator's home, only the way to the Python running pytest (if it is there)
        home = os.path.realpath(os.path.expanduser("~" + user))
        way = {
            os.path.relpath(os.path.realpath(p), home).split(os.sep)[0]
            for p in (sys.prefix, sys.base_prefix, sb.__file__)
            if os.path.realpath(p).startswith(home + os.sep)
        }
        listed = next(line for line in done.stdout.splitlines() if line.startswith("HOME "))
        assert set(eval(listed[5:])) <= way, (listed, way)
        assert "WROTE" not in done.stdout
    finally:
        os.unlink(marker)


@needs_bwrap
def test_no_step_keeps_a_capability(trial: Trial) -> None:
    """As root or not, a step has no capability (bwrap --cap-drop ALL) and cannot regain one:
    remounting fails, and so does a remount from a new user namespace."""
    script = (
        "import subprocess\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('Cap')])\n"
        "for cmd in ('mount -o remount,bind,rw /', 'mount -o remount,bind,rw /usr',\n"
        "            'unshare -Um mount -o remount,bind,rw /usr', 'umount /tmp/workspace'):\n"
        "    print(cmd, subprocess.run(['sh', '-c', cmd], capture_output=True).returncode)\n"
        "import os\n"
        "try:\n"
        "    open('/usr/evalrun-planted', 'w').write('x'); print('WROTE')\n"
        "except OSError as e:\n"
        "    print('DENIED', e.errno)\n"
    )
    done = trial.run(script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    caps = eval(lines[0])  # CapInh, CapPrm, CapEff, CapBnd, CapAmb
    assert caps[0] == caps[1] == caps[2] == caps[4] == "0000000000000000", done.stdout
    for line in lines[1:5]:
        assert not line.endswith(" 0"), done.stdout
    assert lines[5].startswith("DENIED") and not os.path.exists("/usr/evalrun-planted")


@needs_bwrap
def test_a_read_path_under_dev_or_proc_keeps_the_sandboxs_own(trial: Trial) -> None:
    """/dev and /proc are the sandbox's own: a read path there (``{pytest}`` names
    ``-c /dev/null``) is not bound from the host, where it would be a device on a nodev
    mount that nothing can open."""
    script = "open('/dev/null').read(); open('/dev/null', 'w').write('x'); print('OPENED')"
    done = trial.run(script, read=(trial.suite, "/dev/null", "/dev/zero", "/proc/self"))
    assert done.returncode == 0, done.stderr
    assert "OPENED" in done.stdout


@needs_bwrap
@pytest.mark.parametrize("starter", ["compiled", "python"])
def test_forwards_leave_no_process_and_no_socket_file_of_the_plugin_in_the_sandbox(
    trial: Trial, starter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step's forwards are accepted outside: inside, only the step's own processes and its
    ports (no relay, no starter left, no host socket file bound), and both kinds of server
    answer: one of this process (handed the connection) and one it only knows by its socket
    path (the model gateway's kind: reached through a connection to that path)."""
    if not PROBE.network_isolation:
        pytest.skip("bwrap --unshare-net does not work here")
    if starter == "python":
        monkeypatch.setenv("EVALRUN_PY_STARTER", "1")
    elif cstarter.binary() is None:
        pytest.skip("no C compiler here: the Python starter runs")
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(5)
    sockets = Path(tempfile.mkdtemp(prefix="evalrun-test-"))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(sockets / "plain.sock"))
    unix.listen(5)

    def answer(server: socket.socket, word: bytes) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(word + conn.recv(100))

    for server, word in ((tcp, b"tcp:"), (unix, b"unix:")):
        threading.Thread(target=answer, args=(server, word), daemon=True).start()
    forward = TcpForward(sockets / "f.sock", "127.0.0.1", tcp.getsockname()[1])
    script = (
        "import os, socket, sys\n"
        "for port in sys.argv[1:]:\n"
        "    s = socket.create_connection(('127.0.0.1', int(port)), timeout=10)\n"
        "    s.sendall(b'hi')\n"
        "    print('ANSWER', s.recv(100).decode())\n"
        "for pid in sorted(p for p in os.listdir('/proc') if p.isdigit()):\n"
        "    try:\n"
        "        cmd = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')\n"
        "    except OSError:\n"
        "        continue\n"
        "    print('PROC', pid, cmd[0].decode(), len(cmd))\n"
        "print('RUN', sorted(os.listdir('/run')) if os.path.isdir('/run') else None)\n"
    )
    ports = ("41001", "41002")
    try:
        box = Sandbox(trial.policy(forwards=(
            Forward(41001, forward.path, "tcp"), Forward(41002, sockets / "plain.sock", "plain"),
        )))  # fmt: skip
        with box.launch([sys.executable, "-c", script, *ports], trial.workspace) as launch:
            # what bubblewrap execs: the starter, in front of the command
            program = launch.argv[launch.argv.index("--", launch.argv.index("--chdir")) + 1]
            assert (program == sys.executable) == (starter == "python"), launch.argv
            done = subprocess.run(
                launch.argv, cwd=launch.cwd, capture_output=True, text=True, timeout=60,
                check=False, pass_fds=launch.pass_fds,
            )  # fmt: skip
    finally:
        forward.close()
        tcp.close()
        unix.close()
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "ANSWER tcp:hi" in done.stdout and "ANSWER unix:hi" in done.stdout, out
    procs = [line.split() for line in done.stdout.splitlines() if line.startswith("PROC ")]
    # bwrap's init (PID 1) and the step's own python; nothing else of the plugin
    assert procs and {p[2] for p in procs} <= {PROBE.path, "bwrap", sys.executable}, out
    assert sum(p[2] == sys.executable for p in procs) == 1, out
    assert "RUN None" in done.stdout or "evalrun-net" not in done.stdout, out
