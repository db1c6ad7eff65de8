"""``evalrun check / reindex / gc`` on results written by real pytest runs, then damaged,
hand-edited or deleted the way a person (or a killed process) would."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cli_helpers import evalrun, evalrun_json, one_line_error, run_pytest
from conftest import Suite
from filelock import FileLock


def make_runs(suite: Suite, *run_ids: str) -> Path:
    suite.experiment(trials=2)
    for rid in run_ids:
        r = run_pytest(suite.root, "--eval-run-id", rid)
        assert r.returncode == 1, r.stdout[-2000:]  # the "bad" task fails
    return suite.results()


def trial(results: Path, rid: str, task: str = "good", n: int = 1) -> Path:
    return results / "exp" / rid / "variants" / "base" / "tasks" / task / "trials" / f"{n:03d}"


def problems(root: Path) -> dict[str, str]:
    r = evalrun("check", "--json", cwd=root)
    data = json.loads(r.stdout)
    assert r.returncode == (1 if data["problems"] else 0)
    return {p["path"]: p["problem"] for p in data["problems"]}


def test_check_names_truncated_and_hand_edited_files(suite: Suite) -> None:
    results = make_runs(suite, "c1")
    ok = evalrun("check", cwd=suite.root)
    assert ok.returncode == 0, ok.stdout
    assert "1 runs, 4 trials" in ok.stdout and "no problem" in ok.stdout

    verify = trial(results, "c1") / "verify.json"
    verify.write_bytes(verify.read_bytes()[:40])  # truncated
    meta = trial(results, "c1", "bad", 2) / "meta.json"
    data = json.loads(meta.read_text())
    meta.write_text(json.dumps({**data, "status": "passed", "reward": 1.0}))  # hand-edited
    run_json = results / "exp" / "c1" / "run.json"
    run_json.write_text(run_json.read_text()[:-30])
    [job] = (suite.root / "jobs").iterdir()
    job_result = job / "result.json"
    job_result.write_text(job_result.read_text()[:20])

    found = problems(suite.root)
    assert "not valid JSON" in found[str(verify)]
    assert "status: file 'passed', index 'failed'" in found[str(meta)]
    assert "reward: file 1.0, index 0.0" in found[str(meta)]
    assert "not valid JSON" in found[str(run_json)]
    assert "not valid JSON" in found[str(job_result)]
    assert len(found) == 4, found
    text = evalrun("check", cwd=suite.root)
    assert text.returncode == 1
    assert f"{verify.relative_to(suite.root)}: not valid JSON" in text.stdout
    assert "4 problems" in text.stdout


def test_check_compares_index_and_files_both_ways(suite: Suite) -> None:
    results = make_runs(suite, "c1")
    gone = trial(results, "c1", "good", 2)
    for path in sorted(gone.rglob("*"), reverse=True):
        path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
    gone.rmdir()
    con = sqlite3.connect(results / "index.db")
    with con:
        con.execute("DELETE FROM trials WHERE task = 'bad' AND trial = 1")
        con.execute("UPDATE runs SET status = 'failed'")
    con.close()
    found = problems(suite.root)
    assert found[str(gone)] == "in the index, but not on disk"
    assert found[str(trial(results, "c1", "bad", 1) / "meta.json")] == "trial not in the index"
    run_json = str(results / "exp" / "c1" / "run.json")
    assert "status: file 'completed', index 'failed'" in found[run_json]


def test_check_without_index_and_bad_results_dir(suite: Suite, tmp_path: Path) -> None:
    results = make_runs(suite, "c1")
    (results / "index.db").unlink()
    found = problems(suite.root)
    assert "missing" in found[str(results / "index.db")]
    assert "no results directory" in one_line_error(
        evalrun("check", "--results", str(tmp_path / "none"), cwd=suite.root)
    )


def test_reindex_rebuilds_a_deleted_or_damaged_index(suite: Suite) -> None:
    results = make_runs(suite, "c1", "c2")
    db = results / "index.db"
    query = "SELECT experiment, run_id, variant, task, trial, status, reward, fingerprint"
    query += " FROM trials"

    def rows() -> list[tuple[object, ...]]:
        con = sqlite3.connect(db)
        try:
            return sorted(con.execute(query).fetchall())
        finally:
            con.close()

    before = rows()
    runs_before = evalrun_json("runs", cwd=suite.root)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    r = evalrun("reindex", cwd=suite.root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rebuilt: 2 runs, 8 trials" in r.stdout
    assert rows() == before and len(before) == 8
    assert evalrun_json("runs", cwd=suite.root) == runs_before
    assert evalrun("check", cwd=suite.root).returncode == 0

    db.write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    damaged = evalrun("check", cwd=suite.root)
    assert damaged.returncode == 1 and "damaged" in damaged.stdout
    r = evalrun("reindex", "--json", cwd=suite.root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["replaced_damaged"] is True
    assert rows() == before


def test_reindex_names_unreadable_files_and_exits_1(suite: Suite) -> None:
    results = make_runs(suite, "c1")
    meta = trial(results, "c1") / "meta.json"
    meta.write_text(meta.read_text()[:50])
    r = evalrun("reindex", cwd=suite.root)
    assert r.returncode == 1
    assert f"{meta.relative_to(suite.root)}: not indexed" in r.stdout
    assert "1 runs, 3 trials" in r.stdout


def test_gc_keeps_the_newest_runs(suite: Suite) -> None:
    results = make_runs(suite, "g1", "g2", "g3")
    jobs = suite.root / "jobs"
    assert len(list(jobs.iterdir())) == 3

    dry = evalrun("gc", "--keep", "1", "--dry-run", cwd=suite.root)
    assert dry.returncode == 0, dry.stderr
    assert "would delete exp/g1" in dry.stdout and "would delete exp/g2" in dry.stdout
    assert "g3" not in dry.stdout.replace("kept", "")
    assert len(list((results / "exp").iterdir())) == 3 and len(list(jobs.iterdir())) == 3
    assert len(evalrun_json("runs", cwd=suite.root)) == 3

    r = evalrun("gc", "--keep", "1", cwd=suite.root)
    assert r.returncode == 0, r.stderr
    assert "deleted exp/g1" in r.stdout and "jobs/g1__exp" in r.stdout
    assert [p.name for p in (results / "exp").iterdir()] == ["g3"]
    assert [p.name for p in jobs.iterdir()] == ["g3__exp"]
    assert [d["run_id"] for d in evalrun_json("runs", cwd=suite.root)] == ["g3"]
    con = sqlite3.connect(results / "index.db")
    assert con.execute("SELECT DISTINCT run_id FROM trials").fetchall() == [("g3",)]
    con.close()
    assert evalrun("check", cwd=suite.root).returncode == 0
    assert "--keep" in one_line_error(evalrun("gc", "--keep", "-1", cwd=suite.root))


def _mark_running(run_dir: Path, session_started: str) -> None:
    path = run_dir / "run.json"
    data = json.loads(path.read_text())
    data["status"] = "running"
    data["sessions"][-1]["started_at"] = session_started
    data["started_at"] = min(data["started_at"], session_started)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("live", ["recent session", "lock held", "stale"])
def test_gc_never_deletes_a_run_that_is_still_running(suite: Suite, live: str) -> None:
    results = make_runs(suite, "g1", "g2")
    g1 = results / "exp" / "g1"
    if live == "recent session":
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        _mark_running(g1, now)
    else:
        _mark_running(g1, "2020-01-01T00:00:00Z")
    lock = FileLock(str(next((g1 / ".locks").glob("*.lock"))))
    if live == "lock held":
        lock.acquire()
    try:
        data = evalrun_json("gc", "--keep", "1", cwd=suite.root)
    finally:
        if lock.is_locked:
            lock.release()
    if live == "stale":  # a run whose pytest was killed long ago
        assert [d["run_id"] for d in data["deleted"]] == ["g1"] and not g1.exists()
    else:
        assert data["deleted"] == [] and g1.is_dir()
        [kept] = data["kept_running"]
        assert kept["run_id"] == "g1" and kept["kept_because"].startswith("running")


def test_a_run_is_listed_as_running_from_its_first_trial(suite: Suite) -> None:
    import subprocess
    import sys
    import time

    flags = suite.root / "flags"  # the agent sees only what is listed under sandbox: read:
    flags.mkdir()
    flag = flags / "go"
    wait = f"import pathlib, time\nwhile not pathlib.Path({str(flag)!r}).exists(): time.sleep(0.05)"
    waiting = {"agent": {"command": [sys.executable, "-c", wait]}}
    suite.experiment(variants={"base": waiting}, trials=1, sandbox={"read": [str(flags)]})
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--eval-run-id", "live"],
        cwd=suite.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        listed: list[dict[str, object]] = []
        while time.monotonic() < deadline and not listed:
            if (suite.results() / "index.db").exists():
                listed = evalrun_json("runs", cwd=suite.root)
            if not listed:
                time.sleep(0.1)
        assert [(d["run_id"], d["status"]) for d in listed] == [("live", "running")]
    finally:
        flag.write_text("go")
        proc.wait(timeout=300)
    [done] = evalrun_json("runs", cwd=suite.root)
    assert done["status"] == "completed" and done["trials"] == 2
