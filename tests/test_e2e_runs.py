"""Runs under real xdist workers: one shared run, crashes, interrupts, resume, concurrency."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from conftest import VERIFY, Suite, assert_all_json_parse, is_dead

#: Agent behaviour switches read by the agent script through the prompt.
CRASH_ONCE = (
    "import os, signal, pathlib, time\n"
    "flag = pathlib.Path(os.environ['EVALRUN_EXPERIMENT_DIR'], 'shared', 'crashed-once')\n"
    "pathlib.Path(os.environ['EVALRUN_ARTIFACTS_DIR'], 'agent.pid').write_text(str(os.getpid()))\n"
    "if not flag.exists():\n"
    "    flag.write_text('x')\n"
    "    os.kill(os.getppid(), signal.SIGKILL)\n"
    "    time.sleep(60)\n"
    "pathlib.Path('answer.txt').write_text('ok')\n"
)


def counter_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def pytest_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]


def test_xdist_workers_share_one_run(suite: Suite) -> None:
    suite.experiment(trials=3)
    r = suite.pytester.runpytest_subprocess("-n", "2")
    r.assert_outcomes(passed=3, failed=3)
    runs = suite.run_dirs()
    assert len(runs) == 1
    run = json.loads((runs[0] / "run.json").read_text())
    assert run["status"] == "completed"
    assert run["counts"]["total"] == 6 and run["counts"]["passed"] == 3
    assert len(run["sessions"]) == 1
    for key in ("host", "python", "pytest_evalrun", "pytest", "git", "pytest_args"):
        assert key in run, key
    workers = {suite.meta("base", t, n)["worker"] for t in ("good", "bad") for n in (1, 2, 3)}
    assert workers <= {"gw0", "gw1"} and len(workers) == 2
    assert assert_all_json_parse(suite.results(), suite.root / "jobs") > 20
    import sqlite3

    con = sqlite3.connect(suite.results() / "index.db")
    assert con.execute("select count(*) from trials").fetchone()[0] == 6
    assert con.execute("select status, n_trials from runs").fetchall() == [("completed", 6)]


def test_workers_share_fixture_templates_and_leave_no_scratch(
    suite: Suite, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    suite.experiment(trials=4)
    suite.pytester.runpytest_subprocess("-n", "2").assert_outcomes(passed=4, failed=4)
    shas, packed = set(), 0
    for task in ("good", "bad"):
        for n in (1, 2, 3, 4):
            ws = suite.trial_dir("base", task, n) / "workspace"
            proc = subprocess.run(["git", "rev-parse", "refs/evalrun/snapshot"], cwd=ws,
                                  capture_output=True, text=True, check=True)
            shas.add(proc.stdout.strip())
            packed += any((ws / ".git" / "objects" / "pack").glob("*.pack"))
            subprocess.run(["git", "fsck", "--strict", "--no-progress"], cwd=ws, check=True)
            diff = (ws.parent / "workspace.diff").read_text()
            assert "+++ b/answer.txt" in diff and "README" not in diff, (task, n)
    assert len(shas) == 1  # one fixture, one snapshot, whichever process made it
    # only the first copy in the session needs git; the others come from its template
    assert packed >= 6, packed
    assert sorted(p.name for p in tmp.iterdir()) == []  # session and worker scratch removed


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_unsandboxed_trials_leave_no_scratch(
    workers: tuple[str, ...], suite: Suite, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Unsandboxed, each trial runs in a temporary directory (removed behind the trials,
    trial/removal.py): none is left once the session ends, and each workspace is kept."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    suite.experiment(trials=3)
    r = suite.pytester.runpytest_subprocess("--eval-sandbox", "none", *workers)
    r.assert_outcomes(passed=3, failed=3)
    for task in ("good", "bad"):
        for n in (1, 2, 3):
            trial = suite.trial_dir("base", task, n)
            assert (trial / "workspace" / "answer.txt").is_file(), (task, n)
            assert "+++ b/answer.txt" in (trial / "workspace.diff").read_text()
    assert sorted(p.name for p in tmp.iterdir()) == []


def test_resume_of_a_finished_run_spawns_nothing(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = suite.shared / "starts.txt"
    monkeypatch.setenv("AGENT_COUNTER", str(counter))
    suite.experiment(trials=2)
    suite.pytester.runpytest_subprocess("-n", "2").assert_outcomes(passed=2, failed=2)
    assert len(counter_lines(counter)) == 4
    before = json.loads((suite.run_dirs()[0] / "summary.json").read_text())
    r = suite.pytester.runpytest_subprocess("-n", "2", "--eval-resume", "-v")
    r.assert_outcomes(passed=2, failed=2)
    r.stdout.fnmatch_lines(["*PASSED (resumed)*"])
    assert len(counter_lines(counter)) == 4  # no agent spawned
    assert len(suite.run_dirs()) == 1
    after = json.loads((suite.run_dirs()[0] / "summary.json").read_text())
    b, a = before["experiments"][0], after["experiments"][0]
    assert [v["pass_rate"] for v in a["variants"]] == [v["pass_rate"] for v in b["variants"]]
    assert a["totals"]["resumed"] == 4


def _index_rows(suite: Suite) -> dict[tuple[str, int], tuple[object, ...]]:
    import sqlite3

    con = sqlite3.connect(suite.results() / "index.db")
    try:
        rows = con.execute(
            "SELECT task, trial, rowid, status, resumed, message FROM trials"
        ).fetchall()
    finally:
        con.close()
    return {(r[0], r[1]): r[2:] for r in rows}


def test_resume_reads_each_meta_json_as_it_is_now_and_the_index_follows(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """meta.json is the record: one edited after the index was written is reported as edited,
    a truncated one runs its trial again, and the index says what the reports say. A resume
    that changes nothing rewrites no index row; a row that no longer says what meta.json
    says is written again."""
    counter = suite.shared / "starts.txt"
    monkeypatch.setenv("AGENT_COUNTER", str(counter))
    suite.experiment(trials=2)
    serial = ("-p", "no:xdist")
    suite.pytester.runpytest_subprocess(*serial).assert_outcomes(passed=2, failed=2)
    edited = suite.trial_dir("base", "good", 1) / "meta.json"
    meta = json.loads(edited.read_text())
    meta.update(status="failed", success=False, message="edited by hand")
    edited.write_text(json.dumps(meta, indent=2))
    torn = suite.trial_dir("base", "good", 2) / "meta.json"
    torn.write_text(torn.read_text()[:100])
    counter.unlink()
    r = suite.pytester.runpytest_subprocess(*serial, "--eval-resume", "-v")
    r.assert_outcomes(passed=1, failed=3)
    r.stdout.fnmatch_lines(["*good*trial-001 FAILED (resumed)*"])
    assert counter_lines(counter) == ["base/good/2"]  # only the torn one ran again
    rows = _index_rows(suite)
    assert {k: v[1:] for k, v in rows.items()} == {
        ("good", 1): ("failed", 1, "edited by hand"),
        ("good", 2): ("passed", 0, ""),
        ("bad", 1): ("failed", 1, rows[("bad", 1)][3]),
        ("bad", 2): ("failed", 1, rows[("bad", 2)][3]),
    }
    summary = json.loads((suite.run_dirs()[0] / "summary.json").read_text())
    assert summary["experiments"][0]["totals"]["resumed"] == 3
    # a resume that changes nothing: the same rows, none rewritten (same rowids)
    again = suite.pytester.runpytest_subprocess(*serial, "--eval-resume")
    again.assert_outcomes(passed=1, failed=3)
    after = _index_rows(suite)
    assert after[("good", 1)] == rows[("good", 1)] and after[("bad", 2)] == rows[("bad", 2)]
    assert after[("good", 2)][1:] == ("passed", 1, "")  # now reused: resumed
    # an index row that says something else is written again from meta.json
    import sqlite3

    con = sqlite3.connect(suite.results() / "index.db")
    con.execute("UPDATE trials SET status = 'passed' WHERE task = 'bad' AND trial = 1")
    con.commit()
    con.close()
    suite.pytester.runpytest_subprocess(*serial, "--eval-resume").assert_outcomes(
        passed=1, failed=3
    )
    assert _index_rows(suite)[("bad", 1)][1] == "failed"
    assert counter_lines(counter) == ["base/good/2"]


def test_resume_reruns_errors_and_exactly_the_changed_task(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = suite.shared / "starts.txt"
    monkeypatch.setenv("AGENT_COUNTER", str(counter))
    tasks = [
        {
            "name": "good",
            "prompt": "WRITE answer.txt ok",
            "fixture": "fixtures/basic",
            "verify": VERIFY,
        },
        {
            "name": "flaky-infra",
            "prompt": "WRITE answer.txt ok",
            "fixture": "fixtures/basic",
            # the experiment's verify program, missing at first (an error, not judged)
            "verify": [str(suite.shared / "infra-check.sh")],
        },
        {
            "name": "edited",
            "prompt": "WRITE answer.txt ok",
            "fixture": "fixtures/basic",
            "verify": VERIFY,
        },
    ]
    suite.experiment(trials=2, tasks=tasks)
    suite.pytester.runpytest_subprocess("-n", "2").assert_outcomes(passed=4, errors=2)
    assert suite.meta("base", "flaky-infra")["error_kind"] == "verify_missing"
    tasks[2]["prompt"] = "WRITE answer.txt ok\nSAY edited"
    suite.experiment(trials=2, tasks=tasks)
    (suite.shared / "infra-check.sh").write_text("#!/bin/sh\n" + VERIFY + "\n")
    (suite.shared / "infra-check.sh").chmod(0o755)
    counter.unlink()
    r = suite.pytester.runpytest_subprocess("-n", "2", "--eval-resume")
    r.assert_outcomes(passed=6)
    ran = Counter(line.split("/")[1] for line in counter_lines(counter))
    assert ran == {"flaky-infra": 2, "edited": 2}
    assert suite.meta("base", "good")["status"] == "passed"
    run = json.loads((suite.run_dirs()[0] / "run.json").read_text())
    assert run["status"] == "completed" and len(run["sessions"]) == 2
    assert run["counts"]["resumed"] == 2


def test_sigkilled_worker_records_error_then_resume_reruns_it(suite: Suite) -> None:
    suite.write("crash_once.py", CRASH_ONCE)
    suite.experiment(
        variants={
            "base": {},
            # unsandboxed: a sandboxed agent cannot reach (and kill) its worker
            "crashy": {
                "agent": {"command": [sys.executable, str(suite.root / "crash_once.py")]},
                "sandbox": "none",
            },
        },
        tasks=[
            {
                "name": "t",
                "prompt": "WRITE answer.txt ok",
                "fixture": "fixtures/basic",
                "verify": VERIFY,
                "trials": 3,
            }
        ],
    )
    r = suite.pytester.runpytest_subprocess("-n", "2")
    outcomes = r.parseoutcomes()
    assert outcomes.get("passed") == 5, r.stdout.str()
    meta = [suite.meta("crashy", "t", n) for n in (1, 2, 3)]
    crashed = [m for m in meta if m["status"] == "error"]
    assert len(crashed) == 1
    assert crashed[0]["error_kind"] == "worker_crashed" and crashed[0]["crashed"] is True
    pid = int((Path(crashed[0]["trial_dir"]) / "artifacts" / "agent.pid").read_text())
    assert is_dead(pid)
    summary = json.loads((suite.run_dirs()[0] / "summary.json").read_text())
    assert summary["experiments"][0]["totals"]["errors"] == 1
    assert_all_json_parse(suite.results(), suite.root / "jobs")
    import sqlite3

    con = sqlite3.connect(suite.results() / "index.db")
    assert (
        con.execute("select count(*) from trials where error_kind='worker_crashed'").fetchone()[0]
        == 1
    )
    r = suite.pytester.runpytest_subprocess("-n", "2", "--eval-resume")
    r.assert_outcomes(passed=6)
    assert all(suite.meta("crashy", "t", n)["status"] == "passed" for n in (1, 2, 3))


def slow_agents(suite: Suite) -> list[psutil.Process]:
    """The agent processes of the "slow" task running now."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if str(suite.root / "agent.py") not in " ".join(p.info["cmdline"] or []):
            continue
        with contextlib.suppress(psutil.Error):
            if p.environ().get("EVALRUN_TASK") == "slow":
                found.append(p)
    return found


