"""pytest hooks: wires options, collection, the roles and the recorders together.

Little is decided here: which sandbox modes the session asks for (to start bubblewrap's probe
early and warn once when ``auto`` runs unsandboxed) and whether this process is xdist's
controller. In ``pytest_configure`` it registers one plugin
object per role: :class:`~.controller.ControllerPlugin` in the process that gathers outcomes (the
xdist controller, or the only process) and :class:`~.worker.WorkerPlugin` in every process that
runs trial items (an xdist worker, or the only process).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from . import dryrun, hookspecs
from .agents.presetplugin import PresetsPlugin
from .collect import ExperimentFile
from .context import EvalContext, context_key, make_discovery, scan_args
from .controller import ControllerPlugin
from .discovery import Discovery
from .experiment.model import Experiment
from .options import add_options
from .sandboxkind import EnvironmentKind, SandboxKind
from .shared import Shared, decide, reserve
from .store.index import IndexRecorder
from .store.paths import step_records
from .store.pier.recorder import PierRecorder
from .store.recorder import Recorder, Recorders
from .store.standard import StandardRecorder
from .trial.bwrapprobe import probe_soon
from .trial.environments import Environments
from .trial.environments.base import Environment, EnvironmentFactory, TrialPlace
from .trial.process import reap_orphans
from .trial.sandbox import SandboxError, resolve
from .trial.steps import StepKinds
from .trial.workspace import remove_session_templates
from .worker import WorkerPlugin, thaw, thaw_key


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _kinds(config: pytest.Config) -> StepKinds:
    kinds = StepKinds.builtin()
    for extra in config.hook.pytest_evalrun_agent_kinds():
        kinds.agent.update(extra or {})
    for extra in config.hook.pytest_evalrun_verify_kinds():
        kinds.verify.update(extra or {})
    return kinds


#: The container environments (trial/environments/container.py's CONTAINERS), imported when
#: a trial opens one: a session that runs no container trial needs none of that code.
_CONTAINER_ENVIRONMENTS = (
    EnvironmentKind.PODMAN.value, EnvironmentKind.DOCKER.value, "container-required")


def _container_factory(name: str) -> EnvironmentFactory:
    def open_container(place: TrialPlace) -> Environment:
        from .trial.environments.container import CONTAINERS

        return CONTAINERS[name](place)

    return open_container


def _environments(config: pytest.Config) -> Environments:
    environments = Environments.builtin()
    environments.add({name: _container_factory(name) for name in _CONTAINER_ENVIRONMENTS})
    for extra in config.hook.pytest_evalrun_environments():
        environments.add(extra)
    return environments


def _presets_plugin(config: pytest.Config) -> PresetsPlugin:
    """The built-in presets plugin (registered once per config)."""
    found = config.pluginmanager.get_plugin("evalrun-presets")
    if isinstance(found, PresetsPlugin):
        return found
    plugin = PresetsPlugin(lambda: config.hook.pytest_evalrun_agent_presets())
    config.pluginmanager.register(plugin, "evalrun-presets")
    return plugin


def _recorders(config: pytest.Config, shared: Shared) -> Recorders:
    builtin: list[Recorder] = [
        StandardRecorder(),
        PierRecorder(),
        IndexRecorder(Path(shared.results)),
    ]
    extra = [r for found in config.hook.pytest_evalrun_recorders(config=config) for r in found]
    return Recorders([*builtin, *extra])


_sigterm_key = pytest.StashKey[Any]()


def _sigterm_as_interrupt(config: pytest.Config) -> None:
    """SIGTERM stops the run like Ctrl-C does: agents killed, run.json ``interrupted``."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, handler)
    config.stash[_sigterm_key] = previous


