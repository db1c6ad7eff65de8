"""results/index.db: a SQLite index of every run and trial, for queries across runs.

Derived data: the JSON files are the source of truth, and the index can be rebuilt from them.
Many processes write it (workers as trials finish, the controller at the end); writes are
serialised with a file lock beside the database and SQLite's own busy timeout, in WAL mode.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..experiment.model import Task, Variant
from ..layoutjson import RunJson, Summary
from ..outcome import TrialOutcome, metrics_source
from ..secrets import Redactor
from . import runs
from .index_schema import SCHEMA, SCHEMA_VERSION, load_pins, migrate, refresh_run_variants
from .pins import Pin
from .recorder import FinishedRun, Recorder, RunInfo

__all__ = [
    "INSERT_RUN",
    "INSERT_TRIAL",
    "SCHEMA",
    "SCHEMA_VERSION",
    "IndexRecorder",
    "connect",
    "delete_runs",
    "forget",
    "record_changed_trials",
    "record_run",
    "record_trials",
    "run_row",
    "sync_pins",
    "trial_row",
]

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
    "variant_name",
    "task_name",
    "message",
    "setup_duration",
    "verify_duration",
    "cache_tokens",
    "pier_trial_dir",
    "metrics_source",
)
INSERT_TRIAL = (
    f"INSERT OR REPLACE INTO trials ({', '.join(_TRIAL_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _TRIAL_COLUMNS)})"
)


def trial_row(o: TrialOutcome, redactor: Redactor | None = None) -> tuple[Any, ...]:
    m = o.metrics
    message = redactor.redact(o.message) if redactor else o.message
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
        o.variant,
        o.task,
        message,
        o.setup_duration,
        o.verify_duration,
        m.cache_tokens,
        o.pier_trial_dir,
        metrics_source(m.source),
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
        migrate(conn)
        _connections[db] = conn
    return conn


def forget(db: Path) -> None:
    """Close this process's cached connection to ``db`` (before the file is replaced)."""
    conn = _connections.pop(db, None)
    if conn is not None:
        conn.close()


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


def record_trials(
    db: Path, outcomes: Iterable[TrialOutcome], redactor: Redactor | None = None
) -> None:
    rows = [trial_row(o, redactor) for o in outcomes]
    if not rows:
        return
    with connect(db) as conn:
        conn.executemany(INSERT_TRIAL, rows)


def record_changed_trials(
    db: Path, outcomes: Iterable[TrialOutcome], redactor: Redactor | None = None
) -> None:
    """:func:`record_trials`, leaving alone the rows that already hold exactly these values
    (a resumed run's reused trials, recorded by an earlier session: a no-op resume writes no
    row); any row that differs, or is missing, is written."""
    rows = [trial_row(o, redactor) for o in outcomes]
    if not rows:
        return
    with connect(db) as conn:
        stored: set[tuple[Any, ...]] = set()
        for key in dict.fromkeys((row[0], row[1]) for row in rows):
            stored.update(conn.execute(_SELECT_RUN_TRIALS, key))
        conn.executemany(INSERT_TRIAL, [row for row in rows if row not in stored])


_SELECT_RUN_TRIALS = (
    f"SELECT {', '.join(_TRIAL_COLUMNS)} FROM trials WHERE experiment = ? AND run_id = ?"
)


def _experiment_summary(
    summary: Mapping[str, Any] | None, experiment: str, name: str | None
) -> Mapping[str, Any]:
    """This experiment's entry of a summary.json (a run's summary has one), else {}."""
    for exp in (summary or {}).get("experiments") or []:
        if isinstance(exp, Mapping) and exp.get("name") in (name, experiment):
            return exp
    return {}


