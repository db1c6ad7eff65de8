"""Rebuilding results/index.db from the files (``evalrun reindex``).

Every run directory with a readable run.json gets its ``runs`` row (with summary.json's verdict
when that parses) and every finished trial whose meta.json parses gets its ``trials`` row;
trials still ``running`` are left out, as the live index leaves them out. The pinned baselines
are loaded from ``results/baselines.json`` (:mod:`.pins`). Files that cannot be read are
skipped and named.

The index is emptied and refilled in one transaction under its write lock, so readers see the
old index or the new one. An index that SQLite cannot open (a damaged file) is deleted and
created anew.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from .index import INSERT_RUN, INSERT_TRIAL, forget, run_row, trial_row
from .index_schema import load_pins, migrate, refresh_run_variants
from .layout import (
    META,
    RUN_JSON,
    RUNNING,
    NotAnObject,
    load_object,
    placed_outcome,
    read_summary,
)
from .paths import index_db
from .pins import PinsError, pins_path, read_pins
from .walk import iter_run_dirs, iter_trial_dirs


@dataclass
class Rebuilt:
    runs: int = 0
    trials: int = 0
    #: ``(path, reason)`` of files that could not be indexed.
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    #: True when the old index could not be opened and was replaced.
    replaced_damaged: bool = False


def _read(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return load_object(path), None
    except FileNotFoundError:
        return None, "missing"
    except NotAnObject:
        return None, "not a JSON object"
    except (OSError, ValueError, RecursionError) as exc:
        return None, f"unreadable: {type(exc).__name__}: {exc}"


def _open_fresh(db: Path, result: Rebuilt) -> sqlite3.Connection:
    forget(db)
    try:
        conn = sqlite3.connect(db, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        migrate(conn)
        conn.execute("SELECT COUNT(*) FROM runs").fetchone()
        return conn
    except sqlite3.DatabaseError:
        conn.close()
    result.replaced_damaged = True
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{db}{suffix}")
    conn = sqlite3.connect(db, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    migrate(conn)
    return conn


def _trial_rows(run_dir: Path, result: Rebuilt) -> list[tuple[Any, ...]]:
    rows = []
    for tp in iter_trial_dirs(run_dir):
        meta_path = tp.path / META
        data, problem = _read(meta_path)
        if data is None:
            result.skipped.append((meta_path, problem or "unreadable"))
            continue
        if data.get("status") == RUNNING:
            continue
        try:
            outcome = placed_outcome(data, str(tp.path))
        except TypeError as exc:
            result.skipped.append((meta_path, f"not a trial record: {exc}"))
            continue
        rows.append(trial_row(outcome))
    return rows


def rebuild_index(results: Path) -> Rebuilt:
    """Empty results/index.db and fill it from the files (see the module docstring)."""
    result = Rebuilt()
    db = index_db(results)
    results.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock"):
        conn = _open_fresh(db, result)
        try:
            with conn:
                for table in ("runs", "trials", "run_variants"):
                    conn.execute(f"DELETE FROM {table}")
                try:
                    pins = read_pins(results)
                except PinsError as exc:
                    pins = []
                    result.skipped.append(
                        (pins_path(results), str(exc).removeprefix(f"{pins_path(results)}: "))
                    )
                load_pins(conn, [(p.experiment, p.name, p.run_id, p.pinned_at) for p in pins])
                for rd in iter_run_dirs(results):
                    run, problem = _read(rd.path / RUN_JSON)
                    if run is None:
                        if problem != "missing":
                            result.skipped.append((rd.path / RUN_JSON, problem or "unreadable"))
                        continue
                    summary = read_summary(rd.path)
                    run = {**run, "run_id": rd.run_id}
                    rows = _trial_rows(rd.path, result)
                    conn.executemany(INSERT_TRIAL, rows)
                    conn.execute(INSERT_RUN, run_row(rd.experiment, run, rd.path, summary))
                    refresh_run_variants(conn, rd.experiment, rd.run_id)
                    result.runs += 1
                    result.trials += len(rows)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    return result