_controller_key = pytest.StashKey[ControllerPlugin]()


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    dryrun.enable(config)  # --eval-dry-run: collect only (before xdist configures)
    # The first cleanup runs last, after pytest's own final garbage collections
    config.add_cleanup(thaw)
    config.stash[thaw_key] = True


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    shared = Shared.from_workerinput(workerinput) if workerinput is not None else None
    if shared is None:
        shared = decide(config)
    presets = _presets_plugin(config)
    kinds = _kinds(config)
    discovery = make_discovery(config, shared, kinds, presets=sorted(presets.presets()))
    if workerinput is None and not config.option.collectonly:
        scan_args(config, discovery)
        if discovery.found:  # this session will run trials: claim the run id
            if _modes(shared, discovery) - {SandboxKind.NONE}:
                probe_soon()  # bubblewrap's answer comes while the session sets up
            shared = reserve(shared)
            # What a pytest killed outright (kill -9) left running dies before we start.
            reap_orphans(step_records(Path(shared.results)))
    context = EvalContext(
        shared=shared,
        discovery=discovery,
        kinds=kinds,
        environments=_environments(config),
        recorders=_recorders(config, shared),
        worker_id=workerinput.get("workerid") if workerinput is not None else None,
        workers=int(workerinput.get("workercount") or 1) if workerinput is not None else 1,
    )
    config.stash[context_key] = context
    if workerinput is None:
        controller = ControllerPlugin(config, context)
        config.stash[_controller_key] = controller
        config.pluginmanager.register(controller, "evalrun-controller")
    if workerinput is None and config.getoption("eval_dry_run", False):
        budget = config.getoption("eval_budget_usd", None)
        config.pluginmanager.register(
            dryrun.DryRunPlugin(Path(shared.results), budget), "evalrun-dry-run"
        )
    if workerinput is not None or not _is_xdist_controller(config):
        config.pluginmanager.register(WorkerPlugin(context, config.hook), "evalrun-worker")
    _sigterm_as_interrupt(config)
    if workerinput is None and not config.option.collectonly and discovery.found:
        _warn_isolation(config, shared, discovery)  # last: it waits for the probe's answer


def _experiments(discovery: Discovery) -> list[Experiment]:
    return [e for p in discovery.found if isinstance(e := discovery.load(p), Experiment)]


def _modes(shared: Shared, discovery: Discovery) -> set[str]:
    """The sandbox modes the session's variants ask for (``--eval-sandbox`` or their own)."""
    return {shared.sandbox or v.sandbox.mode for e in _experiments(discovery) for v in e.variants}


def _warn_isolation(config: pytest.Config, shared: Shared, discovery: Discovery) -> None:
    """One warning when ``sandbox: auto`` runs unsandboxed here, and one per experiment whose
    secrets are too short to mask safely (names only, never values)."""
    experiments = _experiments(discovery)
    if SandboxKind.AUTO in _modes(shared, discovery):
        try:
            warning = resolve(SandboxKind.AUTO.value).warning
        except SandboxError:  # pragma: no cover - auto never raises
            warning = None
        if warning:
            config.issue_config_time_warning(pytest.PytestWarning(warning), stacklevel=2)
    for exp in experiments:
        if exp.weak_secrets:
            config.issue_config_time_warning(
                pytest.PytestWarning(
                    f"pytest-evalrun: experiment {exp.name!r}: the values of "
                    f"{', '.join(exp.weak_secrets)} are too short to mask safely; they are "
                    "masked in text only (never in statuses, ids, paths, keys or binary files)"
                ),
                stacklevel=2,
            )


def _is_xdist_controller(config: pytest.Config) -> bool:
    """Does this process hand its items to xdist workers? (xdist registers its distributing
    session plugin in its own ``pytest_configure``, which runs before ours.)"""
    return config.pluginmanager.has_plugin("dsession")


def pytest_unconfigure(config: pytest.Config) -> None:
    spares = sys.modules.get("pytest_evalrun.trial.containerspares")
    if spares is not None:  # containers launched ahead for a trial that will not come
        spares.release_spares()
    context = config.stash.get(context_key, None)
    if context is not None and context.worker_id is None and context.shared.snapshots:
        remove_session_templates(Path(context.shared.snapshots))
    previous = config.stash.get(_sigterm_key, None)
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    context: EvalContext | None = config.stash.get(context_key, None)
    if context is None:
        return None
    scan_args(config, context.discovery)
    return True if context.discovery.ignored(collection_path) else None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    context: EvalContext | None = parent.config.stash.get(context_key, None)
    if context is not None and context.discovery.is_experiment_file(file_path):
        experiment_file: ExperimentFile = ExperimentFile.from_parent(parent, path=file_path)
        return experiment_file
    return None
