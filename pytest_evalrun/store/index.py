"""results/index.db: a SQLite index of every run and trial, for queries across runs.

Derived data: the JSON files are the source of truth, and the index can be rebuilt from them.
Many processes write it (workers as trials finish, the controller at the end); writes are
serialised with a file lock beside the database and SQLite's own busy timeout, in WAL mode.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..outcome import TrialOutcome
from ..spec.model import Task, Variant
from . import runs
from .recorder import FinishedRun, Recorder, RunInfo

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    experiment   TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    status       TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    run_dir      TEXT NOT NULL,
    n_trials     INTEGER DEFAULT 0,
    n_passed     INTEGER DEFAULT 0,
    n_failed     INTEGER DEFAULT 0,
    n_timeout    INTEGER DEFAULT 0,
    n_error      INTEGER DEFAULT 0,
    n_not_run    INTEGER DEFAULT 0,
    git_commit   TEXT,
    git_dirty    INTEGER,
    PRIMARY KEY (experiment, run_id)
);
CREATE TABLE IF NOT EXISTS trials (
    experiment    TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    variant       TEXT NOT NULL,
    task          TEXT NOT NULL,
    trial         INTEGER NOT NULL,
    status        TEXT NOT NULL,
    reward        REAL,
    error_kind    TEXT,
    resumed       INTEGER NOT NULL DEFAULT 0,
    crashed       INTEGER NOT NULL DEFAULT 0,
    duration      REAL,
    agent_duration REAL,
    input_tokens  INTEGER,
    output_tokens INTEGER,
    cost_usd      REAL,
    model         TEXT,
    seed          INTEGER,
    fingerprint   TEXT,
    started_at    TEXT,
    finished_at   TEXT,
    trial_dir     TEXT,
    nodeid        TEXT,
    PRIMARY KEY (experiment, run_id, variant, task, trial)
);
CREATE INDEX IF NOT EXISTS trials_by_task ON trials (experiment, task, variant);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_at);
"""

_TRIAL_COLUMNS = (
    "experiment",
    "run_id",
    "variant",
    "task",
    "trial",
    "status",
    "reward",
    "error_kind",
    "resumed",
    "crashed",
    "duration",
    "agent_duration",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "model",
    "seed",
    "fingerprint",
    "started_at",
    "finished_at",
    "trial_dir",
    "nodeid",
)
_INSERT_TRIAL = (
    f"INSERT OR REPLACE INTO trials ({', '.join(_TRIAL_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _TRIAL_COLUMNS)})"
)


def _row(o: TrialOutcome) -> tuple[Any, ...]:
    m = o.metrics
    return (
        o.experiment_slug or o.experiment,
        o.run_id,
        o.variant_slug or o.variant,
        o.task_slug or o.task,
        o.trial,
        o.status,
        o.reward,
        o.error_kind,
        int(o.resumed),
        int(o.crashed),
        o.duration,
        o.agent_duration,
        m.input_tokens,
        m.output_tokens,
        m.cost_usd,
        m.model or o.model,
        o.seed,
        o.fingerprint,
        o.started_at,
        o.finished_at,
        o.trial_dir,
        o.nodeid,
    )


_connections: dict[Path, sqlite3.Connection] = {}


def _connection(db: Path) -> sqlite3.Connection:
    """One connection per database per process, schema checked once (trials finish often)."""
    conn = _connections.get(db)
    if conn is None:
        db.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(db, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        _connections[db] = conn
    return conn


@contextlib.contextmanager
def connect(db: Path) -> Iterator[sqlite3.Connection]:
    """A connection holding the index's write lock, committed on success."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock"):
        conn = _connection(db)
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise


def record_trials(db: Path, outcomes: Iterable[TrialOutcome]) -> None:
    rows = [_row(o) for o in outcomes]
    if not rows:
        return
    with connect(db) as conn:
        conn.executemany(_INSERT_TRIAL, rows)


def record_run(db: Path, experiment: str, run: dict[str, Any], run_dir: Path) -> None:
    counts = run.get("counts") or {}
    git = run.get("git") or {}
    dirty = git.get("dirty")
    with connect(db) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO runs (experiment, run_id, status, started_at, finished_at,"
            " run_dir, n_trials, n_passed, n_failed, n_timeout, n_error, n_not_run, git_commit,"
            " git_dirty) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                experiment,
                run.get("run_id"),
                run.get("status"),
                run.get("started_at"),
                run.get("finished_at"),
                str(run_dir),
                counts.get("total", 0),
                counts.get("passed", 0),
                counts.get("failed", 0),
                counts.get("timeout", 0),
                counts.get("error", 0),
                counts.get("not_run", 0),
                git.get("commit"),
                None if dirty is None else int(dirty),
            ),
        )


class IndexRecorder(Recorder):
    """results/index.db as a Recorder: a row per trial as it finishes, a row per run at the end."""

    name = "index"

    def __init__(self, results: Path) -> None:
        self.db = results / "index.db"

    def record_trial(
        self, run: RunInfo, outcome: TrialOutcome, variant: Variant, task: Task
    ) -> Mapping[str, Any]:
        record_trials(self.db, [outcome])
        return {}

    def record_crash(self, run: RunInfo, outcome: TrialOutcome) -> None:
        record_trials(self.db, [outcome])

    def finish_run(self, finished: FinishedRun) -> None:
        if not finished.ran:
            return
        record_trials(self.db, finished.outcomes)
        data = finished.notes.get("run") or runs.read_run(finished.run.paths)
        if data is not None:
            record_run(self.db, finished.run.paths.experiment, data, finished.run.paths.run_dir)


def expected_durations(db: Path, before: Mapping[str, str], default_before: str) -> dict[str, Any]:
    """Per experiment, the mean trial duration per (variant, task) in its latest run that
    started before ``before[experiment]`` (else ``default_before``), excluding that run itself.

    Returns ``{"weights": {"exp\\x1fvariant\\x1ftask": seconds}, "runs": {exp: run_id}}``;
    empty when there is no index. Read-only: never creates the database.
    """
    if not db.exists():
        return {"weights": {}, "runs": {}}
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)
    except sqlite3.Error:
        return {"weights": {}, "runs": {}}
    weights: dict[str, float] = {}
    chosen: dict[str, str] = {}
    try:
        latest: dict[str, tuple[str, str]] = {}
        for experiment, run_id, started in conn.execute(
            "SELECT experiment, run_id, started_at FROM runs WHERE n_trials > 0"
        ):
            cutoff = before.get(experiment, default_before)
            if started is None or str(started) >= cutoff:
                continue
            if experiment not in latest or (started, run_id) > latest[experiment]:
                latest[experiment] = (str(started), str(run_id))
        for experiment, (_, run_id) in sorted(latest.items()):
            rows = conn.execute(
                "SELECT variant, task, AVG(duration) FROM trials WHERE experiment = ? AND "
                "run_id = ? AND duration > 0 GROUP BY variant, task",
                (experiment, run_id),
            ).fetchall()
            for variant, task, mean in rows:
                weights[f"{experiment}\x1f{variant}\x1f{task}"] = float(mean)
            if rows:
                chosen[experiment] = run_id
    except sqlite3.Error:
        return {"weights": {}, "runs": {}}
    finally:
        conn.close()
    return {"weights": weights, "runs": chosen}
