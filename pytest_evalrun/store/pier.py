"""The Pier jobs layout: Harbor 0.25.0's ``jobs/`` format, written beside the standard layout.

Layout (see ``docs/pier-layout.md`` for the field-by-field mapping)::

    jobs/<job-name>/
        config.json              JobConfig
        result.json              JobResult (progress while running, final after finalize)
        job.log                  one line per event (start, trial finished, finish)
        .result.lock             filelock guarding result.json and trial-name claims
        .pending.jsonl           stats deltas not yet folded into result.json
        .evalrun-job.json        the run id seeding trial names (fixed by the first writer)
        <trial-name>/            <task slug, first 32 chars>__<7 chars>
            config.json          TrialConfig
            result.json          TrialResult
            trial.log
            exception.txt        only when the trial carries exception_info
            .evalrun.json        which (run, experiment, variant, task, trial) owns the dir
            agent/               command-0/{command.txt, return-code.txt, stdout.txt},
                                 trajectory.json (ATIF), events.jsonl, session.md, OTel JSONL,
                                 metrics.json, prompt.md
            verifier/            reward.txt | reward.json, test-stdout.txt, verify.json, ...
            artifacts/           workspace.diff and whatever else the agent left

Files that already exist in the standard trial directory are not copied: they are hard-linked
(same inode, no extra space), else symlinked (relative), else copied.

Concurrency: many xdist workers call :meth:`PierJob.write_trial` at once. Each writes only its
own trial directory, then, under ``.result.lock``, replaces its trial ``result.json``, appends a
small stats delta to
``.pending.jsonl`` and folds the pending deltas into ``result.json`` (read-modify-write, atomic
replace). When ``result.json`` is large the fold is throttled, so the total cost stays close to
linear. :meth:`PierJob.finalize` recomputes everything from the trial ``result.json`` files,
exactly as Harbor computes it, so any drift of the incremental view is corrected at the end.

Trial names come from :mod:`.pier_names`, the job stats from :mod:`.pier_stats` and
``trajectory.json`` from :mod:`.pier_trajectory`; :mod:`.pier_values` reads and writes
their timestamps and numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from pytest_evalrun import __version__
from pytest_evalrun.outcome import ERROR, TIMEOUT, TrialOutcome
from pytest_evalrun.secrets import Redactor, is_secret_name
from pytest_evalrun.spec.model import Experiment, Task, Variant
from pytest_evalrun.store.atomic import write_json_atomic, write_text_atomic
from pytest_evalrun.store.pier_names import safe_job_name, trial_name_for, trial_suffix
from pytest_evalrun.store.pier_stats import (
    apply_entry,
    compute_job_stats,
    empty_stats,
    progress_mean,
    stats_entry,
)
from pytest_evalrun.store.pier_trajectory import events_to_trajectory, read_events
from pytest_evalrun.store.pier_values import (
    float_or_none,
    fmt_time,
    int_or_none,
    parse_time,
    reward_number,
)

__all__ = [
    "HARBOR_VERSION",
    "LinkMode",
    "PierJob",
    "link_file",
    "split_model",
]

#: The Harbor release whose ``jobs/`` format this module writes.
HARBOR_VERSION = "0.25.0"

RESULT_LOCK = ".result.lock"
PENDING = ".pending.jsonl"
MARKER = ".evalrun.json"
JOB_MARKER = ".evalrun-job.json"
#: Fold pending stats deltas into the job's result.json at most every this many seconds while
#: trials finish (finalize and flush() fold everything).
FOLD_INTERVAL = 2.0
LOCK_TIMEOUT = 600.0

LinkMode = Literal["auto", "hardlink", "symlink", "copy"]

#: Standard-layout files that are the agent's own logs: they go to ``agent/``.
_AGENT_LOG_NAMES = ("events.jsonl", "session.md", "metrics.json", "analysis.json")
_EXCEPTION_TYPES = {
    "setup_failed": "SetupFailedError",
    "agent_missing": "AgentNotFoundError",
    "verify_crashed": "VerifierCrashedError",
    "verify_timeout": "VerifierTimeoutError",
    "worker_crashed": "WorkerCrashedError",
    "internal": "InternalError",
}
_NAMESPACE = uuid.UUID("6f1d3c0e-8a52-4c7b-9a55-3e0f6b1d2c4a")


# --------------------------------------------------------------------------- model, time


def split_model(model: str | None) -> dict[str, Any] | None:
    """Harbor's ``ModelInfo``: ``"provider/name"`` splits at the first ``/``; else no provider."""
    if not model:
        return None
    provider, sep, name = model.partition("/")
    if sep and provider and name:
        return {"name": name, "provider": provider}
    return {"name": model, "provider": None}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _norm_time(value: Any, default: datetime | None = None) -> str | None:
    parsed = parse_time(value)
    return fmt_time(parsed if parsed is not None else default)


# --------------------------------------------------------------------------- links


