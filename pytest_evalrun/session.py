"""The run shared by every process of one pytest session: ids, directories, resume choice.

The controller (the only process without xdist, else the xdist controller) decides everything
shared once, in ``pytest_configure``, and hands it to every worker through ``workerinput``; a
worker never decides any of it for itself.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .discovery import DEFAULT_PATTERNS, Discovery
from .store import runs
from .store.paths import RunPaths
from .trial.steps import StepKinds
from .trial.workspace import session_templates

if TYPE_CHECKING:
    from .collect import TrialItem
    from .controller import Controller
    from .outcome import TrialOutcome
    from .worker import Worker

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

    def run_id_for(self, experiment_slug: str) -> str:
        return self.resume_runs.get(experiment_slug, self.run_id)

    def run_paths(self, experiment_slug: str) -> RunPaths:
        return RunPaths(Path(self.results), experiment_slug, self.run_id_for(experiment_slug))


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
        if not resume and runs.run_exists(results, run_id):
            raise pytest.UsageError(
                f"run {run_id!r} already exists in {results}; "
                "add --eval-resume to continue it, or choose another --eval-run-id"
            )
    else:
        run_id = runs.new_run_id()
        base, n = run_id, 2
        while runs.run_exists(results, run_id):
            run_id = f"{base}-{n}"
            n += 1
    session_id = uuid.uuid4().hex
    return Shared(
        session_id=session_id,
        run_id=run_id,
        results=str(results),
        jobs=str(jobs),
        resume=resume,
        resume_runs=resume_runs,
        pytest_args=[str(a) for a in config.invocation_params.args],
        started_at=runs.utc_now(),
        explicit_run_id=bool(config.getoption("eval_run_id")),
        snapshots=str(session_templates(session_id)),
    )


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


class EvalState:
    """Per-process state, kept in ``config.stash``."""

    def __init__(
        self, config: pytest.Config, shared: Shared, discovery: Discovery, kinds: StepKinds
    ) -> None:
        self.config = config
        self.shared = shared
        self.discovery = discovery
        self.kinds = kinds
        #: Trial items collected in this process, per experiment slug.
        self.collected_per_experiment: dict[str, int] = {}
        self.is_worker = hasattr(config, "workerinput")
        self.worker_id: str | None = (
            config.workerinput.get("workerid") if self.is_worker else None  # type: ignore[attr-defined]
        )
        self._worker: Worker | None = None
        self.controller: Controller | None = None

    @property
    def worker(self) -> Worker:
        if self._worker is None:
            from .worker import Worker

            self._worker = Worker(self)
        return self._worker

    def run_item(self, item: TrialItem) -> TrialOutcome:
        return self.worker.run_item(item)

    def shared_as_dict(self) -> dict[str, Any]:
        return asdict(self.shared)


state_key = pytest.StashKey[EvalState]()


def state_of(config: pytest.Config) -> EvalState:
    return config.stash[state_key]


def arg_paths(config: pytest.Config) -> list[Path]:
    """The command-line paths (node-id parts dropped), absolute."""
    paths = []
    for arg in config.args:
        p = Path(str(arg).split("::")[0])
        paths.append(p if p.is_absolute() else config.invocation_params.dir / p)
    return paths


def scan_args(config: pytest.Config, discovery: Discovery) -> None:
    """Find and load the experiment files under the command-line paths (once)."""
    if not discovery.scanned:
        discovery.scan([p for p in arg_paths(config) if p.exists()])


def make_discovery(
    config: pytest.Config, shared: Shared, agent_kinds: list[str], verify_kinds: list[str]
) -> Discovery:
    patterns = tuple(config.getini("evalrun_files") or DEFAULT_PATTERNS)
    explicit = {p.resolve() for p in arg_paths(config) if p.suffix in (".yaml", ".yml")}
    return Discovery(
        patterns=patterns,
        environ=dict(os.environ),
        agent_kinds=agent_kinds,
        verify_kinds=verify_kinds,
        output_dirs=(Path(shared.results), Path(shared.jobs)),
        norecurse=tuple(config.getini("norecursedirs")),
        explicit=frozenset(explicit),
    )
