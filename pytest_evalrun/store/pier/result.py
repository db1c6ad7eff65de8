"""A Pier job's ``result.json`` (Harbor's ``JobResult``): created, kept live, made final.

While trials finish, each one's stats delta is queued in ``.pending.jsonl`` and folded into
``result.json`` under the job's lock at most every :data:`FOLD_INTERVAL` seconds (read, apply,
atomic replace), so the live view stays close behind and a run of short trials does not
rewrite the file for every trial. :meth:`JobResultFile.write_final` replaces the stats with
ones recomputed from every trial's result.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_evalrun.store.atomic import strict_dumps, write_json_atomic
from pytest_evalrun.store.pier.files import JobFiles, json_or_none, norm_time, now
from pytest_evalrun.store.pier.harborvalues import fmt_time
from pytest_evalrun.store.pier.jobstats import (
    apply_entry,
    compute_job_stats,
    empty_stats,
    progress_mean,
    stats_from_entries,
)

#: Fold pending stats deltas into the job's result.json at most every this many seconds while
#: trials finish (finalize and flush() fold everything).
FOLD_INTERVAL = 2.0


def _pending_counts(result: dict[str, Any], n_total_trials: int) -> None:
    """Set ``n_total_trials`` (never below the completed trials) and ``n_pending_trials``."""
    stats = result.get("stats")
    if not isinstance(stats, dict):
        result["n_total_trials"] = n_total_trials
        return
    done = int(stats.get("n_completed_trials") or 0)
    result["n_total_trials"] = max(n_total_trials, done)
    stats["n_pending_trials"] = max(
        result["n_total_trials"] - done - int(stats.get("n_running_trials") or 0), 0
    )


class JobResultFile:
    """``result.json`` and its queue of stats deltas. Methods named ``*_locked`` expect the
    caller to hold the job's lock; the others take it."""

    def __init__(self, files: JobFiles, job_id: str | None) -> None:
        self.files = files
        self._job_id = job_id
        self._confirmed = False

    @property
    def job_id(self) -> str:
        """The job's UUID: the one in an existing result.json wins (a resumed job keeps it)."""
        if not self._confirmed:
            with self.files.lock():
                self.load_or_init_locked()
        assert self._job_id is not None
        return self._job_id

    def read(self) -> dict[str, Any] | None:
        data = json_or_none(self.files.result_path)
        return data if isinstance(data, dict) else None

    def load_or_init_locked(
        self, *, started_at: str | None = None, n_total_trials: int | None = None
    ) -> dict[str, Any]:
        """result.json as it is, created (initial, empty stats) when missing."""
        data = json_or_none(self.files.result_path)
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            self._job_id = data["id"]
            self._confirmed = True
            return data
        self._job_id = str(uuid.uuid4()) if self._job_id is None else str(uuid.UUID(self._job_id))
        self._confirmed = True
        start = norm_time(started_at, now())
        total = n_total_trials or 0
        stats = empty_stats()
        stats["n_pending_trials"] = total
        data = {
            "id": self._job_id,
            "started_at": start,
            "updated_at": start,
            "finished_at": None,
            "n_total_trials": total,
            "stats": stats,
        }
        write_json_atomic(self.files.result_path, data)
        return data

    def _write_locked(self, result: dict[str, Any], *, drop_pending: bool = False) -> None:
        result["updated_at"] = fmt_time(now())
        write_json_atomic(self.files.result_path, result)
        if drop_pending:
            with contextlib.suppress(FileNotFoundError):
                self.files.pending_path.unlink()

    def restart_locked(
        self,
        result: dict[str, Any],
        trial_results: Iterable[Mapping[str, Any]] | None,
        n_total_trials: int,
    ) -> None:
        """A finished job continued by a new session: running again, its stats recomputed
        from ``trial_results`` (left as they are when None: finalize recomputes them)."""
        result["finished_at"] = None
        if trial_results is None:
            write_json_atomic(self.files.result_path, result)
            return
        results = list(trial_results)
        total = max(n_total_trials, len(results))
        result["n_total_trials"] = total
        result["stats"] = compute_job_stats(results, n_total_trials=total)
        self._write_locked(result, drop_pending=True)

    def set_total_locked(self, result: dict[str, Any], n_total_trials: int) -> None:
        """Another process of the session, or a session that did not finish, counts anew."""
        _pending_counts(result, n_total_trials)
        self._write_locked(result)

    def reopen_finished(self, *, n_total_trials: int, finished_at: str) -> dict[str, Any] | None:
        """Stamp a finished job finished again when it has ``n_total_trials`` and nothing
        queued; the result written, or None when that does not apply."""
        with self.files.lock():
            result = self.read()
            if (
                result is None
                or result.get("finished_at") is None
                or result.get("n_total_trials") != n_total_trials
                or self.files.pending_path.exists()
            ):
                return None
            result["finished_at"] = norm_time(finished_at, now())
            self._write_locked(result)
        return result

    def queue_locked(self, entry: dict[str, Any], previous: dict[str, Any] | None) -> None:
        """Queue a trial's stats delta (replacing ``previous``); fold the queue when due."""
        line = strict_dumps({"add": entry, "remove": previous}, ensure_ascii=False) + "\n"
        with open(self.files.pending_path, "a", encoding="utf-8") as fh:
            fh.write(line)
        self.fold_locked(force=False)

    def fold_locked(self, *, force: bool) -> None:
        """Apply ``.pending.jsonl`` to result.json (read-modify-write), when due or forced."""
        try:
            mtime = self.files.result_path.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if not force and time.time() - mtime < FOLD_INTERVAL:
            return
        try:
            text = self.files.pending_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        result = self.load_or_init_locked()
        stats = result.get("stats")
        if not isinstance(stats, dict):
            stats = empty_stats()
        for key, default in empty_stats().items():
            stats.setdefault(key, default)
        touched: set[str] = set()
        for line in text.splitlines():
            try:
                delta = json.loads(line)
            except ValueError:
                continue  # a torn last line from a crash
            if delta.get("remove"):
                apply_entry(stats, delta["remove"], -1)
                touched.add(delta["remove"]["evals_key"])
            apply_entry(stats, delta["add"], +1)
            touched.add(delta["add"]["evals_key"])
        for key in touched:
            group = stats["evals"].get(key)
            if group is not None:
                group["metrics"] = progress_mean(group)
        result["stats"] = stats
        _pending_counts(result, int(result.get("n_total_trials") or 0))
        self._write_locked(result, drop_pending=True)

    def write_final(
        self, entries: Sequence[Mapping[str, Any]], *, n_total_trials: int, finished_at: str
    ) -> dict[str, Any]:
        """result.json final: stats recomputed from the trials' ``entries``
        (:func:`~.stats.stats_entry`, in trial-name order), ``finished_at`` set."""
        total = max(n_total_trials, len(entries))
        with self.files.lock():
            result = self.load_or_init_locked(n_total_trials=total)
            result["n_total_trials"] = total
            result["stats"] = stats_from_entries(entries, n_total_trials=total)
            result["finished_at"] = norm_time(finished_at, now())
            self._write_locked(result, drop_pending=True)
        return result
