"""Reading results/index.db: runs, their per-variant pass rates, a run's cells and trials.

Read-only queries for the ``evalrun`` command; they import nothing but :mod:`sqlite3` (the
command must start fast). An index from an older version is migrated in place on open
(:func:`open_index`), under the index's write lock.

A run is identified by ``(experiment slug, run id)``; one pytest session writes the same run
id under every experiment it ran, so a run id alone may name several runs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..report.regression import TaskCounts
from .index_schema import SCHEMA_VERSION, migrate, user_version
from .layout import RUNNING

JUDGED_SQL = "('passed', 'failed', 'timeout')"


class IndexMissing(Exception):
    """There is no index.db where one was expected."""


class RunNotFound(LookupError):
    """A run reference matched no run, or more than one."""


@dataclass(frozen=True)
class VariantCounts:
    variant: str  # slug
    name: str
    trials: int
    passed: int
    failed: int
    timeout: int
    errors: int

    @property
    def judged(self) -> int:
        return self.passed + self.failed + self.timeout

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.judged if self.judged else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "name": self.name,
            "trials": self.trials,
            "passed": self.passed,
            "failed": self.failed,
            "timeout": self.timeout,
            "errors": self.errors,
            "judged": self.judged,
            "pass_rate": self.pass_rate,
        }


@dataclass(frozen=True)
class RunRow:
    experiment: str  # slug
    run_id: str
    status: str
    started_at: str | None
    finished_at: str | None
    run_dir: str
    experiment_name: str | None
    git_commit: str | None
    git_dirty: int | None
    gated: int | None
    gate_passed: int | None
    verdict: str | None
    jobs_dir: str | None
    variants: list[VariantCounts] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.experiment, self.run_id)

    @property
    def name(self) -> str:
        return self.experiment_name or self.experiment


_RUN_FIELDS = (
    "experiment, run_id, status, started_at, finished_at, run_dir, experiment_name,"
    " git_commit, git_dirty, gated, gate_passed, verdict, jobs_dir"
)


def open_index(db: Path) -> sqlite3.Connection:
    """A connection to ``db``; an older schema is migrated first (under the write lock)."""
    if not db.is_file():
        raise IndexMissing(str(db))
    conn = sqlite3.connect(db, timeout=60)
    if user_version(conn) < SCHEMA_VERSION:
        from filelock import FileLock

        with FileLock(str(db) + ".lock"):
            migrate(conn)
    return conn


def _run(row: Sequence[Any]) -> RunRow:
    return RunRow(*row)


def list_runs(
    conn: sqlite3.Connection, experiment: str | None = None, limit: int | None = None
) -> list[RunRow]:
    """Runs, newest first (by start time, then run id), with their per-variant counts."""
    sql = f"SELECT {_RUN_FIELDS} FROM runs"
    args: list[Any] = []
    if experiment is not None:
        sql += " WHERE experiment = ?"
        args.append(experiment)
    sql += " ORDER BY started_at DESC, run_id DESC"
    if limit:
        sql += " LIMIT ?"
        args.append(limit)
    rows = [_run(r) for r in conn.execute(sql, args)]
    counts = variant_counts(conn, rows)
    return [_with_variants(r, counts.get(r.key, [])) for r in rows]


def _with_variants(row: RunRow, variants: list[VariantCounts]) -> RunRow:
    return replace(row, variants=variants)


def _live_counts(conn: sqlite3.Connection, key: tuple[str, str]) -> list[VariantCounts]:
    rows = conn.execute(
        "SELECT variant, MAX(variant_name), COUNT(*), SUM(status = 'passed'),"
        " SUM(status = 'failed'), SUM(status = 'timeout'),"
        f" SUM(status NOT IN {JUDGED_SQL}) FROM trials"
        " WHERE experiment = ? AND run_id = ? GROUP BY variant ORDER BY variant",
        key,
    )
    return [VariantCounts(v, n or v, *counts) for v, n, *counts in rows]


def variant_counts(
    conn: sqlite3.Connection, runs: Sequence[RunRow]
) -> dict[tuple[str, str], list[VariantCounts]]:
    """Per-variant counts of ``runs``: stored ones for finished runs, counted live from the
    trials of running runs (their stored counts lag)."""
    out: dict[tuple[str, str], list[VariantCounts]] = {}
    wanted = {r.key for r in runs if r.status != RUNNING}
    select = (
        "SELECT experiment, run_id, variant, variant_name, trials, passed, failed, timeout,"
        " errors FROM run_variants"
    )
    if len(wanted) > 200:
        rows: Iterator[Any] = conn.execute(select + " ORDER BY experiment, run_id, variant")
    else:
        rows = (
            row
            for key in sorted(wanted)
            for row in conn.execute(
                select + " WHERE experiment = ? AND run_id = ? ORDER BY variant", key
            )
        )
    for exp, rid, v, name, trials_, passed, failed, timeout, errors in rows:
        key = (exp, rid)
        if key in wanted:
            counts = VariantCounts(v, name or v, trials_, passed, failed, timeout, errors)
            out.setdefault(key, []).append(counts)
    for r in runs:
        if r.key not in out:
            out[r.key] = _live_counts(conn, r.key)
    return out


def _ordered_run_ids(conn: sqlite3.Connection, experiment: str | None) -> list[str]:
    sql = "SELECT run_id, MAX(started_at) AS s FROM runs"
    args: list[Any] = []
    if experiment is not None:
        sql += " WHERE experiment = ?"
        args.append(experiment)
    sql += " GROUP BY run_id ORDER BY s DESC, run_id DESC"
    return [r[0] for r in conn.execute(sql, args)]


def _rows_of(conn: sqlite3.Connection, run_id: str, experiment: str | None) -> list[RunRow]:
    sql = f"SELECT {_RUN_FIELDS} FROM runs WHERE run_id = ?"
    args: list[Any] = [run_id]
    if experiment is not None:
        sql += " AND experiment = ?"
        args.append(experiment)
    return [_run(r) for r in conn.execute(sql + " ORDER BY experiment", args)]


def _latest_offset(ref: str) -> int | None:
    """``latest`` -> 0, ``latest~2`` -> 2; None when ``ref`` is not of that form."""
    if ref == "latest":
        return 0
    head, sep, tail = ref.partition("~")
    if head == "latest" and sep and tail.isdigit():
        return int(tail)
    return None


def find_runs(conn: sqlite3.Connection, ref: str, experiment: str | None = None) -> list[RunRow]:
    """The runs ``ref`` names: a run id, a unique prefix of one, ``latest`` (the most recently
    started run id), ``latest~N`` (the N-th before it), each optionally as ``EXPERIMENT/REF``.
    Every experiment's run with that id is returned (one pytest session, several experiments),
    unless ``experiment`` narrows it. Raises :class:`RunNotFound` with a one-line reason."""
    if "/" in ref:
        exp, _, ref = ref.partition("/")
        if experiment is not None and exp != experiment:
            raise RunNotFound(f"{exp}/{ref} contradicts --experiment {experiment}")
        experiment = exp
    where = f" of experiment {experiment!r}" if experiment else ""
    offset = _latest_offset(ref)
    if offset is not None:
        ids = _ordered_run_ids(conn, experiment)
        if offset >= len(ids):
            raise RunNotFound(
                f"no run{where} to call {ref!r} ({len(ids)} run{'s' if len(ids) != 1 else ''})"
            )
        return _rows_of(conn, ids[offset], experiment)
    if not ref:
        raise RunNotFound("empty run id")
    rows = _rows_of(conn, ref, experiment)
    if rows:
        return rows
    pattern = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    sql = "SELECT DISTINCT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\'"
    args: list[Any] = [pattern]
    if experiment is not None:
        sql += " AND experiment = ?"
        args.append(experiment)
    ids = sorted(r[0] for r in conn.execute(sql, args) if r[0].startswith(ref))
    if not ids:
        raise RunNotFound(f"no run{where} matches {ref!r}")
    if len(ids) > 1:
        shown = ", ".join(ids[:5]) + (f", ... ({len(ids)} in all)" if len(ids) > 5 else "")
        raise RunNotFound(f"{ref!r} is ambiguous: {shown}")
    return _rows_of(conn, ids[0], experiment)


def pins_by_run(conn: sqlite3.Connection) -> dict[tuple[str, str], list[str]]:
    """The pinned baselines: ``{(experiment, run id): [pin names]}`` (``evalrun baseline``)."""
    out: dict[tuple[str, str], list[str]] = {}
    for exp, name, rid in conn.execute(
        "SELECT experiment, name, run_id FROM baselines ORDER BY experiment, name"
    ):
        out.setdefault((exp, rid), []).append(name)
    return out


def with_counts(conn: sqlite3.Connection, rows: Sequence[RunRow]) -> list[RunRow]:
    counts = variant_counts(conn, rows)
    return [_with_variants(r, counts.get(r.key, [])) for r in rows]


@dataclass(frozen=True)
class Cell:
    variant: str
    variant_name: str
    task: str
    task_name: str
    trials: int
    passed: int
    judged: int
    errors: int

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.judged if self.judged else None


def cells(conn: sqlite3.Connection, key: tuple[str, str]) -> list[Cell]:
    """Variant x task counts of one run, ordered by variant then task."""
    rows = conn.execute(
        "SELECT variant, MAX(variant_name), task, MAX(task_name), COUNT(*),"
        f" SUM(status = 'passed'), SUM(status IN {JUDGED_SQL}),"
        f" SUM(status NOT IN {JUDGED_SQL}) FROM trials"
        " WHERE experiment = ? AND run_id = ? GROUP BY variant, task ORDER BY variant, task",
        key,
    )
    return [Cell(v, vn or v, t, tn or t, *counts) for v, vn, t, tn, *counts in rows]


def task_counts(conn: sqlite3.Connection, key: tuple[str, str]) -> dict[str, dict[str, TaskCounts]]:
    """``{variant: {task: TaskCounts(passed, judged, errors)}}`` of one run (every cell with a
    trial, also one with only errors)."""
    out: dict[str, dict[str, TaskCounts]] = {}
    for c in cells(conn, key):
        out.setdefault(c.variant, {})[c.task] = TaskCounts(c.passed, c.judged, c.errors)
    return out


TRIAL_FIELDS = (
    "experiment",
    "run_id",
    "variant",
    "variant_name",
    "task",
    "task_name",
    "trial",
    "status",
    "error_kind",
    "reward",
    "duration",
    "setup_duration",
    "agent_duration",
    "verify_duration",
    "input_tokens",
    "output_tokens",
    "cache_tokens",
    "cost_usd",
    "metrics_source",
    "model",
    "seed",
    "resumed",
    "crashed",
    "started_at",
    "finished_at",
    "message",
    "trial_dir",
    "pier_trial_dir",
    "nodeid",
)


def trials(
    conn: sqlite3.Connection,
    key: tuple[str, str],
    *,
    not_passed: bool = False,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """The trial rows of one run (``not_passed``: failed, timed out and errored only), by
    variant, task and trial."""
    sql = f"SELECT {', '.join(TRIAL_FIELDS)} FROM trials WHERE experiment = ? AND run_id = ?"
    if not_passed:
        sql += " AND status != 'passed'"
    sql += " ORDER BY variant, task, trial"
    args: list[Any] = list(key)
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    for row in conn.execute(sql, args):
        data = dict(zip(TRIAL_FIELDS, row, strict=False))
        data["variant_name"] = data["variant_name"] or data["variant"]
        data["task_name"] = data["task_name"] or data["task"]
        data["resumed"] = bool(data["resumed"])
        data["crashed"] = bool(data["crashed"])
        yield data


def count_not_passed(conn: sqlite3.Connection, key: tuple[str, str]) -> int:
    row = conn.execute(
        "SELECT COUNT(*) FROM trials WHERE experiment = ? AND run_id = ? AND status != 'passed'",
        key,
    ).fetchone()
    return int(row[0])
