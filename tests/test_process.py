"""Tests for pytest_evalrun.trial.process: real subprocesses, real process trees."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import conftest
import psutil
import pytest

from pytest_evalrun.trial import process
from pytest_evalrun.trial.process import (
    COOKIE_OUTER_VAR,
    COOKIE_VAR,
    ProcessResult,
    find_cookie_processes,
    kill_all_running,
    kill_cookie_processes,
    run_step,
    running_cookies,
)

PY = sys.executable

# A python snippet that daemonizes (fork, setsid, fork), writes the daemon's pid to argv[1]
# and sleeps; the original process waits until the pid file exists, then exits 0.
DAEMON = r"""
import os, sys, time
path = sys.argv[1]
if os.fork():
    for _ in range(500):
        if os.path.exists(path) and open(path).read().strip():
            break
        time.sleep(0.01)
    sys.exit(0)
os.setsid()
if os.fork():
    os._exit(0)
tmp = path + ".tmp"
with open(tmp, "w") as f:
    f.write(str(os.getpid()))
os.rename(tmp, path)
time.sleep(1000)
"""


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (COOKIE_VAR, COOKIE_OUTER_VAR)}
    env.pop("PYTHONSAFEPATH", None)
    return env


def wait_pid_file(path: Path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = path.read_text().strip()
        except OSError:
            text = ""
        if text:
            return int(text)
        if time.monotonic() >= deadline:
            raise AssertionError(f"{path} never written")
        time.sleep(0.01)


#: The steps kill synchronously: what is left is given 2 s to be reaped, polled every 20 ms.
is_dead = functools.partial(conftest.is_dead, timeout=2.0, poll=0.02)


def is_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def stray() -> Iterator[list[int]]:
    """Pids the test spawned; killed at the end if a test failed to kill them."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def test_timeout_kills_whole_tree(tmp_path: Path, stray: list[int]) -> None:
    out = tmp_path / "out.txt"
    script = f"""
(trap '' TERM; echo $$ >/dev/null; exec sleep 1000) & echo $! > {tmp_path}/ignore_term
setsid sh -c 'echo $$ > {tmp_path}/setsid.tmp; mv {tmp_path}/setsid.tmp {tmp_path}/setsid; \
exec sleep 1000' &
{PY} -c '{DAEMON}' {tmp_path}/daemon
echo started; echo oops >&2
exec sleep 1000
"""
    # Every process sleeps 1000 s: the step returning at all, with them dead, shows the kill.
    result = run_step(script, cwd=tmp_path, env=base_env(), timeout=1.5, output=out, kill_grace=0.3)
    pids = {name: wait_pid_file(tmp_path / name, 0) for name in ("ignore_term", "setsid", "daemon")}
    stray.extend(pids.values())
    assert result.timed_out
    assert result.exit_code is None
    assert result.start_error is None
    assert result.duration >= 1.5  # not before its time
    # the sleeps above, the TERM-ignoring subshell, the setsid'd sh, the double-forked daemon
    assert result.killed_leftovers >= 3
    for name, pid in pids.items():
        assert is_dead(pid), f"{name} ({pid}) survived"
    text = out.read_text()
    assert "started" in text
    assert "oops" in text


def test_normal_exit_kills_leftover_daemon(tmp_path: Path, stray: list[int]) -> None:
    out = tmp_path / "out.txt"
    result = run_step(
        [PY, "-c", DAEMON, str(tmp_path / "daemon")],
        cwd=tmp_path,
        env=base_env(),
        timeout=20,
        output=out,
        kill_grace=0.3,
    )
    pid = wait_pid_file(tmp_path / "daemon", 0)
    stray.append(pid)
    assert result.exit_code == 0
    assert not result.timed_out
    assert result.killed_leftovers == 1
    assert is_dead(pid)


def test_normal_exit_kills_background_and_setsid_children(tmp_path: Path, stray: list[int]) -> None:
    script = (
        f"sleep 1000 & echo $! > {tmp_path}/bg\n"
        f"setsid sleep 1000 & echo $! > {tmp_path}/ss\n"
        f"(trap '' TERM; exec sleep 1000) & echo $! > {tmp_path}/it\n"
        "exit 3\n"
    )
    result = run_step(
        script,
        cwd=tmp_path,
        env=base_env(),
        timeout=20,
        output=tmp_path / "o",
        kill_grace=0.2,
    )
    pids = [wait_pid_file(tmp_path / n, 0) for n in ("bg", "ss", "it")]
    stray.extend(pids)
    assert result.exit_code == 3
    assert result.killed_leftovers == 3
    assert all(is_dead(p) for p in pids)


def test_clean_step_reports_no_leftovers(tmp_path: Path) -> None:
    result = run_step(["true"], cwd=tmp_path, env=base_env(), timeout=10, output=tmp_path / "o")
    assert result == ProcessResult(0, False, result.duration, None, 0)
    assert result.ok
    assert result.duration >= 0