def interrupt_while_slow_agents_run(
    suite: Suite, proc: subprocess.Popen[bytes], counter: Path
) -> None:
    """Wait until the quick trials passed and a slow agent runs, press Ctrl-C, check the end."""
    deadline = time.monotonic() + 120
    while True:
        lines = counter_lines(counter)
        quick_done = suite.results().exists() and all(
            (p / "meta.json").exists()
            and json.loads((p / "meta.json").read_text())["status"] == "passed"
            for p in suite.results().glob("exp/*/variants/base/tasks/quick/trials/*")
        )
        agents = slow_agents(suite)
        if agents and quick_done and sum("quick" in x for x in lines) >= 2:
            break
        if time.monotonic() > deadline or proc.poll() is not None:
            raise AssertionError(f"no slow agent started; agents so far: {lines}")
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    # The slow agents sleep an hour: the session ending shows that it stopped them (the
    # timeout only keeps a broken interrupt from hanging the suite).
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 2, out.decode()
    for agent in agents:
        assert is_dead(agent.pid), f"agent {agent.pid} survived Ctrl-C"
    run = json.loads((suite.run_dirs()[0] / "run.json").read_text())
    assert run["status"] == "interrupted"
    assert suite.meta("base", "quick", 1)["status"] == "passed"
    assert_all_json_parse(suite.results(), suite.root / "jobs")