def link_file(src: Path, dst: Path, mode: LinkMode = "auto") -> str:
    """Make ``dst`` show ``src``'s content without duplicating it when possible.

    ``auto``: a hard link (same filesystem), else a relative symlink, else a copy. Returns the
    method used: ``"hardlink"``, ``"symlink"`` or ``"copy"``. An existing ``dst`` is replaced
    (unlinked first: never written through, which would change a hard-linked source).
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        else:
            dst.unlink()
    if mode in ("auto", "hardlink"):
        try:
            os.link(src, dst)
            return "hardlink"
        except (OSError, NotImplementedError):
            if mode == "hardlink":
                raise
    if mode in ("auto", "symlink"):
        try:
            try:
                target = os.path.relpath(src.resolve(), dst.parent.resolve())
            except ValueError:  # another drive on Windows
                target = str(src.resolve())
            os.symlink(target, dst)
            return "symlink"
        except (OSError, NotImplementedError):
            if mode == "symlink":
                raise
    shutil.copy2(src, dst)
    return "copy"


def _mirror_tree(src: Path, dst: Path, mode: LinkMode, skip: frozenset[str] = frozenset()) -> None:
    """Link every regular file of ``src`` into ``dst`` (same relative paths).

    Symlinks the agent left are recreated as symlinks with the same target (never followed,
    so nothing outside the trial is pulled in); names in ``skip`` (top level only) are left out.
    """
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in skip]
            files = [f for f in files if f not in skip]
        for name in list(dirs):
            path = Path(root) / name
            if path.is_symlink():
                dirs.remove(name)
                files.append(name)
        for name in files:
            source = Path(root) / name
            target = dst / rel / name
            if source.is_symlink():
                target.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(OSError, NotImplementedError):
                    if target.is_symlink() or target.exists():
                        target.unlink()
                    os.symlink(os.readlink(source), target)
                continue
            if source.is_file():
                link_file(source, target, mode)


# --------------------------------------------------------------------------- the job


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _read_text(path: Path, limit: int | None = None) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if limit is not None and len(data) > limit:
        data = data[-limit:]
    return data.decode("utf-8", errors="replace")


def _redacted_env(env: Mapping[str, str], redactor: Redactor) -> dict[str, str]:
    return {
        str(k): ("***" if is_secret_name(str(k)) else redactor.redact(str(v)))
        for k, v in env.items()
    }


def _agent_version(variant: Variant | None) -> str:
    if variant is not None:
        raw = variant.raw.get("version") if isinstance(variant.raw, Mapping) else None
        if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
            return str(raw)
    return __version__


def _task_path(experiment_path: str, task_slug: str) -> str:
    """The (virtual) task path: the experiment file, then the task, so its name is the task."""
    return str(Path(experiment_path) / task_slug)


def _exception_type(outcome: TrialOutcome) -> str | None:
    if outcome.status == TIMEOUT:
        return "AgentTimeoutError"
    if outcome.status != ERROR:
        return None
    kind = outcome.error_kind or ""
    if kind in _EXCEPTION_TYPES:
        return _EXCEPTION_TYPES[kind]
    words = [w for w in re.split(r"[^A-Za-z0-9]+", kind) if w]
    return "".join(w[:1].upper() + w[1:] for w in words) + "Error" if words else "TrialError"


class PierJob:
    """One Pier (Harbor ``jobs/``) job: ``<jobs_dir>/<safe job name>/``.

    Safe to use from several processes at once (xdist workers each construct their own).
    ``run_id`` (default: ``job_name``) seeds the trial names; every process writing the same
    job must pass the same one.
    """

    def __init__(
        self,
        jobs_dir: Path,
        job_name: str,
        *,
        job_id: str | None = None,
        run_id: str | None = None,
        link_mode: LinkMode = "auto",
        secrets: Iterable[str] = (),
    ) -> None:
        self.jobs_dir = Path(jobs_dir)
        self.requested_name = job_name
        self.job_name = safe_job_name(job_name)
        self.job_dir = self.jobs_dir / self.job_name
        self._given_run_id = run_id if run_id is not None else job_name
        self._run_id: str | None = None
        self.link_mode: LinkMode = link_mode
        self._job_id = job_id
        self._job_id_confirmed = False
        self._resolved_dir: Path | None = None
        self._secrets = tuple(secrets)
        self._filelock: FileLock | None = None

    # ------------------------------------------------------------------ paths

    @property
    def config_path(self) -> Path:
        return self.job_dir / "config.json"

    @property
    def result_path(self) -> Path:
        return self.job_dir / "result.json"

    @property
    def lock_path(self) -> Path:
        return self.job_dir / RESULT_LOCK

    @property
    def pending_path(self) -> Path:
        return self.job_dir / PENDING

    @property
    def log_path(self) -> Path:
        return self.job_dir / "job.log"

    @property
    def run_id(self) -> str:
        """The run id that seeds trial names: the job's first writer fixes it for everyone.

        It is kept in ``.evalrun-job.json``, so processes that construct the job with a
        different ``run_id`` (or none) still name and find the same trial directories.
        """
        if self._run_id is None:
            path = self.job_dir / JOB_MARKER
            data = _read_json(path)
            if not (isinstance(data, dict) and isinstance(data.get("run_id"), str)):
                with self._lock():
                    data = _read_json(path)
                    if not (isinstance(data, dict) and isinstance(data.get("run_id"), str)):
                        data = {"run_id": self._given_run_id, "job_name": self.requested_name}
                        write_json_atomic(path, data)
            self._run_id = str(data["run_id"])
        return self._run_id

    def _lock(self) -> FileLock:
        """The job's lock: one re-entrant FileLock per PierJob (nesting is safe)."""
        if self._filelock is None:
            self.job_dir.mkdir(parents=True, exist_ok=True)
            self._filelock = FileLock(str(self.lock_path), timeout=LOCK_TIMEOUT)
        return self._filelock

    def _log(self, line: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(f"{fmt_time(_now())} {line}\n")

    # ------------------------------------------------------------------ job id / result

    @property
    def job_id(self) -> str:
        """The job's UUID: the one in an existing result.json wins (a resumed job keeps it)."""
        if not self._job_id_confirmed:
            with self._lock():
                self._load_or_init_result()
        assert self._job_id is not None
        return self._job_id

    def _load_or_init_result(
        self, *, started_at: str | None = None, n_total_trials: int | None = None
    ) -> dict[str, Any]:
        """Under the lock: result.json as it is, created (initial, empty stats) when missing."""
        data = _read_json(self.result_path)
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            self._job_id = data["id"]
            self._job_id_confirmed = True
            return data
        if self._job_id is None:
            self._job_id = str(uuid.uuid4())
        else:
            self._job_id = str(uuid.UUID(self._job_id))
        self._job_id_confirmed = True
        start = _norm_time(started_at, _now())
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
        write_json_atomic(self.result_path, data)
        return data

    def reopen_unchanged(self, *, n_total_trials: int, finished_at: str) -> bool:
        """A session that ran no trial of a finished job (every trial stood on resume): stamp
        the job finished again without re-reading its trials. False when that does not apply
        (not finished, or a different number of trials), and the caller should finalize."""
        with self._lock():
            result = self.read_result()
            if (
                result is None
                or result.get("finished_at") is None
                or result.get("n_total_trials") != n_total_trials
                or self.pending_path.exists()
            ):
                return False
            result["finished_at"] = _norm_time(finished_at, _now())
            result["updated_at"] = fmt_time(_now())
            write_json_atomic(self.result_path, result)
        self._log(f"job resumed: {self.job_name}: all {n_total_trials} trials stand")
        stats = result.get("stats") or {}
        self._log(
            f"job finished: {stats.get('n_completed_trials', 0)}/{n_total_trials} trials, "
            f"{stats.get('n_errored_trials', 0)} with exceptions"
        )
        return True

    def read_result(self) -> dict[str, Any] | None:
        data = _read_json(self.result_path)
        return data if isinstance(data, dict) else None

    # ------------------------------------------------------------------ config

    def ensure_config(
        self,
        *,
        experiments: Sequence[Experiment],
        n_total_trials: int,
        started_at: str,
        n_concurrent_trials: int | None = None,
        recompute_stats: bool = True,
    ) -> None:
        """Write config.json and, when missing, the initial result.json. Idempotent.

        ``recompute_stats=False`` skips the rescan of a resumed job's trials (for a caller that
        calls :meth:`finalize` right after, which recomputes them anyway).

        On an existing job the job id and ``started_at`` are kept, the experiments' agents and
        datasets are merged into config.json and ``n_total_trials`` is updated. When the job
        had finished (a resumed run), ``finished_at`` is cleared and the stats are recomputed
        from the trial directories present, so the progress view starts exact. Every worker
        process may call it; only the first call of a session does that O(n) scan.
        """
        _ = self.run_id  # fix the naming run id before anything is written
        with self._lock():
            existed = self.result_path.exists()
            result = self._load_or_init_result(started_at=started_at, n_total_trials=n_total_trials)
            resumed = existed and result.get("finished_at") is not None
            config = self._job_config(experiments, n_concurrent_trials)
            old = _read_json(self.config_path)
            if isinstance(old, dict):
                for field in ("agents", "datasets"):
                    merged = list(old.get(field) or [])
                    for item in config[field]:
                        if item not in merged:
                            merged.append(item)
                    config[field] = merged
                if n_concurrent_trials is None and isinstance(old.get("n_concurrent_trials"), int):
                    config["n_concurrent_trials"] = old["n_concurrent_trials"]
            write_json_atomic(self.config_path, config)
            if resumed and not recompute_stats:
                result["finished_at"] = None
                write_json_atomic(self.result_path, result)
            elif resumed:
                # A finished job continued by a new session: start from exact stats.
                results = [r for _, r in self._scan_trials()]
                total = max(n_total_trials, len(results))
                result["n_total_trials"] = total
                result["stats"] = compute_job_stats(results, n_total_trials=total)
                result["finished_at"] = None
                result["updated_at"] = fmt_time(_now())
                write_json_atomic(self.result_path, result)
                with contextlib.suppress(FileNotFoundError):
                    self.pending_path.unlink()
            elif existed and result.get("n_total_trials") != n_total_trials:
                # Another process of the same session, or a session that did not finish.
                result["n_total_trials"] = n_total_trials
                stats = result.get("stats")
                if isinstance(stats, dict):
                    done = int(stats.get("n_completed_trials") or 0)
                    result["n_total_trials"] = max(n_total_trials, done)
                    stats["n_pending_trials"] = max(
                        result["n_total_trials"] - done - int(stats.get("n_running_trials") or 0),
                        0,
                    )
                result["updated_at"] = fmt_time(_now())
                write_json_atomic(self.result_path, result)
        if not existed or resumed:
            self._log(
                f"job {'resumed' if resumed else 'started'}: {self.job_name} "
                f"id={self._job_id} n_total_trials={n_total_trials}"
            )

    def _job_config(
        self, experiments: Sequence[Experiment], n_concurrent_trials: int | None
    ) -> dict[str, Any]:
        agents: list[dict[str, Any]] = []
        datasets: list[dict[str, Any]] = []
        n_attempts = 1
        for experiment in experiments:
            redactor = Redactor(experiment.secret_values)
            for variant in experiment.variants:
                agent = self._agent_config(variant, None, redactor)
                if agent not in agents:
                    agents.append(agent)
            datasets.append(
                {
                    "path": str(experiment.path),
                    "name": experiment.name,
                    "task_names": [t.name for t in experiment.tasks],
                }
            )
            n_attempts = max([n_attempts, *(t.trials for t in experiment.tasks)])
        config: dict[str, Any] = {
            "job_name": self.job_name,
            "jobs_dir": str(self.jobs_dir),
            "n_attempts": n_attempts,
            "timeout_multiplier": 1.0,
            "agents": agents,
            "datasets": datasets,
            "tasks": [],
        }
        if n_concurrent_trials is not None:
            config["n_concurrent_trials"] = max(1, n_concurrent_trials)
        return config

    @staticmethod
    def _agent_config(
        variant: Variant | None, task: Task | None, redactor: Redactor, name: str = ""
    ) -> dict[str, Any]:
        if variant is None:
            return {"name": name}
        agent: dict[str, Any] = {"name": variant.name}
        if variant.model:
            agent["model_name"] = variant.model
        if task is not None:
            agent["override_timeout_sec"] = float(task.timeout)
            agent["override_setup_timeout_sec"] = float(task.setup_timeout)
        kwargs: dict[str, Any] = {"evalrun_agent": variant.agent.describe()}
        if variant.setup is not None:
            kwargs["evalrun_setup"] = variant.setup.describe()
        agent["kwargs"] = redactor.redact_obj(kwargs)
        if variant.env:
            agent["env"] = _redacted_env(variant.env, redactor)
        return agent

    # ------------------------------------------------------------------ trial names

    def trial_dir_name(
        self,
        experiment: str,
        variant: str,
        task: str,
        trial: int,
        *,
        task_slug: str | None = None,
    ) -> str:
        """The trial's directory name, claiming it (collision-safe) on first use."""
        return self._claim(experiment, variant, task, trial, task_slug).name

    def _owner(self, experiment: str, variant: str, task: str, trial: int) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "experiment": experiment,
            "variant": variant,
            "task": task,
            "trial": trial,
        }

    def _claim(
        self, experiment: str, variant: str, task: str, trial: int, task_slug: str | None
    ) -> Path:
        owner = self._owner(experiment, variant, task, trial)
        for attempt in range(100):
            name = trial_name_for(
                self.run_id,
                experiment,
                variant,
                task,
                trial,
                task_slug=task_slug,
                attempt=attempt,
            )
            path = self.job_dir / name
            marker = _read_json(path / MARKER)
            if marker == owner:
                return path
            if marker is not None:
                continue  # owned by another trial: a name collision
            with self._lock():
                marker = _read_json(path / MARKER)
                if marker is None:
                    # New, or an unmarked directory (a crash before its marker): take it.
                    path.mkdir(parents=True, exist_ok=True)
                    write_json_atomic(path / MARKER, owner)
                    return path
                if marker == owner:
                    return path
        raise RuntimeError(f"no free Pier trial name for {owner}")  # pragma: no cover

    # ------------------------------------------------------------------ trials

    def write_trial(
        self,
        outcome: TrialOutcome,
        *,
        trial_dir: Path | None,
        experiment: Experiment | None = None,
        variant: Variant | None = None,
        task: Task | None = None,
    ) -> Path:
        """Write the Pier trial directory from the standard trial dir and the outcome.

        Returns its path, and folds the trial into result.json (under the lock). A trial
        written again (a re-run, or a re-write) replaces its own directory and its previous
        contribution to the stats. ``experiment``/``variant``/``task`` enrich the config
        (timeouts, agent command, model); without them the outcome's names are used.
        """
        path = self._write_trial_files(
            outcome, trial_dir=trial_dir, experiment=experiment, variant=variant, task=task
        )
        return path

    def _write_trial_files(
        self,
        outcome: TrialOutcome,
        *,
        trial_dir: Path | None,
        experiment: Experiment | None,
        variant: Variant | None,
        task: Task | None,
        update_stats: bool = True,
    ) -> Path:
        task_slug = outcome.task_slug or (task.slug if task else None) or outcome.task
        path = self._claim(
            outcome.experiment, outcome.variant, outcome.task, outcome.trial, task_slug
        )
        name = path.name
        redactor = Redactor([*self._secrets, *(experiment.secret_values if experiment else ())])
        src = Path(trial_dir) if trial_dir is not None else None
        if src is not None and not src.is_dir():
            src = None

        # A re-write starts from a clean directory (result/config/marker stay until replaced).
        for child in ("agent", "verifier", "artifacts"):
            shutil.rmtree(path / child, ignore_errors=True)
        for child in ("exception.txt", "trial.log"):
            with contextlib.suppress(FileNotFoundError):
                (path / child).unlink()

        version = _agent_version(variant)
        model = (variant.model if variant else None) or outcome.model
        model_info = split_model(model)
        verify_json = _read_json(src / "verify.json") if src else None
        if not isinstance(verify_json, dict):
            verify_json = {}

        self._write_agent_dir(
            path / "agent", src, outcome, variant, redactor, name, version, model_info
        )
        self._write_verifier_dir(path / "verifier", src, outcome, verify_json, redactor)
        self._write_artifacts_dir(path / "artifacts", src)

        config = self._trial_config(name, outcome, experiment, variant, task, redactor)
        result = self._trial_result(
            name, path, outcome, config, task, version, model_info, verify_json, src, redactor
        )
        exception = result.get("exception_info")
        if exception:
            write_text_atomic(path / "exception.txt", exception["exception_traceback"] + "\n")
        write_text_atomic(path / "trial.log", self._trial_log(name, outcome, result, redactor))
        write_json_atomic(path / "config.json", config)
        if not update_stats:
            write_json_atomic(path / "result.json", result)
        else:
            # result.json and its stats delta under one lock: whoever holds the lock sees
            # every trial result either folded into the job result or queued.
            with self._lock():
                previous = _read_json(path / "result.json")
                write_json_atomic(path / "result.json", result)
                prev_entry = stats_entry(previous) if isinstance(previous, dict) else None
                self._record(stats_entry(result), prev_entry)
            status = outcome.status
            reward = "-" if outcome.reward is None else f"{outcome.reward:g}"
            self._log(f"trial {name} finished: {status} reward={reward}")
        return path

    def _write_agent_dir(
        self,
        agent_dir: Path,
        src: Path | None,
        outcome: TrialOutcome,
        variant: Variant | None,
        redactor: Redactor,
        name: str,
        version: str,
        model_info: dict[str, Any] | None,
    ) -> None:
        command_dir = agent_dir / "command-0"
        command_dir.mkdir(parents=True, exist_ok=True)
        if variant is not None:
            described = variant.agent.describe()
            value = described.get("command", described)
            if isinstance(value, list):
                text = " ".join(str(v) for v in value)
            elif isinstance(value, str):
                text = value
            else:
                text = json.dumps(value, ensure_ascii=False, default=str)
            write_text_atomic(command_dir / "command.txt", redactor.redact(text) + "\n")
        if outcome.agent_exit is not None:
            write_text_atomic(command_dir / "return-code.txt", f"{outcome.agent_exit}\n")
        if src is None:
            return
        if (src / "stdout.txt").is_file():
            link_file(src / "stdout.txt", command_dir / "stdout.txt", self.link_mode)
        if (src / "prompt.md").is_file():
            link_file(src / "prompt.md", agent_dir / "prompt.md", self.link_mode)
        events_path: Path | None = None
        for base in (src, src / "artifacts"):
            if not base.is_dir():
                continue
            for entry in sorted(base.iterdir()):
                if not entry.is_file() or entry.is_symlink():
                    continue
                if entry.name in _AGENT_LOG_NAMES or _is_otel(entry.name):
                    if not (agent_dir / entry.name).exists():
                        link_file(entry, agent_dir / entry.name, self.link_mode)
                    if entry.name == "events.jsonl" and events_path is None:
                        events_path = entry
        if events_path is not None:
            events = read_events(events_path)
            trajectory = (
                events_to_trajectory(
                    events,
                    agent_name=outcome.variant,
                    agent_version=version,
                    model_name=model_info["name"] if model_info else None,
                    session_id=name,
                )
                if events is not None
                else None
            )
            if trajectory is not None:
                write_json_atomic(agent_dir / "trajectory.json", redactor.redact_obj(trajectory))

    def _write_verifier_dir(
        self,
        verifier_dir: Path,
        src: Path | None,
        outcome: TrialOutcome,
        verify_json: Mapping[str, Any],
        redactor: Redactor,
    ) -> None:
        verifier_dir.mkdir(parents=True, exist_ok=True)
        std_verifier = src / "verifier" if src is not None else None
        if std_verifier is not None and std_verifier.is_dir():
            _mirror_tree(
                std_verifier, verifier_dir, self.link_mode, skip=frozenset({"verify-output.txt"})
            )
            if (std_verifier / "verify-output.txt").is_file():
                link_file(
                    std_verifier / "verify-output.txt",
                    verifier_dir / "test-stdout.txt",
                    self.link_mode,
                )
        if src is not None and (src / "verify.json").is_file():
            link_file(src / "verify.json", verifier_dir / "verify.json", self.link_mode)
        if not (verifier_dir / "test-stdout.txt").exists():
            tail = verify_json.get("stdout_tail") or outcome.verify_tail
            if isinstance(tail, str) and tail:
                write_text_atomic(verifier_dir / "test-stdout.txt", redactor.redact(tail))
        has_reward_file = (verifier_dir / "reward.txt").exists() or (
            verifier_dir / "reward.json"
        ).exists()
        if not has_reward_file and outcome.reward is not None:
            # Reward from verify's exit code: written as Harbor's verifier would have.
            write_text_atomic(verifier_dir / "reward.txt", f"{float(outcome.reward)}\n")

    def _write_artifacts_dir(self, artifacts_dir: Path, src: Path | None) -> None:
        artifacts_dir.mkdir(parents=True, exist_ok=True)
        if src is None:
            return
        if (src / "workspace.diff").is_file():
            link_file(src / "workspace.diff", artifacts_dir / "workspace.diff", self.link_mode)
        std_artifacts = src / "artifacts"
        if std_artifacts.is_dir():
            skip = {
                p.name
                for p in std_artifacts.iterdir()
                if p.is_file() and (p.name in _AGENT_LOG_NAMES or _is_otel(p.name))
            }
            _mirror_tree(std_artifacts, artifacts_dir, self.link_mode, skip=frozenset(skip))

    def _trial_config(
        self,
        name: str,
        outcome: TrialOutcome,
        experiment: Experiment | None,
        variant: Variant | None,
        task: Task | None,
        redactor: Redactor,
    ) -> dict[str, Any]:
        experiment_path = str(experiment.path) if experiment else outcome.experiment
        task_slug = outcome.task_slug or (task.slug if task else None) or outcome.task
        config: dict[str, Any] = {
            "task": {
                "path": _task_path(experiment_path, task_slug),
                "source": outcome.experiment,
            },
            "trial_name": name,
            "trials_dir": str(self.job_dir),
            "timeout_multiplier": 1.0,
            "agent": self._agent_config(variant, task, redactor, outcome.variant),
            "job_id": self.job_id,
        }
        if task is not None:
            config["verifier"] = {"override_timeout_sec": float(task.verify_timeout)}
        if variant is None and outcome.model:
            config["agent"]["model_name"] = outcome.model
        return config

    def _trial_result(
        self,
        name: str,
        path: Path,
        outcome: TrialOutcome,
        config: dict[str, Any],
        task: Task | None,
        version: str,
        model_info: dict[str, Any] | None,
        verify_json: Mapping[str, Any],
        src: Path | None,
        redactor: Redactor,
    ) -> dict[str, Any]:
        started = parse_time(outcome.started_at)
        finished = parse_time(outcome.finished_at)
        if finished is None and started is not None and outcome.duration:
            finished = datetime.fromtimestamp(started.timestamp() + outcome.duration, timezone.utc)
        result: dict[str, Any] = {
            "id": str(
                uuid.uuid5(
                    _NAMESPACE,
                    json.dumps([self.job_id, name, outcome.started_at, outcome.finished_at]),
                )
            ),
            "task_name": outcome.task,
            "trial_name": name,
            "trial_uri": path.resolve().as_uri(),
            "task_id": {"path": config["task"]["path"]},
            "source": outcome.experiment,
            "task_checksum": _task_checksum(outcome, task),
            "config": config,
            "agent_info": {"name": outcome.variant, "version": version, "model_info": model_info},
            "agent_result": self._agent_result(outcome, src, redactor),
            "verifier_result": _verifier_result(outcome),
            "exception_info": self._exception_info(outcome, finished, verify_json, src, redactor),
            "started_at": fmt_time(started),
            "finished_at": fmt_time(finished),
        }
        result.update(_timings(outcome, started, finished))
        return result

    def _agent_result(
        self, outcome: TrialOutcome, src: Path | None, redactor: Redactor
    ) -> dict[str, Any]:
        m = outcome.metrics
        metadata: dict[str, Any] = {
            "evalrun_version": __version__,
            "run_id": outcome.run_id or self.run_id,
            "experiment": outcome.experiment,
            "variant": outcome.variant,
            "task": outcome.task,
            "trial": outcome.trial,
            "status": outcome.status,
            "passed": outcome.passed,
            "reward": outcome.reward,
            "pass_threshold": outcome.pass_threshold,
            "message": outcome.message,
            "error_kind": outcome.error_kind,
            "seed": outcome.seed,
            "nodeid": outcome.nodeid,
            "duration": outcome.duration,
            "setup_exit": outcome.setup_exit,
            "agent_exit": outcome.agent_exit,
            "verify_exit": outcome.verify_exit,
            "resumed": outcome.resumed,
            "crashed": outcome.crashed,
            "worker": outcome.worker,
            "fingerprint": outcome.fingerprint,
            "metrics_source": m.source,
            "metrics_model": m.model,
            "trial_dir": str(src) if src is not None else (outcome.trial_dir or None),
        }
        return {
            "n_input_tokens": int_or_none(m.input_tokens),
            "n_cache_tokens": int_or_none(m.cache_tokens),
            "n_output_tokens": int_or_none(m.output_tokens),
            "cost_usd": float_or_none(m.cost_usd),
            "metadata": redactor.redact_obj(metadata),
        }

    def _exception_info(
        self,
        outcome: TrialOutcome,
        finished: datetime | None,
        verify_json: Mapping[str, Any],
        src: Path | None,
        redactor: Redactor,
    ) -> dict[str, Any] | None:
        kind = _exception_type(outcome)
        if kind is None:
            return None
        message = outcome.message or (
            "the agent ran out of time" if outcome.status == TIMEOUT else "the trial errored"
        )
        parts = [f"{kind}: {message}"]
        if src is not None:
            for candidate in ("traceback.txt", "error.txt", "exception.txt"):
                text = _read_text(src / candidate, limit=64 * 1024)
                if text:
                    parts.append(text.rstrip())
                    break
        tail = verify_json.get("stdout_tail") or outcome.verify_tail
        if isinstance(tail, str) and tail.strip() and outcome.status == ERROR:
            parts.append("verify output (tail):\n" + tail.rstrip())
        occurred = finished or parse_time(outcome.started_at) or _now()
        return {
            "exception_type": kind,
            "exception_message": redactor.redact(message),
            "exception_traceback": redactor.redact("\n\n".join(parts)),
            "occurred_at": fmt_time(occurred),
        }

    def _trial_log(
        self, name: str, outcome: TrialOutcome, result: Mapping[str, Any], redactor: Redactor
    ) -> str:
        lines = [
            f"trial {name}",
            f"experiment={outcome.experiment} variant={outcome.variant} task={outcome.task} "
            f"trial={outcome.trial} seed={outcome.seed}",
            f"started_at={result.get('started_at')} finished_at={result.get('finished_at')}",
        ]
        for phase in ("environment_setup", "agent_setup", "agent_execution", "verifier"):
            block = result.get(phase)
            if block:
                lines.append(f"{phase}: {block['started_at']} -> {block['finished_at']}")
        lines.append(
            f"exit codes: setup={outcome.setup_exit} agent={outcome.agent_exit} "
            f"verify={outcome.verify_exit}"
        )
        reward = "-" if outcome.reward is None else f"{outcome.reward:g}"
        lines.append(f"status={outcome.status} reward={reward}")
        if outcome.message:
            lines.append(f"message: {outcome.message}")
        if outcome.trial_dir:
            lines.append(f"standard trial dir: {outcome.trial_dir}")
        return redactor.redact("\n".join(lines) + "\n")

    # ------------------------------------------------------------------ stats updates

    def _record(self, entry: dict[str, Any], previous: dict[str, Any] | None) -> None:
        """Under the lock: queue a stats delta, fold the queue into result.json when due."""
        line = json.dumps({"add": entry, "remove": previous}, ensure_ascii=False) + "\n"
        with open(self.pending_path, "a", encoding="utf-8") as fh:
            fh.write(line)
        self._fold_pending(force=False)

    def flush(self) -> None:
        """Fold every queued stats delta into result.json now."""
        with self._lock():
            self._fold_pending(force=True)

    def _fold_pending(self, *, force: bool) -> None:
        """Under the lock: apply ``.pending.jsonl`` to result.json (read-modify-write)."""
        try:
            mtime = self.result_path.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if not force and time.time() - mtime < FOLD_INTERVAL:
            return
        try:
            text = self.pending_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        result = self._load_or_init_result()
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
        total = int(result.get("n_total_trials") or 0)
        if stats["n_completed_trials"] > total:
            total = stats["n_completed_trials"]
            result["n_total_trials"] = total
        stats["n_pending_trials"] = max(
            total - stats["n_completed_trials"] - stats["n_running_trials"], 0
        )
        result["stats"] = stats
        result["updated_at"] = fmt_time(_now())
        write_json_atomic(self.result_path, result)
        self.pending_path.unlink()

    # ------------------------------------------------------------------ finalize

    def _find_trial_dir(self, outcome: TrialOutcome, by_suffix: Mapping[str, list[str]]) -> Path:
        """The outcome's Pier trial directory: where it was written, whatever its stem."""
        if outcome.pier_trial_dir:
            given = Path(outcome.pier_trial_dir)
            same_job = given.parent == self.job_dir or given.parent.resolve() == self._resolved
            if same_job and (given / MARKER).is_file():
                return given
        owner = self._owner(outcome.experiment, outcome.variant, outcome.task, outcome.trial)
        for attempt in range(3):
            suffix = trial_suffix(
                self.run_id,
                outcome.experiment,
                outcome.variant,
                outcome.task,
                outcome.trial,
                attempt,
            )
            for name in by_suffix.get(suffix, ()):
                if _read_json(self.job_dir / name / MARKER) == owner:
                    return self.job_dir / name
        return self._claim(
            outcome.experiment,
            outcome.variant,
            outcome.task,
            outcome.trial,
            outcome.task_slug or outcome.task,
        )

    @property
    def _resolved(self) -> Path:
        if self._resolved_dir is None:
            self._resolved_dir = self.job_dir.resolve()
        return self._resolved_dir

    def _scan_trials(self, skip: Container[str] = ()) -> Iterator[tuple[Path, dict[str, Any]]]:
        """(dir, TrialResult) of every trial directory of this job (but ``skip``), by name."""
        if not self.job_dir.is_dir():
            return
        for child in sorted(self.job_dir.iterdir()):
            if child.name in skip or child.name.startswith(".") or not child.is_dir():
                continue
            data = _read_json(child / "result.json")
            if isinstance(data, dict) and "trial_name" in data:
                yield child, data

    def finalize(
        self,
        outcomes: Iterable[TrialOutcome],
        *,
        n_total_trials: int,
        finished_at: str,
        include_existing: bool = True,
    ) -> dict[str, Any]:
        """Recompute result.json from the trials and write it final (``finished_at`` set).

        Each outcome's trial result is read from its Pier trial directory; an outcome with
        none (e.g. a worker that crashed before writing) gets its directory written now
        from the outcome (and its standard trial dir, if any). With ``include_existing``,
        trial directories of this job that no outcome names (trials of an earlier session
        not selected this time) are kept in the stats too. Returns the JobResult written.
        """
        results: list[dict[str, Any]] = []
        seen: set[str] = set()
        by_suffix: dict[str, list[str]] = {}
        if self.job_dir.is_dir():
            for entry in os.listdir(self.job_dir):
                stem, sep, suffix = entry.rpartition("__")
                if sep and stem:
                    by_suffix.setdefault(suffix, []).append(entry)
        for outcome in outcomes:
            path = self._find_trial_dir(outcome, by_suffix)
            data = _read_json(path / "result.json")
            if not isinstance(data, dict):
                trial_dir = Path(outcome.trial_dir) if outcome.trial_dir else None
                self._write_trial_files(
                    outcome,
                    trial_dir=trial_dir,
                    experiment=None,
                    variant=None,
                    task=None,
                    update_stats=False,
                )
                data = _read_json(path / "result.json")
            if isinstance(data, dict) and path.name not in seen:
                seen.add(path.name)
                results.append(data)
        if include_existing:
            for child, data in self._scan_trials(skip=seen):
                if child.name not in seen:
                    seen.add(child.name)
                    results.append(data)
        total = max(n_total_trials, len(results))
        with self._lock():
            result = self._load_or_init_result(n_total_trials=total)
            result["n_total_trials"] = total
            result["stats"] = compute_job_stats(results, n_total_trials=total)
            now = fmt_time(_now())
            result["finished_at"] = _norm_time(finished_at, _now())
            result["updated_at"] = now
            write_json_atomic(self.result_path, result)
            with contextlib.suppress(FileNotFoundError):
                self.pending_path.unlink()
        stats = result["stats"]
        self._log(
            f"job finished: {stats['n_completed_trials']}/{total} trials, "
            f"{stats['n_errored_trials']} with exceptions"
        )
        return result


