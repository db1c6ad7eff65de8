"""Hostile agents (issue 11): one test per attack, each through a real pytest session with real
processes and the real bubblewrap, asserting what a user would check: the trial's status, the
files outside unchanged, the secret in no file under results/ and jobs/ (nor the terminal or
JUnit), no process left."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from cli_helpers import run_pytest
from conftest import Suite

from pytest_evalrun.secrets import Redactor
from pytest_evalrun.trial.bwrapprobe import probe

needs_bwrap = pytest.mark.skipif(
    not probe().available, reason=f"bubblewrap cannot run here: {probe().reason}"
)
pytestmark = needs_bwrap

SECRET = "hunter2-s3cr3t-VALUE-9f8e7d"


def task(name: str = "t", verify: object = "grep -q ok answer.txt", **extra: object) -> dict:
    return {"name": name, "prompt": "x", "fixture": "fixtures/basic", "verify": verify, **extra}


def script(suite: Suite, name: str, body: str) -> list[str]:
    """A Python agent (or verifier) program in the suite, as an argv."""
    suite.write(name, body)
    return [sys.executable, str(suite.root / name)]


def run(suite: Suite, *args: str) -> pytest.RunResult:
    return suite.pytester.runpytest("-p", "no:cacheprovider", "--junitxml=junit.xml", *args)


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):  # never follows links
            for name in filenames + dirnames:
                yield Path(dirpath, name)


def assert_secret_nowhere(suite: Suite, secret: str, result: pytest.RunResult) -> int:
    """No form of ``secret`` in any file (content or name) under results/ and jobs/, in the
    terminal or in the JUnit file. Returns how many files were checked."""
    redactor = Redactor([secret])
    checked = 0
    for path in files_under(suite.results(), suite.root / "jobs"):
        assert not redactor.contains(path.name), path
        if path.is_file() and not path.is_symlink():
            assert not redactor.contains(path.read_bytes()), path
            checked += 1
    assert not redactor.contains(result.stdout.str() + result.stderr.str())
    junit = suite.root / "junit.xml"
    if junit.exists():
        assert not redactor.contains(junit.read_bytes())
    assert checked > 5
    return checked


def processes_with(marker: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(proc.info["cmdline"] or ()) and proc.status() != "zombie":
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def wait_for(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in files_under(root)
        if p.is_file() and not p.is_symlink()
    }


# --------------------------------------------------------------------------- the verifier


@pytest.mark.parametrize("sandbox", ["auto", "none"])
def test_a_json_module_in_the_workspace_does_not_hijack_a_python_verifier(
    suite: Suite, sandbox: str
) -> None:
    suite.write(
        "checks.py",
        """
        import json
        def verify(ctx):
            data = json.loads((ctx.workspace / "answer.json").read_text())
            assert data == {"answer": 42}, "wrong answer"
        """,
    )
    hijack = "def loads(text):\n    return {'answer': 42}\ndumps = lambda *a, **k: '{}'\n"
    agent = script(
        suite,
        "agent_json.py",
        "import pathlib\n"
        f"pathlib.Path('json.py').write_text({hijack!r})\n"
        "pathlib.Path('answer.json').write_text('{\"answer\": 7}')\n",
    )
    suite.experiment(
        defaults={"agent": {"command": agent}},
        tasks=[task(verify={"python": "checks:verify"})],
        sandbox=sandbox,
    )
    run(suite).assert_outcomes(failed=1)
    meta = suite.meta("base", "t")
    assert meta["status"] == "failed" and "wrong answer" in meta["verify_tail"]
    assert (suite.trial_dir("base", "t", 1) / "workspace" / "json.py").exists()


def test_an_agent_cannot_rewrite_another_trials_meta_json(suite: Suite) -> None:
    suite.experiment(tasks=[task("victim")], variants={"base": {}})
    run(suite).assert_outcomes(failed=1)  # the agent writes nothing: rejected
    victim = suite.trial_dir("base", "victim", 1) / "meta.json"
    before = victim.read_bytes()
    attacker = script(
        suite,
        "attacker.py",
        "import json, pathlib, sys\n"
        f"p = pathlib.Path({str(victim)!r})\n"
        "try:\n"
        "    d = json.loads(p.read_text()); d['status'] = 'passed'; d['reward'] = 1.0\n"
        "    p.write_text(json.dumps(d)); print('REWROTE')\n"
        "except OSError as e:\n"
        "    print('BLOCKED', type(e).__name__)\n",
    )
    (suite.root / "exp.eval.yaml").rename(suite.root / "victim.yaml.off")
    suite.experiment("attack", defaults={"agent": {"command": attacker}}, tasks=[task()])
    run(suite).assert_outcomes(failed=1)
    out = (suite.trial_dir("base", "t", 1, experiment="attack") / "stdout.txt").read_text()
    assert "BLOCKED" in out and "REWROTE" not in out
    assert victim.read_bytes() == before
    (suite.root / "victim.yaml.off").rename(suite.root / "exp.eval.yaml")
    (suite.root / "attack.eval.yaml").unlink()
    r = run(suite, "--eval-resume", "-v")
    r.assert_outcomes(failed=1)
    assert suite.meta("base", "victim")["status"] == "failed"


def test_a_detached_child_cannot_write_the_reward_while_verify_runs(suite: Suite) -> None:
    marker = "297.531"
    agent = script(
        suite,
        "detach.py",
        "import os, subprocess, sys\n"
        "vdir = os.path.join(os.environ['EVALRUN_TRIAL_DIR'], 'verifier')\n"
        "subprocess.Popen(['setsid', 'env', '-i', 'sh', '-c',\n"
        "    f'for i in $(seq 200); do echo 1 > {vdir}/reward.txt 2>/dev/null; "
        "sleep 0.05; done; sleep {sys.argv[1]}'],\n"
        "    start_new_session=True)\n",
    )
    suite.experiment(
        defaults={"agent": {"command": [*agent, marker]}},
        tasks=[task(verify="sleep 2; grep -q ok answer.txt")],
    )
    run(suite).assert_outcomes(failed=1)
    meta = suite.meta("base", "t")
    assert meta["status"] == "failed" and meta["reward"] == 0.0
    assert not (suite.trial_dir("base", "t", 1) / "verifier" / "reward.txt").exists()
    assert processes_with(f"sleep {marker}") == []


def test_a_reward_planted_in_the_trial_directory_is_not_read(suite: Suite) -> None:
    agent = script(
        suite,
        "plant.py",
        "import os, pathlib\n"
        "t = pathlib.Path(os.environ['EVALRUN_TRIAL_DIR'])\n"
        "for p in (t / 'verifier', t):\n"
        "    try:\n"
        "        p.mkdir(exist_ok=True); (p / 'reward.json').write_text('{\"reward\": 1}')\n"
        "        print('PLANTED', p)\n"
        "    except OSError as e:\n"
        "        print('BLOCKED', e.errno)\n",
    )
    suite.experiment(defaults={"agent": {"command": agent}}, tasks=[task()])
    run(suite).assert_outcomes(failed=1)
    trial = suite.trial_dir("base", "t", 1)
    assert "PLANTED" not in (trial / "stdout.txt").read_text()
    assert suite.meta("base", "t")["status"] == "failed"


# --------------------------------------------------------------------------- symlinks


@pytest.mark.parametrize("sandbox", ["auto", "none"])
def test_artifacts_replaced_by_a_link_outside_touch_nothing_outside(
    suite: Suite, sandbox: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SERVICE_TOKEN", SECRET)
    outside = tmp_path / "outside-home"
    outside.mkdir()
    (outside / ".bashrc").write_text(f"export TOKEN={SECRET}\n")
    (outside / "events.jsonl").write_text('{"type": "OUTSIDE-CONTENT"}\n')
    before = snapshot(outside)
    agent = script(
        suite,
        "relink.py",
        "import os, shutil, sys\n"
        "art = os.environ['EVALRUN_ARTIFACTS_DIR']\n"
        "try:\n"
        "    shutil.rmtree(art); os.symlink(sys.argv[1], art); print('RELINKED')\n"
        "except OSError as e:\n"
        "    print('BLOCKED', e.errno)\n"
        "open('answer.txt', 'w').write('ok')\n",
    )
    suite.experiment(
        defaults={"agent": {"command": [*agent, str(outside)]}},
        tasks=[task()],
        sandbox=sandbox,
    )
    r = run(suite)
    r.assert_outcomes(passed=1)
    assert snapshot(outside) == before  # nothing outside masked or rewritten
    art = suite.trial_dir("base", "t", 1) / "artifacts"
    assert art.is_dir() and not art.is_symlink()
    for path in files_under(suite.root / "jobs"):
        if path.is_file():
            assert os.stat(path).st_ino not in {os.stat(outside / n).st_ino for n in before}
            assert "OUTSIDE-CONTENT" not in path.read_text(errors="replace"), path
    assert_secret_nowhere(suite, SECRET, r)


# --------------------------------------------------------------------------- secrets


def test_inherited_tokens_do_not_reach_the_agent_and_are_masked_when_passed(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    github, aws = "ghp_" + "A1b2C3d4E5f6G7h8I9j0", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("GITHUB_TOKEN", github)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws)
    agent = script(
        suite,
        "dump.py",
        "import json, os, pathlib\n"
        "print(json.dumps(dict(os.environ)))\n"
        "pathlib.Path(os.environ['EVALRUN_ARTIFACTS_DIR'], 'env.json')"
        ".write_text(json.dumps(dict(os.environ)))\n"
        "open('answer.txt', 'w').write('ok ' + os.environ.get('GITHUB_TOKEN', 'none'))\n",
    )
    suite.experiment(
        defaults={"agent": {"command": agent}},
        variants={"plain": {}, "passed": {"env_passthrough": ["GITHUB_TOKEN"]}},
        tasks=[task()],
    )
    r = run(suite)
    r.assert_outcomes(passed=2)
    seen = json.loads((suite.trial_dir("plain", "t", 1) / "artifacts" / "env.json").read_text())
    assert "GITHUB_TOKEN" not in seen and "AWS_SECRET_ACCESS_KEY" not in seen
    passed = (suite.trial_dir("passed", "t", 1) / "workspace" / "answer.txt").read_text()
    assert passed.startswith("ok ***")  # it got the token; the file keeps only the mask
    for secret in (github, aws):
        assert_secret_nowhere(suite, secret, r)


def test_escaped_and_quoted_secrets_are_masked_in_every_form(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = 'pa"ss\\word-Qx7!'
    monkeypatch.setenv("DB_PASSWORD", password)
    agent = script(
        suite,
        "escape.py",
        "import json, os, pathlib\n"
        "s = os.environ['DB_PASSWORD']\n"
        "art = pathlib.Path(os.environ['EVALRUN_ARTIFACTS_DIR'])\n"
        "u = ''.join('\\\\u%04x' % ord(c) for c in s)\n"
        "(art / 'escaped.json').write_text('{\"a\": \"' + u + '\"}')\n"
        "(art / 'dumped.json').write_text(json.dumps({'p': s}))\n"
        "upper = u.upper().replace('\\\\U', '\\\\u')\n"
        "(art / 'notes.txt').write_text(json.dumps(s) + ' ' + upper)\n"
        "safe = s.replace('/', '_').replace('\\\\', '_')\n"
        "(art / ('name-' + safe + '.txt')).write_text('x')\n"
        "print(json.dumps({'p': s}))\n"
        "open('answer.txt', 'w').write('ok')\n",
    )
    suite.experiment(
        defaults={"agent": {"command": agent}, "env": {"DB_PASSWORD": "${DB_PASSWORD}"}},
        tasks=[task()],
    )
    r = run(suite)
    r.assert_outcomes(passed=1)
    art = suite.trial_dir("base", "t", 1) / "artifacts"
    for name in ("escaped.json", "dumped.json"):
        json.loads((art / name).read_text())  # still valid JSON
    assert_secret_nowhere(suite, password, r)


def test_a_secret_in_a_binary_file_stays_out_of_the_diff(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICE_TOKEN", SECRET)
    agent = script(
        suite,
        "binary.py",
        "import os\n"
        "data = b'\\x00\\x01\\xff' * 100 + os.environ['SERVICE_TOKEN'].encode() + b'\\x00' * 50\n"
        "open('blob.bin', 'wb').write(data)\n"
        "open('answer.txt', 'w').write('ok')\n",
    )
    suite.experiment(
        defaults={"agent": {"command": agent}, "env_passthrough": ["SERVICE_TOKEN"]},
        tasks=[task()],
    )
    r = run(suite)
    r.assert_outcomes(passed=1)
    diff = (suite.trial_dir("base", "t", 1) / "workspace.diff").read_text()
    assert "blob.bin" in diff and "GIT binary patch" not in diff
    assert_secret_nowhere(suite, SECRET, r)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_a_secret_printed_before_an_interrupt_is_masked(
    suite: Suite, monkeypatch: pytest.MonkeyPatch, how: signal.Signals
) -> None:
    agent = script(
        suite,
        "leak_then_wait.py",
        "import os, pathlib, time\n"
        "print('token', os.environ['API_TOKEN'], flush=True)\n"
        "pathlib.Path(os.environ['EVALRUN_ARTIFACTS_DIR'], 'leak.txt')"
        ".write_text(os.environ['API_TOKEN'])\n"
        "open('leak.txt', 'w').write(os.environ['API_TOKEN'])\n"
        "time.sleep(120)\n",
    )
    suite.experiment(
        defaults={"agent": {"command": agent}, "env": {"API_TOKEN": SECRET}},
        tasks=[task()],
    )
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--junitxml=junit.xml"],
        cwd=suite.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: any(suite.results().rglob("artifacts/leak.txt")))
    proc.send_signal(how)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    meta = suite.meta("base", "t")
    assert meta["status"] == "error" and meta["error_kind"] == "interrupted"
    result = pytest.RunResult(proc.returncode, out.decode().splitlines(), [], 0.0)
    assert_secret_nowhere(suite, SECRET, result)


def test_a_plugin_traceback_with_the_environment_is_masked(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICE_TOKEN", SECRET)
    suite.write(
        "conftest.py",
        """
        def pytest_evalrun_agent_kinds():
            def boom(step, ctx):
                raise RuntimeError(f"agent failed with env {dict(ctx.env)}")
            return {"boom": boom}
        """,
    )
    suite.experiment(
        defaults={"agent": {"boom": "x"}, "env": {"API_TOKEN": "${SERVICE_TOKEN}"}},
        tasks=[task()],
    )
    r = run(suite)
    r.assert_outcomes(errors=1)
    assert "API_TOKEN" in suite.meta("base", "t")["message"]
    assert_secret_nowhere(suite, SECRET, r)


def test_a_one_letter_secret_never_corrupts_meta_json_nor_resume(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = suite.shared / "starts.txt"
    monkeypatch.setenv("AGENT_COUNTER", str(counter))
    monkeypatch.setenv("PIN_SECRET", "u")  # in "status", never in the prompt
    suite.experiment(secrets=["PIN_SECRET"])
    r = run(suite)
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*PIN_SECRET*too short to mask safely*"])
    for t, status in (("good", "passed"), ("bad", "failed")):
        meta = suite.meta("base", t)
        assert meta["status"] == status and "status" in meta and "st***" not in json.dumps(meta)
    r = run(suite, "--eval-resume")
    r.assert_outcomes(passed=1, failed=1)
    assert len(counter.read_text().splitlines()) == 2  # nothing ran again


# --------------------------------------------------------------------------- limits


def test_an_8_gib_sparse_file_is_left_out_of_the_diff(suite: Suite) -> None:
    agent = script(
        suite,
        "sparse.py",
        "import os\n"
        "with open('huge.bin', 'wb') as f:\n"
        "    f.truncate(8 * 1024 ** 3)\n"
        "open('answer.txt', 'w').write('ok')\n",
    )
    suite.experiment(defaults={"agent": {"command": agent}}, tasks=[task()])
    run(suite).assert_outcomes(passed=1)
    diff = (suite.trial_dir("base", "t", 1) / "workspace.diff").read_text()
    assert "huge.bin" in diff.split("diff --git")[0]  # named in the note at the top
    assert "+++ b/answer.txt" in diff


def test_hundreds_of_term_ignoring_processes_all_die(suite: Suite) -> None:
    marker = "296.113"
    agent = script(
        suite,
        "swarm.py",
        "import subprocess, sys\n"
        "for _ in range(300):\n"
        "    subprocess.Popen(['sh', '-c', f\"trap '' TERM; exec sleep {sys.argv[1]}\"],\n"
        "                     start_new_session=True)\n"
        "open('answer.txt', 'w').write('ok')\n",
    )
    suite.experiment(defaults={"agent": {"command": [*agent, marker]}}, tasks=[task()])
    run(suite).assert_outcomes(passed=1)
    assert processes_with(f"sleep {marker}") == []


def test_a_huge_stdout_is_capped(suite: Suite) -> None:
    agent = script(
        suite,
        "loud.py",
        "import sys\n"
        "chunk = b'y' * (1 << 20)\n"
        "for _ in range(64):\n"
        "    sys.stdout.buffer.write(chunk)\n"
        "open('answer.txt', 'w').write('ok')\n",
    )
    suite.experiment(defaults={"agent": {"command": agent}}, tasks=[task()])
    run(suite).assert_outcomes(passed=1)
    out = suite.trial_dir("base", "t", 1) / "stdout.txt"
    assert out.stat().st_size <= 10 * 1024 * 1024 + 200
    assert b"bytes left out" in out.read_bytes()


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_a_prompt_file_that_is_not_a_regular_file_is_an_error(suite: Suite, target: str) -> None:
    if target == "fifo":
        os.mkfifo(suite.root / "prompt.fifo")
        target = str(suite.root / "prompt.fifo")
    suite.experiment(
        tasks=[{"name": "t", "prompt_file": target, "verify": "true"}],
    )
    r = run(suite)
    r.assert_outcomes(errors=1)
    r.stdout.fnmatch_lines([f"*prompt file*{target}*is not a regular file*"])


# --------------------------------------------------------------------------- the host


def test_the_host_is_read_only_and_credential_stores_are_hidden(suite: Suite) -> None:
    home = suite.root / "fakehome"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (home / ".netrc").write_text("machine x password y\n")
    fixture_before = snapshot(suite.root / "fixtures")
    agent = script(
        suite,
        "snoop.py",
        "import os, pathlib, sys\n"
        "home = pathlib.Path(sys.argv[1])\n"
        "for p in (home / '.ssh' / 'id_ed25519', home / '.netrc'):\n"
        "    try:\n"
        "        print('READ', p.name, repr(p.read_text()))\n"
        "    except OSError as e:\n"
        "        print('HIDDEN', p.name, e.errno)\n"
        "exp = pathlib.Path(os.environ['EVALRUN_EXPERIMENT_DIR'])\n"
        "for p in (exp / 'planted.txt', exp / 'fixtures' / 'basic' / 'README.md', home / 'x'):\n"
        "    try:\n"
        "        p.write_text('owned'); print('WROTE', p)\n"
        "    except OSError as e:\n"
        "        print('READONLY', p.name, e.errno)\n"
        "print('HOME', os.environ['HOME'])\n"
        "open('answer.txt', 'w').write('ok')\n",
    )
    suite.experiment(defaults={"agent": {"command": [*agent, str(home)]}}, tasks=[task()])
    done = run_pytest(suite.root, env={**os.environ, "HOME": str(home)}, timeout=300)
    assert done.returncode == 0, done.stdout
    out = (suite.trial_dir("base", "t", 1) / "stdout.txt").read_text()
    assert "PRIVATE KEY" not in out and "password" not in out
    assert "WROTE" not in out and out.count("READONLY") == 3
    assert "HOME /tmp/home" in out
    assert not (suite.root / "planted.txt").exists() and not (home / "x").exists()
    assert snapshot(suite.root / "fixtures") == fixture_before


def test_network_false_cuts_the_network(suite: Suite) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    agent = script(
        suite,
        "net.py",
        "import socket, sys\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5).close()\n"
        "    print('CONNECTED')\n"
        "except OSError:\n"
        "    print('NO NETWORK')\n"
        "open('answer.txt', 'w').write('ok')\n",
    )
    suite.experiment(
        defaults={"agent": {"command": [*agent, str(port)]}},
        variants={"offline": {"network": False}, "default": {},
                  "online": {"network": {"allow": [f"127.0.0.1:{port}"]}}},
        tasks=[task()],
    )  # fmt: skip
    try:
        run(suite).assert_outcomes(passed=3)
    finally:
        server.close()
    out = {v: (suite.trial_dir(v, "t", 1) / "stdout.txt").read_text()
           for v in ("offline", "default", "online")}  # fmt: skip
    # the host's loopback: not with network: false, not by default (a network of its own),
    # only where the experiment allows that host:port
    assert "NO NETWORK" in out["offline"] and "NO NETWORK" in out["default"]
    assert "CONNECTED" in out["online"]
    assert suite.meta("offline", "t")["isolation"]["network"] is False


SPRAY = (
    "import json, os, sys\n"
    "mine = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))\n"
    "open(os.environ['EVALRUN_ARTIFACTS_DIR'] + '/fds-' + sys.argv[1] + '.txt', 'w')"
    ".write(json.dumps(mine))\n"
    "fake = json.dumps({'outcome': 'return', 'value': True}).encode()\n"
    "for fd in range(3, 256):\n"
    "    for data in (fake, b'{\"exit-code\": 0}\\n', b'execvp: no such file\\n'):\n"
    "        try:\n"
    "            os.write(fd, data)\n"
    "        except OSError:\n"
    "            pass\n"
    "sys.exit(1)\n"
)


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "n2"])
@pytest.mark.parametrize("sandbox", ["auto", "none"])
def test_no_step_can_write_to_a_descriptor_of_ours_to_turn_its_failure_into_an_error(
    suite: Suite, sandbox: str, xdist: bool
) -> None:
    """An agent or verifier that writes lies to every open descriptor (a fake outcome, a fake
    bubblewrap status, a fake exec failure) fails as any failing step does: it never becomes
    an error (an error is not judged, so a failing agent would leave the pass rate). With the
    network, without it (no starter in front of the step) and unsandboxed: the step holds no
    descriptor but its standard streams."""
    spray = script(suite, "spray.py", SPRAY)
    suite.experiment(
        variants={
            "agent-online": {"agent": {"command": [*spray, "agent"]}},
            "agent-offline": {"agent": {"command": [*spray, "agent"]}, "network": False},
            "verify-online": {"agent": "true"},
            "verify-offline": {"agent": "true", "network": False},
        },
        tasks=[task(verify=f"{sys.executable} {suite.root / 'spray.py'} verify")],
    )  # fmt: skip
    result = run(suite, f"--eval-sandbox={sandbox}", *(["-n", "2"] if xdist else []))
    statuses = {v: suite.meta(v, "t")["status"] for v in
                ("agent-online", "agent-offline", "verify-online", "verify-offline")}
    assert statuses == dict.fromkeys(statuses, "failed"), result.stdout.str()[-3000:]
    for variant in statuses:
        for step in ("agent", "verify"):
            seen = suite.trial_dir(variant, "t", 1) / "artifacts" / f"fds-{step}.txt"
            if seen.exists():
                fds = json.loads(seen.read_text())
                # 0-2 and the descriptor listdir opened to list them
                assert len(fds) == 4 and fds[:3] == [0, 1, 2], (variant, step, fds)


def test_pytest_and_xdist_variables_never_reach_a_step(suite: Suite) -> None:
    agent = script(
        suite,
        "env.py",
        "import json, os\n"
        "print(json.dumps(dict(os.environ)))\n"
        "open('answer.txt', 'w').write('ok')\n",
    )
    suite.experiment(defaults={"agent": {"command": agent}}, tasks=[task()])
    env = {**os.environ, "PYTEST_ADDOPTS": "-p no:cacheprovider", "MY_LEFTOVER": "x"}
    done = run_pytest(suite.root, "-n", "1", env=env, timeout=300)
    assert done.returncode == 0, done.stdout
    seen = json.loads((suite.trial_dir("base", "t", 1) / "stdout.txt").read_text().splitlines()[-1])
    assert not [k for k in seen if k.startswith(("PYTEST_", "XDIST", "EXECNET"))]
    assert "MY_LEFTOVER" not in seen
    assert seen["PWD"] == "/tmp/workspace" and seen["HOME"] == "/tmp/home"


# --------------------------------------------------------------------------- standalone workspace


@pytest.mark.parametrize("sandbox", ["auto", "none"])
def test_a_nested_pytest_in_the_workspace_ignores_the_suites_configuration(
    suite: Suite, sandbox: str
) -> None:
    suite.write(
        "pyproject.toml",
        """
        [tool.pytest.ini_options]
        addopts = "-p no:cacheprovider"
        """,
    )
    # The suite's conftest.py: a nested pytest that found it would run no test (exit 5).
    suite.write(
        "conftest.py",
        """
        def pytest_collection_modifyitems(items):
            items[:] = [i for i in items if "test_answer" not in i.nodeid]
        """,
    )
    suite.write(
        "fixtures/proj/test_answer.py",
        "def test_it():\n    assert open('answer.txt').read().strip() == 'ok'\n",
    )
    suite.experiment(
        tasks=[
            {
                "name": "t",
                "prompt": "WRITE answer.txt ok",
                "fixture": "fixtures/proj",
                "verify": f"{sys.executable} -m pytest -q -p no:cacheprovider test_answer.py",
            }
        ],
        sandbox=sandbox,
    )
    r = run(suite)
    r.assert_outcomes(passed=1)
    out = (suite.trial_dir("base", "t", 1) / "verifier" / "verify-output.txt").read_text()
    assert "1 passed" in out


# --------------------------------------------------------------------------- orphans


@pytest.mark.parametrize("xdist", [False, True])
@pytest.mark.parametrize("sandbox", ["auto", "none"])
def test_nothing_of_a_killed_pytest_runs_once_the_next_session_starts(
    suite: Suite, sandbox: str, xdist: bool
) -> None:
    marker = f"29{int(xdist)}.{'7' if sandbox == 'auto' else '8'}41"
    agent = script(
        suite,
        "daemon.py",
        "import os, subprocess, sys, time\n"
        "subprocess.Popen(['setsid', 'sh', '-c', f'exec sleep {sys.argv[1]}'],\n"
        "                 start_new_session=True)\n"
        "open(os.path.join(os.environ['EVALRUN_ARTIFACTS_DIR'], 'started'), 'w').close()\n"
        "time.sleep(300)\n",
    )
    suite.experiment(
        defaults={"agent": {"command": [*agent, marker]}}, tasks=[task()], sandbox=sandbox
    )
    args = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        *(["-n", "1"] if xdist else []),
    ]
    proc = subprocess.Popen(
        args, cwd=suite.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: any(suite.results().rglob("artifacts/started")))
        wait_for(lambda: processes_with(f"sleep {marker}"))
    finally:
        proc.kill()  # SIGKILL: no handler runs (with xdist: the controller only)
        proc.wait()
    (suite.root / "exp.eval.yaml").unlink()
    suite.experiment("next", tasks=[task(verify="true")])
    done = run_pytest(suite.root, timeout=300)
    assert done.returncode == 0, done.stdout
    assert processes_with(f"sleep {marker}") == []
