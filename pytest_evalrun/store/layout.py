"""The standard layout read back: runs, trials, outcomes and summaries, in one place.

The writers are :mod:`.trialdir` (a trial's files), :mod:`.runs` (run.json),
:mod:`.standard` (summary.json and the run's other files) and :mod:`.merge` (a merged run's
run.json); this is their one reader, used by
every ``evalrun`` command, ``merge``, ``check``, ``reindex``, ``--eval-resume`` and the HTML
report. The directories are walked by :mod:`.walk` (hidden directories and links skipped the
same way everywhere); the records are typed in :mod:`pytest_evalrun.layoutjson`.

Two ways to read a JSON object: :func:`load_object` raises (for a reader that names what is
wrong: ``check``, ``reindex``), :func:`read_object` gives None for anything unreadable.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from ..layoutjson import MetaJson, RunJson, Summary
from ..outcome import JUDGED, TrialOutcome
from .atomic import load_json
from .walk import iter_run_dirs, not_regular, subdirs

META = "meta.json"
RUN_JSON = "run.json"
SUMMARY_JSON = "summary.json"
#: The status of a trial (meta.json) or a run (run.json) still running: a trial's meta.json
#: is no outcome yet; a run's trials are not all recorded.
RUNNING = "running"
#: The other statuses of a run (run.json's ``status``).
COMPLETED = "completed"
INTERRUPTED = "interrupted"
FAILED = "failed"


class NotAnObject(ValueError):
    """The file is JSON, but not a JSON object."""


def load_object(path: Path | str) -> dict[str, Any]:
    """The JSON object in ``path``: OSError (FileNotFoundError when missing; also for a FIFO,
    socket, device or directory, which would block the reader or never end), ValueError
    (:class:`NotAnObject` for JSON that is not an object) or RecursionError otherwise."""
    why = not_regular(path)
    if why is not None:
        raise OSError(f"{path}: {why}")
    data = load_json(path)
    if not isinstance(data, dict):
        raise NotAnObject(f"{path} is not a JSON object")
    return data


def read_object(path: Path | str, *, follow_links: bool = True) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable, torn or not one.
    ``follow_links=False``: None for a link too, and for anything but a regular file (a
    report reads nothing outside the run)."""
    try:
        if follow_links:
            return load_object(path)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with open(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return None
            data = json.loads(fh.read())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError, RecursionError):
        return None


def read_meta(trial_dir: Path | str) -> MetaJson | None:
    """A trial directory's meta.json (None when missing, torn or not an object)."""
    return cast("MetaJson | None", read_object(f"{trial_dir}/{META}"))


def read_run_json(run_dir: Path | str) -> RunJson | None:
    """A run directory's run.json (None when missing, torn or not an object)."""
    return cast("RunJson | None", read_object(f"{run_dir}/{RUN_JSON}"))


def read_summary(run_dir: Path | str) -> Summary | None:
    """A run directory's summary.json (None when missing, torn or not an object)."""
    return cast("Summary | None", read_object(f"{run_dir}/{SUMMARY_JSON}"))


def load_summary(run_dir: Path | str) -> Summary:
    """A run directory's summary.json; raises as :func:`load_object` does (for a reader that
    names what is wrong)."""
    return cast("Summary", load_object(f"{run_dir}/{SUMMARY_JSON}"))


def placed_outcome(
    meta: Mapping[str, Any], trial_dir: str, job_dir: str | None = None
) -> TrialOutcome:
    """The outcome meta.json records, placed where the trial is now: meta.json says where it
    was written (another machine's path after ``evalrun merge``), so ``trial_dir`` (and the
    Harbor trial's directory, under ``job_dir`` when given) are set to where it was found.
    TypeError when ``meta`` is not a trial record."""
    outcome = TrialOutcome.from_dict(dict(meta))
    outcome.trial_dir = trial_dir
    if job_dir is not None and outcome.pier_trial_dir:
        outcome.pier_trial_dir = f"{job_dir}/{os.path.basename(outcome.pier_trial_dir)}"
    return outcome


def standing_outcome(trial_dir: Path | str, fingerprint: str) -> TrialOutcome | None:
    """The outcome meta.json records, placed where the trial is now, when it still stands for
    ``--eval-resume``: judged (passed, failed or timeout) with the definition ``fingerprint``;
    else None (also for a missing, torn or foreign file)."""
    try:
        with open(f"{trial_dir}/{META}", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    if fingerprint.encode() not in raw:
        return None  # changed definition (or no fingerprint): no need to parse it
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("status") not in JUDGED:
        return None
    if data.get("fingerprint") != fingerprint:
        return None
    try:
        return placed_outcome(data, str(trial_dir))
    except TypeError:
        return None


def finished_outcome(trial_dir: str, job_dir: str | None = None) -> TrialOutcome | None:
    """:func:`placed_outcome` of a finished trial; None for one that never finished (no
    readable meta.json, not a trial record, or still ``running``)."""
    meta = read_object(f"{trial_dir}/{META}")
    if meta is None or meta.get("status") in (None, RUNNING):
        return None
    try:
        return placed_outcome(meta, trial_dir, job_dir)
    except TypeError:
        return None


def iter_runs(results: Path) -> Iterator[tuple[str, str, RunJson]]:
    """``(experiment, run id, run.json)`` of every stored run with a readable run.json, sorted."""
    for rd in iter_run_dirs(results):
        data = read_run_json(rd.path)
        if data is not None:
            yield rd.experiment, rd.run_id, data


def has_runs(results: Path) -> bool:
    """True when some run directory under ``results`` has a run.json."""
    return any(os.path.isfile(rd.path / RUN_JSON) for rd in iter_run_dirs(results))


def run_exists(results: Path, run_id: str) -> bool:
    """True when some experiment under ``results`` has a run ``run_id`` (a run.json there)."""
    return any(os.path.exists(results / exp / run_id / RUN_JSON) for exp in subdirs(results))