def run_row(
    experiment: str,
    run: Mapping[str, Any],
    run_dir: Path,
    summary: Mapping[str, Any] | None = None,
) -> tuple[Any, ...]:
    """The ``runs`` row of a run.json (and its summary.json, for the gate verdict)."""
    counts = run.get("counts") or {}
    git = run.get("git") or {}
    dirty = git.get("dirty")
    exp = _experiment_summary(summary, experiment, run.get("experiment"))
    verdict = exp.get("verdict") if exp else (summary or {}).get("verdict")
    gated = gate_passed = None
    if isinstance(verdict, Mapping):
        gated = int(bool(verdict.get("gated")))
        passed = verdict.get("passed")
        gate_passed = None if passed is None else int(bool(passed))
    return (
        experiment,
        run.get("run_id"),
        run.get("status") or "unknown",
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
        run.get("experiment"),
        run.get("updated_at"),
        gated,
        gate_passed,
        None if verdict is None else json.dumps(verdict, default=str),
        exp.get("jobs_dir") if exp else None,
    )


_RUN_COLUMNS = (
    "experiment, run_id, status, started_at, finished_at, run_dir, n_trials, n_passed, n_failed,"
    " n_timeout, n_error, n_not_run, git_commit, git_dirty, experiment_name, updated_at, gated,"
    " gate_passed, verdict, jobs_dir"
)
INSERT_RUN = f"INSERT OR REPLACE INTO runs ({_RUN_COLUMNS}) VALUES ({', '.join('?' * 20)})"


def record_run(
    db: Path,
    experiment: str,
    run: RunJson,
    run_dir: Path,
    summary: Summary | None = None,
) -> None:
    """The run's row (from run.json, and summary.json's verdict when given, else the verdict
    already recorded) and its per-variant counts."""
    row = run_row(experiment, run, run_dir, summary)
    with connect(db) as conn:
        if summary is None:  # keep the verdict of the latest summary
            old = conn.execute(
                "SELECT gated, gate_passed, verdict, jobs_dir FROM runs"
                " WHERE experiment = ? AND run_id = ?",
                (experiment, run.get("run_id")),
            ).fetchone()
            if old is not None:
                row = (*row[:16], *old)
        conn.execute(INSERT_RUN, row)
        refresh_run_variants(conn, experiment, str(run.get("run_id")))


def delete_runs(db: Path, runs_: Iterable[tuple[str, str]]) -> None:
    """Remove runs (experiment slug, run id) and their trials from the index."""
    keys = list(runs_)
    with connect(db) as conn:
        for table in ("runs", "trials", "run_variants"):
            conn.executemany(f"DELETE FROM {table} WHERE experiment = ? AND run_id = ?", keys)


def sync_pins(db: Path, pins: Iterable[Pin]) -> None:
    """Make the index's ``baselines`` table hold exactly ``pins`` (results/baselines.json)."""
    rows = [(p.experiment, p.name, p.run_id, p.pinned_at) for p in pins]
    with connect(db) as conn:
        load_pins(conn, rows)


class IndexRecorder(Recorder):
    """results/index.db as a Recorder: a row per trial as it finishes, a row per run at the end."""

    name = "index"

    def __init__(self, results: Path) -> None:
        self.db = results / "index.db"

    def start_run(self, run: RunInfo) -> None:
        # the run is listed (as running) from its first trial on
        data = runs.read_run(run.paths)
        if data is not None:
            record_run(self.db, run.paths.experiment, data, run.paths.run_dir)

    def record_trial(
        self, run: RunInfo, outcome: TrialOutcome, variant: Variant, task: Task
    ) -> Mapping[str, Any]:
        record_trials(self.db, [outcome], run.redactor)
        return {}

    def relabel(self, run: RunInfo, outcome: TrialOutcome, labels: Mapping[str, Any]) -> None:
        record_trials(self.db, [outcome], run.redactor)

    def record_crash(self, run: RunInfo, outcome: TrialOutcome) -> None:
        record_trials(self.db, [outcome], run.redactor)

    def finish_run(self, finished: FinishedRun) -> None:
        if not finished.ran:
            return
        record_changed_trials(self.db, finished.outcomes, finished.run.redactor)
        data = finished.notes.get("run") or runs.read_run(finished.run.paths)
        if data is not None:
            paths = finished.run.paths
            record_run(self.db, paths.experiment, data, paths.run_dir, finished.summary)


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
