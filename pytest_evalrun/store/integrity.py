"""Integrity of stored runs (``evalrun check``): every JSON file parses, the index matches.

Checked, for every run directory under ``results/``:

- run.json, summary.json, every variant.json and task.json, and every trial's meta.json,
  verify.json and metrics.json parse as JSON objects (a truncated or half-written file does
  not); run.json names the run of its directory;
- the index holds the run, with run.json's status, start and finish times and counts;
- the index holds every finished trial (meta.json not ``running``) with meta.json's status,
  reward, error kind, seed, fingerprint and times, and no trial that is not on disk; a
  hand-edited meta.json (say a ``failed`` turned ``passed``) differs from its row;
- the Pier job of the run, when there is one: its config.json and result.json, and each trial's
  config.json, result.json and agent/trajectory.json parse.

Files the agent or verify wrote (``artifacts/``, ``verifier/``, ``workspace/``) are theirs and
not checked. Nothing the agent can leave stalls or crashes the check: a file checked that is a
FIFO, a socket or a device is named as such (never opened: a FIFO would block forever), a
directory that cannot be read is named, and so is every file below it that could not be
checked.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import finite
from .index_schema import SCHEMA_VERSION, migrate, user_version
from .layout import META, RUN_JSON, RUNNING, SUMMARY_JSON, NotAnObject, load_object
from .paths import index_db
from .trialdir import METRICS, VERIFY
from .walk import (
    RunDir,
    Unreadable,
    is_pier_job_of,
    iter_run_dirs,
    iter_trial_dirs,
    not_regular,
    pier_job_dir,
    subdirs,
)

#: meta.json fields compared with the trial's index row.
TRIAL_FIELDS = ("status", "reward", "error_kind", "seed", "fingerprint", "started_at",
                "finished_at")  # fmt: skip
TRIAL_FILES = (META, VERIFY, METRICS)


@dataclass(frozen=True)
class Problem:
    path: Path
    what: str

    def to_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "problem": self.what}


@dataclass
class Checked:
    runs: int = 0
    trials: int = 0
    files: int = 0


def _load(path: Path, checked: Checked, problems: list[Problem]) -> dict[str, Any] | None:
    """The JSON object in ``path``; a problem (and None) when it is not one."""
    checked.files += 1
    why = not_regular(path)
    if why is not None:
        problems.append(Problem(path, why))
        return None
    try:
        return load_object(path)
    except FileNotFoundError:
        problems.append(Problem(path, "missing"))
        return None
    except NotAnObject:
        problems.append(Problem(path, "not a JSON object (hand-edited?)"))
        return None
    except ValueError as exc:
        problems.append(Problem(path, f"not valid JSON (truncated or hand-edited?): {exc}"))
        return None
    except RecursionError:
        problems.append(Problem(path, "JSON nested too deep to read (hand-edited?)"))
        return None
    except OSError as exc:
        problems.append(Problem(path, f"unreadable: {exc}"))
        return None


def _differences(file: dict[str, Any], index: dict[str, Any], fields: tuple[str, ...]) -> str:
    """The fields that differ. A NaN or infinity an older version wrote (SQLite stores NaN as
    NULL) counts as no value on both sides: an untouched trial is never called hand-edited."""
    diffs = [
        f"{name}: file {file.get(name)!r}, index {index.get(name)!r}"
        for name in fields
        if finite(file.get(name)) != finite(index.get(name))
    ]
    return "; ".join(diffs)


class _Index:
    """The index's rows, read once per run."""

    def __init__(self, db: Path, problems: list[Problem]) -> None:
        self.conn: sqlite3.Connection | None = None
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        if not db.is_file():
            problems.append(Problem(db, "missing (evalrun reindex rebuilds it)"))
            return
        try:
            conn = sqlite3.connect(db, timeout=60)
            if user_version(conn) < SCHEMA_VERSION:
                from filelock import FileLock

                with FileLock(str(db) + ".lock"):
                    migrate(conn)
            conn.row_factory = sqlite3.Row
            for row in conn.execute("SELECT * FROM runs"):
                self.runs[(row["experiment"], row["run_id"])] = dict(row)
            self.conn = conn
        except sqlite3.DatabaseError as exc:
            problems.append(Problem(db, f"damaged: {exc} (evalrun reindex rebuilds it)"))

    def trials(self, key: tuple[str, str]) -> dict[tuple[str, str, int], dict[str, Any]]:
        if self.conn is None:
            return {}
        try:
            rows = self.conn.execute(
                "SELECT * FROM trials WHERE experiment = ? AND run_id = ?", key
            ).fetchall()
        except UnicodeEncodeError:  # a directory name that is not UTF-8: never indexed
            return {}
        return {(r["variant"], r["task"], r["trial"]): dict(r) for r in rows}