def _is_otel(name: str) -> bool:
    return name.endswith(".jsonl") and "otel" in name.lower()


def _task_checksum(outcome: TrialOutcome, task: Task | None) -> str:
    """sha256 of the task's definition (prompt, verify, fixture path, limits)."""
    if task is not None:
        described: Any = {
            "name": task.name,
            "prompt": task.prompt,
            "verify": task.verify.describe(),
            "fixture": str(task.fixture) if task.fixture else None,
            "timeout": task.timeout,
            "setup_timeout": task.setup_timeout,
            "verify_timeout": task.verify_timeout,
            "pass_threshold": task.pass_threshold,
        }
    else:
        described = {
            "experiment": outcome.experiment,
            "task": outcome.task,
            "fingerprint": outcome.fingerprint,
        }
    text = json.dumps(described, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _verifier_result(outcome: TrialOutcome) -> dict[str, Any] | None:
    if outcome.reward is None:
        return None
    rewards: dict[str, float | int] = {}
    for key, value in (outcome.rewards or {}).items():
        number = reward_number(value)
        if number is not None:
            rewards[str(key)] = number
    main = reward_number(outcome.reward)
    if main is None:
        return None if not rewards else {"rewards": rewards}
    if "reward" not in rewards:
        rewards = {"reward": float(main), **rewards}
    return {"rewards": rewards}


def _timings(
    outcome: TrialOutcome, started: datetime | None, finished: datetime | None
) -> dict[str, dict[str, Any] | None]:
    """The four phase blocks, laid end to end, the last step ending when the trial finished.

    Only durations are recorded, so the steps are placed back to back ending at
    ``finished_at`` (verify, before it the agent, before it the setup); the environment
    setup (workspace copy and snapshot) runs from ``started_at`` to the first step. A step
    that did not run has no block.
    """
    blocks: dict[str, dict[str, Any] | None] = {
        "environment_setup": None,
        "agent_setup": None,
        "agent_execution": None,
        "verifier": None,
    }
    if started is None or finished is None:
        return blocks
    end = finished.timestamp()
    phases = (
        ("verifier", outcome.verify_duration),
        ("agent_execution", outcome.agent_duration),
        ("agent_setup", outcome.setup_duration),
    )
    for phase, duration in phases:
        if duration is None or not math.isfinite(duration) or duration < 0:
            continue
        begin = max(end - duration, started.timestamp())
        blocks[phase] = {
            "started_at": fmt_time(datetime.fromtimestamp(begin, timezone.utc)),
            "finished_at": fmt_time(datetime.fromtimestamp(end, timezone.utc)),
        }
        end = begin
    blocks["environment_setup"] = {
        "started_at": fmt_time(started),
        "finished_at": fmt_time(datetime.fromtimestamp(end, timezone.utc)),
    }
    return blocks