def test_other_steps_and_foreign_processes_survive(tmp_path: Path, stray: list[int]) -> None:
    foreign = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    stray.append(foreign.pid)
    results: list[ProcessResult] = []
    env = base_env()

    def long_step() -> None:
        results.append(
            run_step(
                f"setsid sleep 1000 & echo $! > {tmp_path}/a_child; sleep 1000",
                cwd=tmp_path,
                env=env,
                timeout=60,
                output=tmp_path / "a.txt",
                kill_grace=0.2,
            )
        )

    thread = threading.Thread(target=long_step)
    thread.start()
    try:
        a_child = wait_pid_file(tmp_path / "a_child")
        stray.append(a_child)
        # the step registers its cookie right after the fork; its child may be quicker
        deadline = time.monotonic() + 10
        while not running_cookies() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(running_cookies()) == 1
        (cookie_a,) = running_cookies()
        assert a_child in find_cookie_processes(cookie_a)

        result_b = run_step(
            "setsid sleep 1000 & sleep 1000",
            cwd=tmp_path,
            env=env,
            timeout=0.3,
            output=tmp_path / "b.txt",
            kill_grace=0.2,
        )
        assert result_b.timed_out
        assert result_b.killed_leftovers >= 1
        assert is_alive(a_child), "a step with another cookie was killed"
        assert is_alive(foreign.pid), "a process not started by a step was killed"

        # Ctrl-C path: kill every running step's tree.
        assert kill_all_running(grace=0.2) >= 2
        thread.join(10)
        assert not thread.is_alive()
        assert is_dead(a_child)
        assert results[0].exit_code is not None and results[0].exit_code < 0
        assert running_cookies() == {}
        assert is_alive(foreign.pid)
    finally:
        kill_all_running(grace=0)
        thread.join(10)
        foreign.kill()
        foreign.wait()


def test_keyboard_interrupt_kills_tree(tmp_path: Path, stray: list[int]) -> None:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        if not (tmp_path / "c").exists():  # a loaded machine: not started yet, wait more
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            return
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_step(
                f"setsid sleep 1000 & echo $! > {tmp_path}/c; sleep 1000",
                cwd=tmp_path,
                env=base_env(),
                timeout=30,
                output=tmp_path / "o",
                kill_grace=0.2,
            )
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    pid = wait_pid_file(tmp_path / "c", 0)
    stray.append(pid)
    assert is_dead(pid)
    assert running_cookies() == {}


def test_kill_cookie_processes(tmp_path: Path, stray: list[int]) -> None:
    cookie = "f" * 32
    env = {**base_env(), COOKIE_VAR: cookie}
    proc = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; sleep 1000 & wait"], env=env, start_new_session=True
    )
    stray.append(proc.pid)
    deadline = time.monotonic() + 10  # the shell and its sleep, once both have started
    while len(find_cookie_processes(cookie)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.pid in find_cookie_processes(cookie)
    assert kill_cookie_processes(cookie, grace=0.2) == 2
    proc.wait(5)
    assert find_cookie_processes(cookie) == []
    assert kill_cookie_processes(cookie) == 0


def test_missing_program_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    result = run_step(
        ["my-agent-does-not-exist", "--x"],
        cwd=tmp_path,
        env=base_env(),
        timeout=5,
        output=out,
    )
    assert result.exit_code is None
    assert not result.timed_out
    assert result.start_error == "command not found: my-agent-does-not-exist"
    assert "command not found" in out.read_text()


def test_not_executable_and_bad_cwd(tmp_path: Path) -> None:
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    result = run_step([str(script)], cwd=tmp_path, env={}, timeout=5, output=tmp_path / "o")
    assert result.start_error == f"permission denied: {script}"

    missing = tmp_path / "nope"
    result = run_step(["true"], cwd=missing, env={}, timeout=5, output=tmp_path / "o")
    assert result.start_error == f"working directory not found: {missing}"

    assert run_step([], cwd=tmp_path, env={}, timeout=5, output=tmp_path / "o").start_error


def test_shell_exit_code_not_found_in_shell(tmp_path: Path) -> None:
    # With a shell command the shell reports a missing program itself (exit 127).
    result = run_step(
        "no-such-agent-xyz", cwd=tmp_path, env=base_env(), timeout=5, output=tmp_path / "o"
    )
    assert result.exit_code == 127
    assert result.start_error is None


def test_output_env_stdin_append(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "out.txt"
    env = {"PATH": os.environ["PATH"], "FOO": "bar", COOKIE_VAR: "outer"}
    code = (
        "import os, sys\n"
        "print('out1', flush=True)\n"
        "print('err1', file=sys.stderr, flush=True)\n"
        "print('stdin=' + sys.stdin.read(), flush=True)\n"
        "print('foo=' + os.environ['FOO'], 'home=' + str(os.environ.get('HOME')), flush=True)\n"
        f"print('cookie=' + os.environ['{COOKIE_VAR}'], flush=True)\n"
        f"print('outer=' + os.environ['{COOKIE_OUTER_VAR}'], flush=True)\n"
        "print('cwd=' + os.getcwd(), flush=True)\n"
    )
    result = run_step(
        [PY, "-c", code],
        cwd=tmp_path,
        env=env,
        timeout=10,
        output=out,
        stdin_text="hello",
    )
    assert result.exit_code == 0
    lines = out.read_text().splitlines()
    assert lines[:3] == ["out1", "err1", "stdin=hello"]
    assert lines[3] == "foo=bar home=None"
    cookie = lines[4].removeprefix("cookie=")
    assert len(cookie) == 32 and cookie != "outer"
    assert lines[5] == "outer=outer"
    assert lines[6] == f"cwd={tmp_path}"

    run_step(["echo", "again"], cwd=tmp_path, env=env, timeout=5, output=out, append=True)
    assert out.read_text().splitlines()[-1] == "again"
    assert len(out.read_text().splitlines()) == 8
    run_step(["echo", "fresh"], cwd=tmp_path, env=env, timeout=5, output=out)
    assert out.read_text() == "fresh\n"


def test_scan_reads_proc_directly(tmp_path: Path) -> None:
    # The fast path must not build psutil objects for every process.
    if not process._HAVE_PROC:
        pytest.skip("no /proc")
    assert process._scan(b"0" * 32, None) == []
