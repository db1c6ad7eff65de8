"""``evalrun runs / show / compare / export / report`` on results written by real pytest runs.

Two runs of one experiment (5 tasks x 2 trials): in ``r1-base`` both variants pass every
trial; in ``r2-cand`` the variant ``other`` fails every trial (its agent does nothing) and a
new variant ``ghost`` errors on every trial (its agent does not exist).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cli_helpers import evalrun, evalrun_json, one_line_error, run_pytest
from conftest import VERIFY, Suite

from pytest_evalrun.store.index_schema import SCHEMA_VERSION

TASKS = [
    {"name": f"t{i}", "prompt": "WRITE answer.txt ok", "fixture": "fixtures/basic",
     "verify": VERIFY, "trials": 2}
    for i in range(1, 6)
]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli")
    suite = Suite(SimpleNamespace(path=path))  # type: ignore[arg-type]
    suite.experiment(variants={"base": {}, "other": {}}, tasks=TASKS)
    r = run_pytest(path, "-n", "2", "--eval-run-id", "r1-base")
    assert r.returncode == 0, r.stdout[-3000:]
    nothing = {"agent": {"command": [sys.executable, "-c", "pass"]}}
    ghost = {"agent": {"command": [str(path / "no-such-agent")]}}
    # the second run lists its tasks backwards: `show` keeps the file's order, not the slugs'
    suite.experiment(variants={"base": {}, "other": nothing, "ghost": ghost}, tasks=TASKS[::-1])
    r = run_pytest(path, "-n", "2", "--eval-run-id", "r2-cand")
    assert r.returncode == 1, r.stdout[-3000:]
    return path


def by_name(variants: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in variants}


def test_runs_lists_runs_newest_first_with_pass_rates(root: Path) -> None:
    r = evalrun("runs", cwd=root)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "r2-cand" in lines[2] and "r1-base" in lines[3]
    assert "base 100% 10/10" in lines[2] and "other 0% 0/10" in lines[2]
    assert "ghost - +10E" in lines[2]
    data = evalrun_json("runs", cwd=root)
    assert [d["run_id"] for d in data] == ["r2-cand", "r1-base"]
    assert data[0]["status"] == "completed" and data[0]["trials"] == 30
    v = by_name(data[0]["variants"])
    assert v["base"]["pass_rate"] == 1.0 and v["other"]["pass_rate"] == 0.0
    assert v["ghost"]["errors"] == 10 and v["ghost"]["pass_rate"] is None
    assert by_name(data[1]["variants"])["other"]["pass_rate"] == 1.0


def test_runs_limit_experiment_and_width(root: Path) -> None:
    assert [d["run_id"] for d in evalrun_json("runs", "--limit", "1", cwd=root)] == ["r2-cand"]
    assert evalrun_json("runs", "--experiment", "nope", cwd=root) == []
    narrow = evalrun("runs", "--width", "60", cwd=root)
    assert narrow.returncode == 0
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 60
    assert "…" in narrow.stdout
    assert "--limit" in one_line_error(evalrun("runs", "--limit", "-1", cwd=root))


def test_results_option_and_search_upward(root: Path) -> None:
    sub = root / "fixtures" / "basic"
    assert len(evalrun_json("runs", cwd=sub)) == 2  # the nearest results/ above
    elsewhere = root.parent
    assert len(evalrun_json("runs", "--results", str(root / "results"), cwd=elsewhere)) == 2
    empty = elsewhere / "empty-dir"
    empty.mkdir(exist_ok=True)
    assert "no runs" in one_line_error(evalrun("runs", "--results", str(empty), cwd=root))


def test_show_latest_table_gate_and_failed_trials(root: Path) -> None:
    r = evalrun("show", "--failed", "3", cwd=root)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "run r2-cand: completed, 30 trials" in out
    lines = out.splitlines()
    [header] = [line.split() for line in lines if line.split()[:1] == ["task"]]
    assert header == ["task", "base", "other", "ghost"]  # the file's order
    rows = [line.split() for line in lines if line[:1] == "t" and line[1:2].isdigit()]
    assert [r[0] for r in rows] == ["t5", "t4", "t3", "t2", "t1"]  # the file's order
    assert rows[-1][1:] == ["2/2", "0/2", "-", "+2E"]
    assert "gate: none set" in out
    assert "trials that did not pass: 20 (first 3;" in out
    assert "ghost / t1 / 001: error (agent_missing)" in out
    trial = root / "results/exp/r2-cand/variants/ghost/tasks/t1/trials/001"
    assert f"      {trial.relative_to(root)}\n" in out


def test_show_json(root: Path) -> None:
    [data] = evalrun_json("show", "r2", "--failed", "0", cwd=root)
    assert data["run_id"] == "r2-cand" and data["status"] == "completed"
    assert data["tasks"] == ["t5", "t4", "t3", "t2", "t1"]
    assert [v["name"] for v in data["variants"]] == ["base", "other", "ghost"]
    cells = {(c["variant"], c["task"]): c for c in data["cells"]}
    assert cells[("other", "t3")]["judged"] == 2 and cells[("other", "t3")]["passed"] == 0
    assert cells[("ghost", "t3")]["errors"] == 2
    v = by_name(data["variants"])
    assert v["base"]["wilson"][1] == 1.0 and v["base"]["wilson"][0] < 1.0
    assert data["not_passed_total"] == 20 == len(data["not_passed"])
    for f in data["not_passed"]:
        assert f["message"], f
        meta = json.loads((Path(f["trial_dir"]) / "meta.json").read_text())
        assert meta["status"] == f["status"] and meta["message"] == f["message"]


def test_run_references(root: Path) -> None:
    assert evalrun_json("show", "r1", cwd=root)[0]["run_id"] == "r1-base"
    assert evalrun_json("show", "exp/latest~1", cwd=root)[0]["run_id"] == "r1-base"
    assert evalrun_json("show", "latest", "-e", "exp", cwd=root)[0]["run_id"] == "r2-cand"
    assert "ambiguous" in one_line_error(evalrun("show", "r", cwd=root))
    assert "no run matches 'zzz'" in one_line_error(evalrun("show", "zzz", cwd=root))
    assert "latest~5" in one_line_error(evalrun("show", "latest~5", cwd=root))
    assert "nope" in one_line_error(evalrun("show", "latest", "-e", "nope", cwd=root))


def test_compare_finds_the_regression_and_exits_1(root: Path) -> None:
    r = evalrun("compare", "r1", "r2", cwd=root)
    assert r.returncode == 1, r.stderr
    assert "verdict: REGRESSED: other -100.0 pp" in r.stdout
    assert "only in cand (not compared): ghost" in r.stdout
    [data] = evalrun_json("compare", "r1-base", "r2-cand", cwd=root)
    v = by_name(data["variants"])
    assert data["regressed"] is True and data["only_in_cand"] == ["ghost"]
    assert v["other"]["result"]["regressed"] is True
    assert v["other"]["result"]["diff"] == -1.0 and v["other"]["result"]["n_tasks"] == 5
    assert v["other"]["result"]["p_value"] < 0.05
    assert v["base"]["result"]["regressed"] is False
    tasks = {t["task"]: t for t in v["other"]["tasks"]}
    assert tasks["t2"]["base_passed"] == 2 and tasks["t2"]["cand_passed"] == 0
    assert tasks["t2"]["diff"] == -1.0


def test_compare_same_or_better_exits_0_and_checks_alpha(root: Path) -> None:
    same = evalrun("compare", "r2", "r2", cwd=root)
    assert same.returncode == 0 and "no variant is significantly worse" in same.stdout
    better = evalrun("compare", "r2", "r1", cwd=root)  # the candidate improved
    assert better.returncode == 0, better.stdout
    assert "--alpha" in one_line_error(evalrun("compare", "r1", "r2", "--alpha", "2", cwd=root))
    assert "zzz" in one_line_error(evalrun("compare", "zzz", "r2", cwd=root))


def test_export_csv_and_jsonl(root: Path, tmp_path: Path) -> None:
    r = evalrun("export", "r2", "--format", "csv", cwd=root)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 30
    for key in ("variant_name", "task_name", "status", "reward", "duration", "agent_duration",
                "input_tokens", "output_tokens", "cost_usd", "trial_dir", "pier_trial_dir"):
        assert key in rows[0], key  # fmt: skip
    statuses = {(row["variant"], row["status"]) for row in rows}
    assert statuses == {("base", "passed"), ("other", "failed"), ("ghost", "error")}
    base = [row for row in rows if row["variant"] == "base"]
    assert all(row["input_tokens"] == "100" and row["reward"] == "1.0" for row in base)
    assert all(Path(row["trial_dir"], "meta.json").is_file() for row in rows)
    assert all(Path(row["pier_trial_dir"]).is_dir() for row in base)
    out = tmp_path / "trials.jsonl"
    r = evalrun("export", "r1", "-f", "jsonl", "-o", str(out), cwd=root)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 20 and {d["status"] for d in lines} == {"passed"}
    assert "--format" in evalrun("export", cwd=root).stderr
    assert evalrun("export", "-f", "xml", cwd=root).returncode == 2


def test_report_argument_errors(root: Path, tmp_path: Path) -> None:
    assert evalrun("report", cwd=root).returncode == 2  # -o is required
    assert "zzz" in one_line_error(
        evalrun("report", "zzz", "-o", str(tmp_path / "r.html"), cwd=root)
    )
    assert "directory" in one_line_error(evalrun("report", "-o", str(tmp_path), cwd=root))
    missing_dir = tmp_path / "nowhere" / "r.html"
    assert "nowhere" in one_line_error(evalrun("report", "-o", str(missing_dir), cwd=root))


def test_bad_arguments_exit_2(root: Path) -> None:
    assert evalrun(cwd=root).returncode == 2
    assert evalrun("nope", cwd=root).returncode == 2
    assert evalrun("runs", "--nope", cwd=root).returncode == 2
    assert evalrun("gc", cwd=root).returncode == 2  # --keep is required


V1_SCHEMA = """
CREATE TABLE runs (experiment TEXT NOT NULL, run_id TEXT NOT NULL, status TEXT NOT NULL,
    started_at TEXT, finished_at TEXT, run_dir TEXT NOT NULL, n_trials INTEGER DEFAULT 0,
    n_passed INTEGER DEFAULT 0, n_failed INTEGER DEFAULT 0, n_timeout INTEGER DEFAULT 0,
    n_error INTEGER DEFAULT 0, n_not_run INTEGER DEFAULT 0, git_commit TEXT, git_dirty INTEGER,
    PRIMARY KEY (experiment, run_id));
