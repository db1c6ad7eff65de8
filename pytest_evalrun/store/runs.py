"""run.json: the run manifest and its lifecycle (running -> completed / interrupted / failed).

Several processes (xdist workers, the controller, a second resuming pytest) update one run.json;
every update is a read-modify-write under the run's file lock, written atomically.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..layoutjson import (
    EnvironmentInfo,
    GitState,
    RunGates,
    RunJson,
    RunPlan,
    RunSession,
    Selection,
)
from .atomic import write_json_atomic
from .layout import COMPLETED as COMPLETED  # a run's statuses are the layout's: runs.X reads
from .layout import FAILED as FAILED
from .layout import INTERRUPTED as INTERRUPTED
from .layout import RUNNING as RUNNING
from .layout import iter_runs, read_run_json, run_exists
from .paths import RunPaths

SCHEMA_VERSION = 1


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id(now: datetime | None = None) -> str:
    """A sortable UTC timestamp, Harbor's job-name style: ``2026-11-23__12-49-55``."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%d__%H-%M-%S")


def git_state(directory: Path) -> GitState:
    """Commit and dirty flag of the repository holding ``directory`` (None outside a repo)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(timeout: float, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True,
                              env=env, timeout=timeout, check=False)  # fmt: skip

    try:
        commit = git(10, "rev-parse", "HEAD")
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = git(30, "status", "--porcelain", "--untracked-files=no")
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment_info() -> EnvironmentInfo:
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "pytest_evalrun": ver("pytest-evalrun"),
        "pytest": ver("pytest"),
        "pytest_xdist": ver("pytest-xdist"),
    }


def read_run(paths: RunPaths) -> RunJson | None:
    """run.json of ``paths``' run, to update (None when missing or unreadable)."""
    return read_run_json(paths.run_dir)


def update_run(paths: RunPaths, change: Callable[[RunJson | None], RunJson]) -> RunJson:
    """Read-modify-write run.json under the run lock."""
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(paths.lock)):
        data = change(read_run(paths))
        data["updated_at"] = utc_now()
        write_json_atomic(paths.run_json, data, fsync=True)
        return data


def start_run(
    paths: RunPaths,
    *,
    experiment: str,
    experiment_file: str,
    session_id: str,
    pytest_args: list[str],
    git: GitState,
    info: EnvironmentInfo,
    plan: RunPlan | None = None,
    shard: str = "",
    isolation: Mapping[str, dict[str, Any]] | None = None,
    selection: Selection | None = None,
    retry: Sequence[str] = (),
) -> RunJson:
    """Create run.json, or mark an existing run running again for this session (idempotent).

    ``plan``: the experiment's variants, tasks and gates in file order (what a summary of the
    run needs besides its trials; ``evalrun merge`` reads it). ``shard``: --eval-shard.
    ``isolation``: what each variant's steps get in this session (also kept per session:
    a resumed run may have run with another ``--eval-sandbox``). ``selection``: how many of
    the experiment's trials this session selected (``{"trials": n, "of": total}``, after
    -k/-m/node ids/--lf and --eval-shard), kept in the session's entry; ``retry``: the
    session's --eval-retry statuses (the baseline lookup reads both, store/baseline.py)."""

    def change(data: RunJson | None) -> RunJson:
        now = utc_now()
        if data is None:
            data = {
                "schema_version": SCHEMA_VERSION,
                "run_id": paths.run_id,
                "experiment": experiment,
                "experiment_file": experiment_file,
                "status": RUNNING,
                "started_at": now,
                "finished_at": None,
                "counts": {},
                "sessions": [],
            }
        sessions = data.setdefault("sessions", [])
        if not any(s.get("id") == session_id for s in sessions):
            session: RunSession = {
                "id": session_id,
                "started_at": now,
                "finished_at": None,
                "status": RUNNING,
                "pytest_args": pytest_args,
            }
            if shard:
                session["shard"] = shard
            if isolation is not None:
                session["isolation"] = dict(isolation)
            if selection is not None:
                session["selection"] = selection.copy()
            session["retry"] = list(retry)
            sessions.append(session)
            data["status"] = RUNNING
            data["finished_at"] = None
        data["pytest_args"] = pytest_args
        if plan is not None:
            data["plan"] = plan
        data["git"] = git
        if isolation is not None:
            data["isolation"] = dict(isolation)
        return {**data, **info}  # data.update(info), in a form mypy checks

    return update_run(paths, change)


def finish_run(
    paths: RunPaths,
    *,
    session_id: str,
    status: str,
    counts: dict[str, int],
    pytest_args: list[str] | None = None,
    gates: RunGates | None = None,
) -> RunJson:
    """Mark this session finished with ``status``; returns run.json's new content.

    ``gates``: every gate's inputs of this session (``finish.Gates.to_json()``), kept as
    run.json's ``gates``; its ``retry`` becomes every session's ``--eval-retry`` together
    (a run some session reran failures in stays one whose failures were rerun)."""

    def change(data: RunJson | None) -> RunJson:
        now = utc_now()
        data = data or {
            "schema_version": SCHEMA_VERSION,
            "run_id": paths.run_id,
            "started_at": now,
            "sessions": [],
        }
        data["status"] = status
        data["finished_at"] = now
        data["counts"] = counts
        if gates is not None:
            old = data.get("gates")
            earlier = old.get("retry") if isinstance(old, dict) else None
            retry = set(gates.get("retry") or [])
            if isinstance(earlier, list):
                retry.update(str(r) for r in earlier)
            data["gates"] = {**gates, "retry": sorted(retry)}
        sessions = data.setdefault("sessions", [])
        mine = [s for s in sessions if s.get("id") == session_id]
        if not mine:  # a session that ran nothing (a resume where every trial stood)
            mine = [{"id": session_id, "started_at": now, "pytest_args": pytest_args or []}]
            sessions.extend(mine)
        for s in mine:
            s["finished_at"] = now
            s["status"] = status
        return data

    return update_run(paths, change)


def reserve_run_id(results: Path, run_id: str) -> bool:
    """Claim a fresh run id for this session (False when another session has it or had it).

    Two pytest processes started in the same second would otherwise pick the same timestamp.
    """
    if run_exists(results, run_id):
        return False
    reserved = results / ".evalrun" / "run-ids"
    reserved.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(reserved / run_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


def resolve_resume(results: Path, run_id: str | None) -> dict[str, str]:
    """Which run each experiment resumes: ``{experiment_slug: run_id}``.

    With ``run_id``: the run with that id or a unique prefix of it, per experiment (an error when
    it matches nothing anywhere, or more than one run of an experiment). Without: each
    experiment's latest run by ``started_at`` in run.json.
    """
    chosen: dict[str, str] = {}
    started: dict[str, str] = {}
    candidates: dict[str, list[str]] = {}
    for exp, rid, data in iter_runs(results):
        if run_id is None:
            when = str(data.get("started_at") or "")
            if exp not in chosen or (when, rid) > (started[exp], chosen[exp]):
                chosen[exp], started[exp] = rid, when
        elif rid == run_id or rid.startswith(run_id):
            candidates.setdefault(exp, []).append(rid)
    if run_id is None:
        return chosen
    for exp, rids in candidates.items():
        if run_id in rids:
            chosen[exp] = run_id
        elif len(rids) == 1:
            chosen[exp] = rids[0]
        else:
            raise ValueError(
                f"--eval-run-id {run_id!r} is ambiguous for experiment {exp!r}: "
                + ", ".join(sorted(rids))
            )
    if not chosen:
        raise ValueError(
            f"--eval-resume: no recorded run matches --eval-run-id {run_id!r} in {results}"
        )
    return chosen
