"""The worker role: runs trial items (an xdist worker, or the only process without xdist).

For each item: reuse the recorded outcome when ``--eval-resume`` finds it still stands, else
claim the trial with a file lock (so two pytest processes resuming one run never run a trial
twice), run it, and hand the outcome to the recorders. The outcome then travels to the
controller role as plain data in the report's ``user_properties``.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from .agents.presetplugin import PresetsPlugin
from .collect import ExperimentErrorItem, ExperimentProblem, TrialItem, TrialProblem
from .context import EvalContext
from .experiment.identity import fingerprint, seed
from .experiment.model import Experiment, Task, Variant
from .outcome import ERROR, TrialOutcome
from .replay import quiet_teardown, replay, replayable, replays_allowed
from .sandboxkind import CONTAINER_RUNTIMES, EnvironmentKind
from .shard import Key, parse_shard, select
from .store.paths import RunPaths, step_records
from .store.recorder import RunInfo
from .store.trialdir import TrialDir
from .trial.process import record_steps_in


class WorkerPlugin:
    """Registered in every process that runs trial items."""

    def __init__(self, context: EvalContext, hook: Any) -> None:
        self.context = context
        self.shared = context.shared
        self.hook = hook
        self.templates = Path(self.shared.snapshots) if self.shared.snapshots else None
        self._runs: dict[str, RunInfo] = {}
        context.runner = self
        owners = [self.shared.controller_pid] if self.shared.controller_pid else []
        record_steps_in(step_records(Path(self.shared.results)), owners)
        roots = (Path(self.shared.results), Path(self.shared.jobs))
        self.hide = tuple(dict.fromkeys(roots))
        self.read = (Path(self.shared.rootdir),) if self.shared.rootdir else ()
        #: May reused trials be replayed (--eval-resume, no option that needs the protocol)?
        self._replays = False
        #: A failure may stop the session (-x, --maxfail, --stepwise): everything is torn
        #: down after it
        self._may_stop = False
        #: The trial whose record the protocol just looked at, and what it found
        self._looked: tuple[str, TrialOutcome | None] | None = None

    # -- pytest hooks ----------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)  # after -k, -m and --lf have deselected theirs
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        """--eval-shard: keep this shard's share of the selected trials (shard.py)."""
        if not self.shared.shard:
            return
        key_of: dict[int, Key] = {
            p: (item.experiment.slug, item.variant.slug, item.task.slug, item.trial)
            for p, item in enumerate(items)
            if isinstance(item, TrialItem)
        }
        kept, dropped = select(
            items, key_of, parse_shard(self.shared.shard), self.shared.shard_weights
        )
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        counts: Counter[str] = Counter()
        for item in session.items:
            if isinstance(item, TrialItem):
                counts[item.experiment.slug] += 1
        self.context.collected_per_experiment = dict(counts)
        if session.config.stash.get(thaw_key, False):
            freeze_collected(session.items)

    def pytest_sessionfinish(self) -> None:
        """The trials' temporary directories removed in the background are gone before this
        process leaves (an xdist worker may leave without running Python's exit)."""
        removal = sys.modules.get("pytest_evalrun.trial.removal")
        if removal is not None:
            removal.wait_for_removals()

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        config = session.config
        self._replays = bool(self.shared.resume) and replays_allowed(config)
        self._may_stop = bool(config.getoption("maxfail", 0)) or bool(
            config.getoption("stepwise", False) or config.getoption("stepwise_skip", False))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> bool | None:
        """A trial whose recorded outcome ``--eval-resume`` reuses is not run: its reports are
        replayed (replay.py) instead of going through pytest's setup, call and teardown."""
        if not self._replays or not isinstance(item, TrialItem):
            return None
        started = time.perf_counter()
        if not replayable(item) or self.budget_spent() is not None:
            return None  # pytest's protocol: the item's setup looks the record up
        _, files, fp = self._trial(item.experiment, item.variant, item.task, item.trial)
        outcome = self._standing(files, fp)
        if outcome is None or not quiet_teardown(
                item, None if self._may_stop and not outcome.passed else nextitem):
            self._looked = (item.nodeid, outcome)  # its setup need not look again
            return None
        outcome.nodeid = item.nodeid
        replay(item, nextitem, outcome, item.hand_over(outcome), started)
        return True

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        excinfo = call.excinfo
        if (
            isinstance(item, (TrialItem, ExperimentErrorItem))
            and excinfo is not None
            and excinfo.errisinstance((TrialProblem, ExperimentProblem))
        ):
            report.longrepr = item.repr_failure(excinfo)
        return report

    # -- the run's budget (--eval-budget-usd) ------------------------------------------------
    def _spend_file(self) -> Path:
        """What the session's trials spent, one cost a line, shared by its processes (in the
        session's own directory, removed with it)."""
        return Path(self.shared.snapshots or ".") / "spend.txt"

    def budget_spent(self) -> str | None:
        """Why no further trial may start (the session's budget is spent), else None."""
        limit = self.shared.budget_usd
        if not limit:
            return None
        try:
            lines = self._spend_file().read_text(encoding="ascii").split()
        except OSError:
            lines = []
        spent = math.fsum(float(v) for v in lines if _amount(v))
        if spent < limit:
            return None
        return (f"not run for budget: the session's trials spent ${spent:.4f} of "
                f"--eval-budget-usd {limit:g}; run the rest with --eval-resume and a larger "
                "--eval-budget-usd")

    def _spend(self, outcome: TrialOutcome) -> None:
        cost = outcome.metrics.cost_usd
        if not self.shared.budget_usd or outcome.resumed or cost is None \
                or not math.isfinite(cost) or cost <= 0:
            return
        path = self._spend_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="ascii") as fh:  # one short append: atomic
            fh.write(f"{cost!r}\n")

    # -- one item --------------------------------------------------------------------------
    def run_trial_item(
        self, nodeid: str, exp: Experiment, variant: Variant, task: Task, n: int
    ) -> TrialOutcome:
        context = self.context
        run, files, fp = self._trial(exp, variant, task, n)
        looked, self._looked = self._looked, None
        if self.shared.resume:
            reused = looked[1] if looked and looked[0] == nodeid else self._standing(files, fp)
            if reused is not None:
                reused.nodeid = nodeid
                return reused
        # What runs a trial is imported once one runs (a resume that reuses them all needs none)
        from filelock import FileLock

        from .trial.environments.container import environment_for
        from .trial.run import TrialSpec, run_trial

        context.recorders.start_run(run)
        with FileLock(str(claim_lock(run.paths, variant.slug, task.slug, n))):
            # Another process (a concurrent resume) may have finished it while we waited.
            reused = self._standing(files, fp)
            if reused is not None:
                reused.nodeid = nodeid
                return reused
            labels = context.recorders.begin_trial(run, variant, task, n)
            labels.update(nodeid=nodeid, worker=context.worker_id)
            where, where_options = environment_for(
                exp, variant, task, self.shared.environment or EnvironmentKind.AUTO.value,
                run.paths.run_id)
            if where in CONTAINER_RUNTIMES:  # a preset's CLI and node, bound inside
                from .agents.incontainer import container_mounts

                owner = getattr(context.kinds.agent.get("preset"), "__self__", None)
                where_options["mounts"] = container_mounts(
                    variant.agent, {**os.environ, **variant.env, **task.env}, exp.directory,
                    owner.presets() if isinstance(owner, PresetsPlugin) else None)
            spec = TrialSpec(
                experiment=exp,
                variant=variant,
                task=task,
                trial=n,
                run_id=run.paths.run_id,
                trial_dir=files.path,
                seed=seed(exp.name, variant.name, task.name, n),
                fingerprint=fp,
                labels=labels,
                redactor=run.redactor,
                kinds=context.kinds,
                environments=context.environments,
                env_hook=self._env_hook(exp, variant, task, n),
                templates=self.templates,
                retries=exp.retries_for(variant, task),
                rerun_reason=self._rerun_reason(files),
                sandbox_mode=self.shared.sandbox or None,
                environment=where,
                environment_options=where_options,
                hide=self.hide,
                read=self.read,
                gateway={
                    "budget": {**(variant.budget or {}), **(task.budget or {})} or None,
                    "record_dir": self.shared.record_dir or None,
                    "replay_dir": self.shared.replay_dir or None,
                },
            )
            outcome = run_trial(spec)
        self._spend(outcome)
        context.recorders.record_trial(run, outcome, variant, task)
        self._announce(outcome)
        return outcome

    def _trial(self, exp: Experiment, variant: Variant, task: Task, n: int
               ) -> tuple[RunInfo, TrialDir, str]:
        """The run a trial records into, its directory and its fingerprint."""
        run = self._runs.get(exp.slug)
        if run is None:  # items run after collection: the counts are known by then
            run = self._runs[exp.slug] = self.context.run_info(exp)
        files = TrialDir(run.paths.trial_dir(variant.slug, task.slug, n), run.redactor)
        return run, files, fingerprint(variant, task, n, run.redactor)

    def _standing(self, files: TrialDir, fp: str) -> TrialOutcome | None:
        """The recorded outcome when it stands: judged, same definition, and not among the
        statuses ``--eval-retry`` runs again."""
        recorded = files.recorded_outcome(fp)
        if recorded is not None and recorded.status in self.shared.retry:
            return None
        return recorded

    def _rerun_reason(self, files: TrialDir) -> str:
        """Why a trial whose directory holds an earlier attempt runs again."""
        status = files.read_meta().get("status") if self.shared.resume else None
        if status in self.shared.retry and status != ERROR:
            return "--eval-retry"
        return "--eval-resume" if self.shared.resume else "rerun"

    def _env_hook(self, exp: Experiment, variant: Variant, task: Task, n: int) -> Any:
        hook = self.hook.pytest_evalrun_trial_env

        def apply(env: dict[str, str]) -> None:
            hook(env=env, experiment=exp, variant=variant, task=task, trial=n)

        return apply

    def _announce(self, outcome: TrialOutcome) -> None:
        try:
            self.hook.pytest_evalrun_trial_finished(
                outcome=outcome, trial_dir=Path(outcome.trial_dir)
            )
        except Exception as exc:  # a plugin's bug must not lose the trial
            warnings.warn(
                pytest.PytestWarning(
                    f"pytest_evalrun_trial_finished failed for {outcome.nodeid}: "
                    f"{type(exc).__name__}: {exc}"
                ),
                stacklevel=1,
            )