CREATE TABLE trials (experiment TEXT NOT NULL, run_id TEXT NOT NULL, variant TEXT NOT NULL,
    task TEXT NOT NULL, trial INTEGER NOT NULL, status TEXT NOT NULL, reward REAL,
    error_kind TEXT, resumed INTEGER NOT NULL DEFAULT 0, crashed INTEGER NOT NULL DEFAULT 0,
    duration REAL, agent_duration REAL, input_tokens INTEGER, output_tokens INTEGER,
    cost_usd REAL, model TEXT, seed INTEGER, fingerprint TEXT, started_at TEXT,
    finished_at TEXT, trial_dir TEXT, nodeid TEXT,
    PRIMARY KEY (experiment, run_id, variant, task, trial));
"""


def test_an_index_of_the_first_version_is_migrated(root: Path, tmp_path: Path) -> None:
    """An index.db written before version 2 (no messages, names, run_variants) still works."""
    copy = tmp_path / "proj"
    shutil.copytree(root / "results", copy / "results", ignore=shutil.ignore_patterns("workspace"))
    db = copy / "results" / "index.db"
    new = sqlite3.connect(db)
    old_db = tmp_path / "old.db"
    old = sqlite3.connect(old_db)
    old.executescript(V1_SCHEMA)
    for table in ("runs", "trials"):
        cols = [r[1] for r in old.execute(f"PRAGMA table_info({table})")]
        rows = new.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
        old.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(cols))})", rows)
    old.commit()
    old.close()
    new.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.move(old_db, db)

    data = evalrun_json("runs", cwd=copy)
    assert [d["run_id"] for d in data] == ["r2-cand", "r1-base"]
    assert by_name(data[0]["variants"])["other"] == {
        **by_name(data[0]["variants"])["other"], "passed": 0, "failed": 10, "judged": 10,
    }  # fmt: skip
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    [shown] = evalrun_json("show", cwd=copy)
    assert all(f["message"] for f in shown["not_passed"])  # read from meta.json
    assert evalrun("compare", "r1", "r2", cwd=copy).returncode == 1


def test_a_missing_index_is_rebuilt_from_the_files(root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "proj"
    shutil.copytree(root / "results", copy / "results", ignore=shutil.ignore_patterns("workspace"))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{copy}/results/index.db{suffix}").unlink(missing_ok=True)
    r = evalrun("runs", "--json", cwd=copy)
    assert r.returncode == 0 and "rebuilding" in r.stderr
    assert [d["run_id"] for d in json.loads(r.stdout)] == ["r2-cand", "r1-base"]
    assert (copy / "results" / "index.db").is_file()


def test_compare_warns_when_one_run_retried_judged_trials(root: Path, tmp_path: Path) -> None:
    """A run retried with --eval-retry against one that was not: compare says so (the counts
    come from each run's summary.json)."""
    copy = tmp_path / "proj"
    shutil.copytree(root / "results", copy / "results", ignore=shutil.ignore_patterns("workspace"))
    summary = copy / "results" / "exp" / "r2-cand" / "summary.json"
    data = json.loads(summary.read_text())
    data["totals"]["rerun_judged"] = 3
    summary.write_text(json.dumps(data))
    r = evalrun("compare", "r1", "r2", cwd=copy)
    assert "note: unfair comparison: this run ran 3 judged trial(s) again" in r.stdout
    [out] = evalrun_json("compare", "r1", "r2", cwd=copy)
    assert out["retry_mismatch"] is True and out["family"] == "Holm"
    assert "unfair comparison" not in evalrun("compare", "r1", "r2", cwd=root).stdout
