"""The schema of results/index.db, its version, and the migration of older index files.

Kept apart from :mod:`.index` (the writers) so that readers such as the ``evalrun`` command
import nothing but :mod:`sqlite3`.

Versions (``PRAGMA user_version``):

- 0/1: ``runs`` and ``trials`` as first released (``user_version`` was never set).
- 2: more columns in ``runs`` (display name, verdict) and ``trials`` (names, message, step
  durations, cache tokens, Pier path), and the ``run_variants`` table (per run and variant
  counts, so a list of 10,000 runs with their pass rates is one small query).
- 3: the ``baselines`` table: pinned baselines (``evalrun baseline set``), a mirror of
  ``results/baselines.json`` (:mod:`.pins`); an older index gets it filled from that file.

:func:`migrate` brings any older file up to :data:`SCHEMA_VERSION` in place: it adds the
missing columns (NULL in old rows) and fills ``run_variants`` from ``trials``. The caller holds
the index's write lock.
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 4

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
    experiment_name TEXT,
    updated_at   TEXT,
    gated        INTEGER,
    gate_passed  INTEGER,
    verdict      TEXT,
    jobs_dir     TEXT,
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
    variant_name  TEXT,
    task_name     TEXT,
    message       TEXT,
    setup_duration REAL,
    verify_duration REAL,
    cache_tokens  INTEGER,
    pier_trial_dir TEXT,
    PRIMARY KEY (experiment, run_id, variant, task, trial)
);
CREATE TABLE IF NOT EXISTS run_variants (
    experiment   TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    variant      TEXT NOT NULL,
    variant_name TEXT,
    trials       INTEGER NOT NULL,
    passed       INTEGER NOT NULL,
    failed       INTEGER NOT NULL,
    timeout      INTEGER NOT NULL,
    errors       INTEGER NOT NULL,
    PRIMARY KEY (experiment, run_id, variant)
);
CREATE TABLE IF NOT EXISTS baselines (
    experiment   TEXT NOT NULL,
    name         TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    pinned_at    TEXT,
    PRIMARY KEY (experiment, name)
);
CREATE INDEX IF NOT EXISTS trials_by_task ON trials (experiment, task, variant);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_at);
"""

#: Columns added by version 2, per table: (name, SQL type).
_ADDED: dict[str, tuple[tuple[str, str], ...]] = {
    "runs": (
        ("experiment_name", "TEXT"),
        ("updated_at", "TEXT"),
        ("gated", "INTEGER"),
        ("gate_passed", "INTEGER"),
        ("verdict", "TEXT"),
        ("jobs_dir", "TEXT"),
    ),
    "trials": (
        ("variant_name", "TEXT"),
        ("task_name", "TEXT"),
        ("message", "TEXT"),
        ("setup_duration", "REAL"),
        ("verify_duration", "REAL"),
        ("cache_tokens", "INTEGER"),
        ("pier_trial_dir", "TEXT"),
        # version 4: where the tokens and cost came from (gateway, cli, self_reported)
        ("metrics_source", "TEXT"),
    ),
}

#: Refreshes the per-variant counts of the runs matched by the WHERE clause appended.
REFRESH_RUN_VARIANTS = """
INSERT OR REPLACE INTO run_variants
    (experiment, run_id, variant, variant_name, trials, passed, failed, timeout, errors)
SELECT experiment, run_id, variant, MAX(variant_name), COUNT(*),
       SUM(status = 'passed'), SUM(status = 'failed'), SUM(status = 'timeout'),
       SUM(status NOT IN ('passed', 'failed', 'timeout'))
FROM trials
"""


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def refresh_run_variants(conn: sqlite3.Connection, experiment: str, run_id: str) -> None:
    """Recompute one run's ``run_variants`` rows from its trial rows."""
    conn.execute(
        "DELETE FROM run_variants WHERE experiment = ? AND run_id = ?", (experiment, run_id)
    )
    conn.execute(
        REFRESH_RUN_VARIANTS + " WHERE experiment = ? AND run_id = ? "
        "GROUP BY experiment, run_id, variant",
        (experiment, run_id),
    )


INSERT_PIN = (
    "INSERT OR REPLACE INTO baselines (experiment, name, run_id, pinned_at) VALUES (?, ?, ?, ?)"
)


def load_pins(conn: sqlite3.Connection, pins: list[tuple[str, str, str, str]]) -> None:
    """Make the ``baselines`` table hold exactly ``pins`` (experiment, name, run id, when)."""
    conn.execute("DELETE FROM baselines")
    conn.executemany(INSERT_PIN, pins)


def _pins_file(conn: sqlite3.Connection) -> list[tuple[str, str, str, str]]:
    """The pins of the results directory this index file is in (``[]`` when none can be
    read: a damaged pins file is named by ``evalrun baseline``, not here)."""
    from pathlib import Path

    from .pins import PinsError, read_pins

    row = conn.execute("PRAGMA database_list").fetchone()
    if not row or not row[2]:
        return []
    try:
        return [
            (p.experiment, p.name, p.run_id, p.pinned_at) for p in read_pins(Path(row[2]).parent)
        ]
    except PinsError:
        return []


def migrate(conn: sqlite3.Connection) -> bool:
    """Create or upgrade the schema in place (caller holds the write lock); True if it changed.

    Idempotent. A file from a newer version is left alone (its extra columns are ignored).
    """
    version = user_version(conn)
    if version >= SCHEMA_VERSION:
        return False
    had_runs = "runs" in {
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    conn.executescript(SCHEMA)
    for table, added in _ADDED.items():
        have = _columns(conn, table)
        for name, sql_type in added:
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")
    if had_runs:  # an older index: its runs get their per-variant counts
        conn.execute("DELETE FROM run_variants")
        conn.execute(REFRESH_RUN_VARIANTS + " GROUP BY experiment, run_id, variant")
    if version < 3:
        load_pins(conn, _pins_file(conn))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.commit()
    return True