#: Set in the config once :func:`thaw` is among its cleanups (nothing is frozen otherwise).
thaw_key = pytest.StashKey[bool]()
#: Set while this module holds the garbage collector's objects frozen (:func:`freeze_collected`).
_frozen = False


def freeze_collected(items: list[pytest.Item]) -> None:
    """In a session that holds trial items only (no test code of the user's runs in it), what
    collection built (modules, items, experiments) lives to the session's end: ``gc.freeze()``
    keeps Python's cyclic collector from walking it again in each full collection during the
    run and in pytest's own collections at the end (~50 ms for 2,000 items). Nothing else is
    touched when something already froze objects; :func:`thaw` undoes it at the very end."""
    global _frozen
    if _frozen or not items or gc.get_freeze_count():
        return
    if all(isinstance(item, (TrialItem, ExperimentErrorItem)) for item in items):
        gc.freeze()
        _frozen = True


def thaw() -> None:
    """Undo :func:`freeze_collected` (registered by the plugin as the config's first cleanup,
    so it runs last, after pytest's final garbage collections); an in-process pytest run
    (pytester) leaves nothing frozen behind in its host."""
    global _frozen
    if _frozen:
        gc.unfreeze()
        _frozen = False


def claim_lock(paths: RunPaths, variant: str, task: str, n: int) -> Path:
    key = hashlib.sha1(json.dumps([variant, task, n]).encode()).hexdigest()[:16]
    lock_dir = paths.run_dir / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    return lock_dir / f"{key}.lock"


def _amount(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value >= 0
