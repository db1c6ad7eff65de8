"""What every process of one pytest session shares: run ids, directories, resume choice.

The controller (the only process without xdist, else the xdist controller) decides everything
shared once, in ``pytest_configure``, and hands it to every worker through ``workerinput``; a
worker never decides any of it for itself.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from .store import layout, runs
from .store.index import expected_durations
from .store.paths import RunPaths, index_db
from .trial.workspace import session_templates

#: Key of the shared decisions in xdist's ``workerinput``.
WORKERINPUT_KEY = "evalrun"


@dataclass(frozen=True)
class Shared:
    """Decided once by the controller, identical in every process (JSON-able)."""

    session_id: str
    run_id: str
    results: str
    jobs: str
    resume: bool
    #: With --eval-resume: which run each experiment (slug) continues.
    resume_runs: dict[str, str] = field(default_factory=dict)
    pytest_args: list[str] = field(default_factory=list)
    #: When the session started (the controller's clock), e.g. the Pier job's start.
    started_at: str = ""
    explicit_run_id: bool = False
    #: Fixture templates shared by the session's processes (removed by the controller).
    snapshots: str = ""
    #: --eval-retry: recorded statuses that run again in a resumed run.
    retry: list[str] = field(default_factory=list)
    #: --eval-shard as "K/N", or "" to run every selected trial.
    shard: str = ""
    #: Expected duration per experiment/variant/task the shard plan balances (shard.py).
    shard_weights: dict[str, float] = field(default_factory=dict)
    #: Which earlier run of each experiment those durations come from.
    shard_basis: dict[str, str] = field(default_factory=dict)
    #: --eval-sandbox ("" : each variant's ``sandbox:`` mode).
    sandbox: str = ""
    #: --eval-environment ("" : auto: a container where the trial names an image).
    environment: str = ""
    #: pytest's rootdir (readable inside the sandbox even where hidden or private).
    rootdir: str = ""
    #: The controller's pid: a step whose controller is gone is an orphan (process.py).
    controller_pid: int = 0
    #: --eval-record / --eval-replay: the model gateway's recording directory ("": none).
    record_dir: str = ""
    replay_dir: str = ""
    #: --eval-budget-usd: no trial starts once the session's trials spent this much (0: none).
    budget_usd: float = 0.0

    def run_id_for(self, experiment_slug: str) -> str:
        return self.resume_runs.get(experiment_slug, self.run_id)

    def run_paths(self, experiment_slug: str) -> RunPaths:
        return RunPaths(Path(self.results), experiment_slug, self.run_id_for(experiment_slug))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_workerinput(cls, workerinput: dict[str, Any]) -> Shared | None:
        data = workerinput.get(WORKERINPUT_KEY)
        return cls(**data) if isinstance(data, dict) else None


def _path_option(config: pytest.Config, option: str, ini: str, default: str) -> Path:
    value = config.getoption(option) or config.getini(ini) or default
    path = Path(os.path.expandvars(os.path.expanduser(str(value))))
    if not path.is_absolute():
        path = config.rootpath / path
    return path.resolve()


def decide(config: pytest.Config) -> Shared:
    """The controller's decisions; a bad --eval-run-id / --eval-resume is a UsageError."""
    results = _path_option(config, "eval_results", "evalrun_results", "results")
    jobs = _path_option(config, "eval_jobs", "evalrun_jobs", "jobs")
    run_id = config.getoption("eval_run_id")
    resume = bool(config.getoption("eval_resume"))
    retry = list(config.getoption("eval_retry") or ())
    if retry and not resume:
        raise pytest.UsageError(
            "--eval-retry reruns trials inside a resumed run: add --eval-resume"
        )
    resume_runs: dict[str, str] = {}
    if resume:
        try:
            resume_runs = runs.resolve_resume(results, run_id)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    if run_id:
        bad = [c for c in run_id if not (c.isalnum() or c in "._-")]
        if bad or run_id in (".", ".."):
            raise pytest.UsageError(
                f"--eval-run-id {run_id!r}: use letters, digits, '.', '_' and '-' only"
            )
        if not resume and layout.run_exists(results, run_id):
            raise pytest.UsageError(
                f"run {run_id!r} already exists in {results}; "
                "add --eval-resume to continue it, or choose another --eval-run-id"
            )
    else:
        run_id = runs.new_run_id()
        base, n = run_id, 2
        while layout.run_exists(results, run_id):
            run_id = f"{base}-{n}"
            n += 1
    session_id = uuid.uuid4().hex
    started_at = runs.utc_now()
    shard = config.getoption("eval_shard")
    durations: dict[str, Any] = {"weights": {}, "runs": {}}
    if shard is not None:
        # The resumed run of an experiment plans its shares from the runs before it, as the
        # session that started it did.
        before = {}
        for slug, rid in resume_runs.items():
            data = runs.read_run(RunPaths(results, slug, rid))
            before[slug] = str((data or {}).get("started_at") or started_at)
        durations = expected_durations(index_db(results), before, started_at)
    return Shared(
        session_id=session_id,
        run_id=run_id,
        results=str(results),
        jobs=str(jobs),
        resume=resume,
        resume_runs=resume_runs,
        pytest_args=[str(a) for a in config.invocation_params.args],
        started_at=started_at,
        explicit_run_id=bool(config.getoption("eval_run_id")),
        snapshots=str(session_templates(session_id)),
        retry=retry,
        shard=str(shard) if shard is not None else "",
        shard_weights=durations["weights"],
        shard_basis=durations["runs"],
        sandbox=config.getoption("eval_sandbox") or "",
        environment=config.getoption("eval_environment", None) or "",
        rootdir=str(config.rootpath),
        controller_pid=os.getpid(),
        record_dir=_absolute(config.getoption("eval_record")),
        replay_dir=_absolute(config.getoption("eval_replay")),
        budget_usd=float(config.getoption("eval_budget_usd") or 0.0),
    )


def _absolute(value: object) -> str:
    return str(Path(str(value)).resolve()) if value else ""


def reserve(shared: Shared) -> Shared:
    """Claim a generated run id on disk (two sessions started in the same second would
    otherwise share one); done only by sessions that will run trials."""
    if shared.resume or shared.explicit_run_id:
        return shared
    results, run_id, n = Path(shared.results), shared.run_id, 2
    while not runs.reserve_run_id(results, run_id):
        run_id = f"{shared.run_id}-{n}"
        n += 1
    return replace(shared, run_id=run_id)
