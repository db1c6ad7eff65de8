"""Per-process state of a pytest session (kept in ``config.stash``): the shared decisions,
the experiment files found, the step kinds and the recorders.

Both role plugins (controller and worker) and the collectors read it; it knows neither role.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from .discovery import DEFAULT_PATTERNS, Discovery
from .experiment.model import Experiment
from .sandboxkind import SandboxKind
from .secrets import Redactor
from .shared import Shared
from .store.paths import RunPaths
from .store.recorder import Recorders, RunInfo
from .trial.environments import Environments
from .trial.sandbox import SandboxError, resolve
from .trial.steps import StepKinds

if TYPE_CHECKING:
    from .experiment.model import Task, Variant
    from .outcome import TrialOutcome


class TrialRunner(Protocol):
    """What a trial item calls to get its outcome (the worker role implements it)."""

    def run_trial_item(
        self, nodeid: str, experiment: Experiment, variant: Variant, task: Task, trial: int
    ) -> TrialOutcome: ...

    def budget_spent(self) -> str | None:
        """Why no further trial may start (``--eval-budget-usd`` spent), else None."""
        ...


@dataclass
class EvalContext:
    shared: Shared
    discovery: Discovery
    kinds: StepKinds
    recorders: Recorders
    #: Where trials can run: the built-in environments and ``pytest_evalrun_environments``.
    environments: Environments = field(default_factory=Environments.builtin)
    #: xdist's worker id ("gw0") in a worker, None in the controller or a lone process.
    worker_id: str | None = None
    #: Number of xdist workers (1 without xdist).
    workers: int = 1
    #: Trial items collected in this process, per experiment slug.
    collected_per_experiment: dict[str, int] = field(default_factory=dict)
    runner: TrialRunner | None = None
    #: Outcomes a lone process's items hand to its own controller with the very dict their
    #: report carries (node id -> (that dict, the outcome)): the controller takes the object
    #: instead of rebuilding it from the dict (an xdist controller gets a copy: it rebuilds).
    handed: dict[str, tuple[dict[str, Any], TrialOutcome]] = field(default_factory=dict)
    _redactors: dict[str, Redactor] = field(default_factory=dict)
    _isolation: dict[str, dict[str, Any]] = field(default_factory=dict)

    def redactor(self, exp: Experiment) -> Redactor:
        r = self._redactors.get(exp.slug)
        if r is None:
            r = self._redactors[exp.slug] = Redactor(exp.secret_values)
        return r

    def isolation(self, exp: Experiment) -> dict[str, dict[str, Any]]:
        """What each variant's steps get in this session (``--eval-sandbox`` or the
        variant's ``sandbox:``), as recorded in run.json."""
        found = self._isolation.get(exp.slug)
        if found is None:
            found = {}
            for v in exp.variants:
                mode = self.shared.sandbox or v.sandbox.mode
                try:
                    record: dict[str, Any] = resolve(mode).to_dict()
                except SandboxError as exc:
                    record = {"sandbox": SandboxKind.NONE.value, "requested": mode,
                              "reason": str(exc)}
                found[v.name] = {**record, "network": v.network}
            self._isolation[exp.slug] = found
        return found

    def run_info(
        self, exp: Experiment, *, run_id: str | None = None, n_total: int | None = None
    ) -> RunInfo:
        """The run ``exp`` records into in this session (``run_id``: its id, when known)."""
        redactor = self.redactor(exp)
        shared = self.shared
        if n_total is None:
            n_total = self.collected_per_experiment.get(exp.slug, exp.n_items)
        return RunInfo(
            experiment=exp,
            paths=RunPaths(Path(shared.results), exp.slug, run_id or shared.run_id_for(exp.slug)),
            jobs=Path(shared.jobs),
            session_id=shared.session_id,
            started_at=shared.started_at,
            pytest_args=redactor.redact_obj(list(shared.pytest_args)),
            n_total_trials=n_total,
            redactor=redactor,
            n_concurrent=self.workers,
            shard=shared.shard,
            isolation=self.isolation(exp),
            retry=tuple(shared.retry),
        )


context_key = pytest.StashKey[EvalContext]()


def context_of(config: pytest.Config) -> EvalContext:
    return config.stash[context_key]


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
    config: pytest.Config, shared: Shared, kinds: StepKinds, presets: list[str] | None = None
) -> Discovery:
    patterns = tuple(config.getini("evalrun_files") or DEFAULT_PATTERNS)
    explicit = {p.resolve() for p in arg_paths(config) if p.suffix in (".yaml", ".yml")}
    return Discovery(
        patterns=patterns,
        environ=dict(os.environ),
        agent_kinds=sorted(kinds.agent),
        verify_kinds=sorted(kinds.verify),
        presets=tuple(presets) if presets is not None else None,
        output_dirs=(Path(shared.results), Path(shared.jobs)),
        norecurse=tuple(config.getini("norecursedirs")),
        explicit=frozenset(explicit),
    )
