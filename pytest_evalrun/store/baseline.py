"""``--eval-baseline-run RUN``: the regression gate's data, read from the index.

The baseline run of an experiment is found in ``results/index.db`` (a run id, a unique prefix,
``latest`` or ``latest~N``, never the run being written); the comparison itself is
:func:`pytest_evalrun.report.regression.compare_variant`, the same code ``evalrun compare``
uses: per variant, pass rates paired by task, one-sided.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..outcome import TrialOutcome
from ..report.policy import ERRORS_COUNT
from ..report.regression import TaskCounts, counts_from_outcomes, regression_section
from .paths import index_db
from .query import IndexMissing, RunNotFound, find_runs, open_index, task_counts


class BaselineError(LookupError):
    """The baseline run cannot be found (one line, naming the experiment and the reference)."""


def _ordered_ids(conn: sqlite3.Connection, experiment: str, exclude: str) -> list[str]:
    rows = conn.execute(
        "SELECT run_id FROM runs WHERE experiment = ? AND run_id != ? "
        "ORDER BY started_at DESC, run_id DESC",
        (experiment, exclude),
    )
    return [r[0] for r in rows]


class NoEarlierRun(BaselineError):
    """The experiment has no earlier run at all: there is nothing to compare with yet."""


def resolve_baseline(results: Path, ref: str, experiment: str, current_run: str) -> str:
    """The run id of ``experiment``'s baseline run. ``latest`` is the latest run before the one
    this session writes (``latest~N`` the N-th before that). :class:`NoEarlierRun` when the
    experiment has never run before (a new experiment), :class:`BaselineError` when it has but
    ``ref`` names none of its runs."""
    try:
        conn = open_index(index_db(results))
    except IndexMissing:
        raise NoEarlierRun(f"experiment {experiment!r} has no earlier run") from None
    try:
        if not _ordered_ids(conn, experiment, current_run):
            raise NoEarlierRun(f"experiment {experiment!r} has no earlier run")
        head, sep, tail = ref.partition("~")
        if head == "latest" and (not sep or tail.isdigit()):
            ids = _ordered_ids(conn, experiment, current_run)
            n = int(tail) if sep else 0
            if n >= len(ids):
                raise BaselineError(
                    f"--eval-baseline-run {ref}: experiment {experiment!r} has "
                    f"{len(ids)} earlier run(s)"
                )
            return ids[n]
        try:
            rows = find_runs(conn, ref, experiment)
        except RunNotFound as exc:
            raise BaselineError(f"--eval-baseline-run {ref}: {exc}") from None
        if rows[0].run_id == current_run:
            raise BaselineError(
                f"--eval-baseline-run {ref} is the run this session writes; name an earlier one"
            )
        return rows[0].run_id
    finally:
        conn.close()


def regression(
    results: Path,
    experiment: str,
    baseline_run: str,
    outcomes: Sequence[TrialOutcome],
    *,
    alpha: float,
    variant_names: Mapping[str, str],
    errors: str = ERRORS_COUNT,
) -> dict[str, Any]:
    """The regression section of an experiment's summary: each variant of this run against
    the same variant of ``baseline_run`` (read from the index). ``variant_names``: slug ->
    name, in report order. The judged trials each run ran again (``--eval-retry``) come from
    the outcomes and the baseline's summary.json: the section warns when one run retried and
    the other did not."""
    import json

    from .paths import RunPaths

    base_rerun: int | None = None
    try:
        totals = json.loads(
            RunPaths(results, experiment, baseline_run).summary_json.read_text("utf-8")
        ).get("totals", {})
        if isinstance(totals.get("rerun_judged"), int):
            base_rerun = totals["rerun_judged"]
    except (OSError, ValueError, AttributeError):
        base_rerun = None  # no summary: unknown, no warning either way
    return regression_section(
        baseline_counts(results, experiment, baseline_run),
        counts_from_outcomes(outcomes),
        baseline_run=baseline_run,
        alpha=alpha,
        variant_names=variant_names,
        errors=errors,
        base_rerun_judged=base_rerun,
        cand_rerun_judged=sum(1 for o in outcomes if o.attempt > 1 and o.rerun_judged),
    )


def baseline_counts(
    results: Path, experiment: str, baseline_run: str
) -> dict[str, dict[str, TaskCounts]]:
    """The baseline run's counts, variant slug -> task slug -> counts, from the index."""
    conn = open_index(index_db(results))
    try:
        return task_counts(conn, (experiment, baseline_run))
    finally:
        conn.close()