def test_ctrl_c_leaves_interrupted_run_that_resume_completes(suite: Suite) -> None:
    counter = suite.shared / "starts.txt"
    tasks = [
        {
            "name": "quick",
            "prompt": "WRITE answer.txt ok",
            "fixture": "fixtures/basic",
            "verify": VERIFY,
            "trials": 2,
        },
        {
            # An hour: an agent that is dead when the session ends was killed, not finished.
            "name": "slow",
            "prompt": "SLEEP 3600\nWRITE answer.txt ok",
            "fixture": "fixtures/basic",
            "verify": VERIFY,
            "trials": 2,
        },
    ]
    suite.experiment(tasks=tasks)
    env = {**os.environ, "AGENT_COUNTER": str(counter)}
    proc = subprocess.Popen(
        pytest_cmd("-n", "2"),
        cwd=suite.root,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        interrupt_while_slow_agents_run(suite, proc, counter)
    finally:
        if proc.poll() is None:  # the test failed midway: leave nothing running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for agent in slow_agents(suite):
            with contextlib.suppress(psutil.Error):
                agent.kill()
    # resume finishes the slow trials only (quickly this time: the environment is not part of
    # a trial's definition)
    counter.unlink()
    env["AGENT_NO_SLEEP"] = "1"
    r = subprocess.run(
        pytest_cmd("-n", "2", "--eval-resume"),
        cwd=suite.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout
    assert sorted(counter_lines(counter)) == ["base/slow/1", "base/slow/2"]
    run = json.loads((suite.run_dirs()[0] / "run.json").read_text())
    assert run["status"] == "completed"


def test_two_concurrent_resumes_run_each_trial_once(suite: Suite) -> None:
    counter = suite.shared / "starts.txt"
    env = {**os.environ, "AGENT_COUNTER": str(counter)}
    # the experiment's verify program, missing at first: every trial an error, run on resume
    flag_verify = [str(suite.shared / "go")]
    tasks = [
        {
            "name": f"t{i}",
            "prompt": "SLEEP 0.3\nWRITE answer.txt ok",
            "fixture": "fixtures/basic",
            "verify": flag_verify,
            "trials": 3,
        }
        for i in range(4)
    ]
    suite.experiment(tasks=tasks)
    first = subprocess.run(
        pytest_cmd("-n", "2"), cwd=suite.root, env=env, capture_output=True, timeout=120
    )
    assert first.returncode == 1
    assert len(counter_lines(counter)) == 12
    counter.unlink()
    (suite.shared / "go").write_text("#!/bin/sh\n" + VERIFY + "\n")
    (suite.shared / "go").chmod(0o755)
    procs = [
        subprocess.Popen(
            pytest_cmd("-n", "2", "--eval-resume"),
            cwd=suite.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(2)
    ]
    for p in procs:
        p.communicate(timeout=180)
        assert p.returncode == 0
    lines = counter_lines(counter)
    assert len(lines) == 12 and len(set(lines)) == 12, lines
    assert all(
        suite.meta("base", f"t{i}", n)["status"] == "passed" for i in range(4) for n in (1, 2, 3)
    )
    assert_all_json_parse(suite.results(), suite.root / "jobs")


def test_trials_left_when_restarts_run_out_are_counted_not_run(suite: Suite) -> None:
    suite.write("crash_always.py", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n")
    suite.experiment(
        defaults={"agent": {"command": [sys.executable, str(suite.root / "crash_always.py")]}},
        tasks=[{"name": "t", "prompt": "x", "fixture": "fixtures/basic", "verify": "true",
                "trials": 6}],
        sandbox="none",  # a sandboxed agent cannot reach (and kill) its worker
    )
    r = suite.pytester.runpytest_subprocess("-n", "1", "--max-worker-restart", "0")
    assert r.ret != 0
    run = json.loads((suite.run_dirs()[0] / "run.json").read_text())
    assert run["status"] == "failed"
    assert run["counts"]["error"] == 1 and run["counts"]["crashed"] == 1
    assert run["counts"]["not_run"] == 5
    summary = json.loads((suite.run_dirs()[0] / "summary.json").read_text())
    assert summary["experiments"][0]["totals"]["not_run"] == 5
    r.stdout.fnmatch_lines(["*5 not run*"])


def test_run_id_option_prefix_resume_and_clashes(suite: Suite) -> None:
    suite.experiment()
    suite.pytester.runpytest("--eval-run-id", "nightly-001").assert_outcomes(passed=1, failed=1)
    assert [p.name for p in suite.run_dirs()] == ["nightly-001"]
    r = suite.pytester.runpytest("--eval-run-id", "nightly-001")
    assert r.ret == 4
    r.stderr.fnmatch_lines(["*run 'nightly-001' already exists*--eval-resume*"])
    r = suite.pytester.runpytest("--eval-run-id", "nightly", "--eval-resume", "-v")
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*PASSED (resumed)*", "*FAILED (resumed)*"])
    r = suite.pytester.runpytest("--eval-run-id", "nope", "--eval-resume")
    assert r.ret == 4
    r.stderr.fnmatch_lines(["*no recorded run matches --eval-run-id 'nope'*"])
    r = suite.pytester.runpytest("--eval-run-id", "../x")
    assert r.ret == 4
    assert [p.name for p in suite.run_dirs()] == ["nightly-001"]