def _check_run(
    rd: RunDir,
    index: _Index,
    jobs: Callable[[RunDir, dict[str, Any] | None], Path | None],
    checked: Checked,
    problems: list[Problem],
) -> None:
    checked.runs += 1
    run = _load(rd.path / RUN_JSON, checked, problems)
    row = index.runs.pop(rd.key, None)
    if run is not None:
        if run.get("run_id") != rd.run_id:
            problems.append(
                Problem(rd.path / RUN_JSON, f"names run {run.get('run_id')!r} (hand-edited?)")
            )
        if index.conn is not None and row is None:
            problems.append(Problem(rd.path / RUN_JSON, "run not in the index"))
        elif row is not None:
            counts = run.get("counts") or {}
            file_view = {
                "status": run.get("status"),
                "started_at": run.get("started_at"),
                "finished_at": run.get("finished_at"),
                "n_trials": counts.get("total", 0),
                "n_passed": counts.get("passed", 0),
                "n_failed": counts.get("failed", 0),
                "n_error": counts.get("error", 0),
            }
            diff = _differences(file_view, row, tuple(file_view))
            if diff:
                problems.append(Problem(rd.path / RUN_JSON, f"differs from the index: {diff}"))
    summary = None
    if (rd.path / SUMMARY_JSON).exists():
        summary = _load(rd.path / SUMMARY_JSON, checked, problems)
    variants = rd.path / "variants"
    for vdir in (variants / v for v in subdirs(variants)):
        if os.path.lexists(vdir / "variant.json"):
            _load(vdir / "variant.json", checked, problems)
        for tdir in (vdir / "tasks" / t for t in subdirs(vdir / "tasks")):
            if os.path.lexists(tdir / "task.json"):
                _load(tdir / "task.json", checked, problems)
    indexed = index.trials(rd.key)
    unreadable: Unreadable = []
    for tp in iter_trial_dirs(rd.path, unreadable):
        checked.trials += 1
        meta = _load(tp.path / META, checked, problems)
        for name in TRIAL_FILES[1:]:
            if os.path.lexists(tp.path / name):
                _load(tp.path / name, checked, problems)
        row = indexed.pop((tp.variant, tp.task, tp.trial), None)
        if meta is None or meta.get("status") == RUNNING or index.conn is None:
            continue
        if row is None:
            problems.append(Problem(tp.path / META, "trial not in the index"))
            continue
        diff = _differences(meta, row, TRIAL_FIELDS)
        if diff:
            problems.append(
                Problem(tp.path / META, f"differs from the index (hand-edited?): {diff}")
            )
    problems.extend(Problem(Path(path), why) for path, why in unreadable)
    hidden = tuple(path + os.sep for path, _ in unreadable)
    for v, t, n in sorted(indexed):
        path = rd.path / "variants" / v / "tasks" / t / "trials" / f"{n:03d}"
        if str(path).startswith(hidden):
            problems.append(Problem(path, "not checked: below an unreadable directory"))
        else:
            problems.append(Problem(path, "in the index, but not on disk"))
    job = jobs(rd, summary)
    if job is not None:
        _check_job(job, checked, problems)


def _check_job(job: Path, checked: Checked, problems: list[Problem]) -> None:
    for name in ("config.json", "result.json"):
        if os.path.lexists(job / name):
            _load(job / name, checked, problems)
    unreadable: Unreadable = []
    for trial in (job / name for name in subdirs(job, unreadable)):
        for name in ("config.json", "result.json", "agent/trajectory.json"):
            if os.path.lexists(trial / name):
                _load(trial / name, checked, problems)
    problems.extend(Problem(Path(path), why) for path, why in unreadable)


def default_jobs(results: Path, jobs: Path | None) -> Callable[[RunDir, Any], Path | None]:
    """Where a run's Pier job is: under ``jobs`` when given, else under the jobs directory its
    summary.json names, else under ``jobs/`` beside ``results/``; None when there is none."""

    def find(rd: RunDir, summary: Any) -> Path | None:
        bases: list[Path] = []
        if jobs is not None:
            bases.append(jobs)
        else:
            listed = summary.get("experiments") if isinstance(summary, dict) else None
            for exp in listed if isinstance(listed, list) else []:
                if isinstance(exp, dict) and isinstance(exp.get("jobs_dir"), str):
                    bases.append(Path(exp["jobs_dir"]))
            bases.append(results.parent / "jobs")
        for base in bases:
            job = pier_job_dir(base, rd.experiment, rd.run_id)
            if is_pier_job_of(job, rd.run_id):
                return job
        return None

    return find


def check_results(results: Path, jobs: Path | None = None) -> tuple[Checked, list[Problem]]:
    """Check every run under ``results`` (see the module docstring)."""
    problems: list[Problem] = []
    checked = Checked()
    index = _Index(index_db(results), problems)
    find_job = default_jobs(results, jobs)
    unreadable: Unreadable = []
    for rd in iter_run_dirs(results, unreadable):
        _check_run(rd, index, find_job, checked, problems)
    problems.extend(Problem(Path(path), why) for path, why in unreadable)
    hidden = tuple(path + os.sep for path, _ in unreadable)
    for (exp, rid), _row in sorted(index.runs.items()):
        where = results / exp / rid
        if str(where).startswith(hidden):
            problems.append(Problem(where, "not checked: below an unreadable directory"))
        else:
            problems.append(Problem(where, "in the index, but not on disk"))
    if index.conn is not None:
        index.conn.close()
    return checked, problems
