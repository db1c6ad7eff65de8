"""Hooks other plugins implement to extend pytest-evalrun (see docs/hooks.md).

Implement them in a ``conftest.py`` or a plugin, like any pytest hook.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .agents.preset import Preset
    from .outcome import TrialOutcome
    from .store.recorder import Recorder
    from .trial.environments import EnvironmentFactory
    from .trial.steps import StepRunner


@pytest.hookspec
def pytest_evalrun_agent_kinds() -> Mapping[str, StepRunner]:  # type: ignore[empty-body]
    """Return ``{kind: runner}`` for agent (and setup) step kinds this plugin adds.

    An experiment file then writes ``agent: {<kind>: <anything>}``. ``runner(step, ctx)`` gets
    the :class:`~pytest_evalrun.experiment.model.Step` and a
    :class:`~pytest_evalrun.trial.steps.StepContext`, and returns a
    :class:`~pytest_evalrun.trial.process.ProcessResult`. Called once per process.
    """


@pytest.hookspec
def pytest_evalrun_agent_presets() -> Mapping[str, Preset]:  # type: ignore[empty-body]
    """Return ``{name: preset}`` for coding-agent CLI presets this plugin adds.

    An experiment file then writes ``agent: {preset: <name>}``. A preset is a
    :class:`~pytest_evalrun.agents.preset.Preset`: how to launch its CLI for a trial and how to
    read the CLI's records back (see docs/agents.md). The five built-in presets come through
    this hook too. Called once per process.
    """


@pytest.hookspec
def pytest_evalrun_verify_kinds() -> Mapping[str, StepRunner]:  # type: ignore[empty-body]
    """Return ``{kind: runner}`` for verify step kinds this plugin adds (see agent kinds)."""


@pytest.hookspec
def pytest_evalrun_environments() -> Mapping[str, EnvironmentFactory]:  # type: ignore[empty-body]
    """Return ``{name: factory}`` for environments this plugin adds (where a trial's steps
    run: a container, a remote machine). ``factory(place)`` gets a
    :class:`~pytest_evalrun.trial.environments.TrialPlace` and returns an
    :class:`~pytest_evalrun.trial.environments.Environment` (or raises
    :class:`~pytest_evalrun.trial.environments.EnvironmentUnavailable`). The built-in
    ``bwrap`` and ``none`` are in the table already; a plugin's own name replaces them. Called
    once per process.
    """


@pytest.hookspec
def pytest_evalrun_trial_env(
    env: MutableMapping[str, str], experiment: Any, variant: Any, task: Any, trial: int
) -> None:
    """Change the environment a trial's steps run with (add credentials, proxies, ...)."""


@pytest.hookspec
def pytest_evalrun_trial_finished(outcome: TrialOutcome, trial_dir: Path) -> None:
    """Called on the worker after a trial is recorded (write ``analysis.json``, notify, ...).

    Not called for trials reused by ``--eval-resume``.
    """


@pytest.hookspec
def pytest_evalrun_recorders(config: pytest.Config) -> list[Recorder]:  # type: ignore[empty-body]
    """Return recorders (:class:`~pytest_evalrun.store.recorder.Recorder` subclasses) that
    write another format beside the built-in ones. Called once per process; each process gets
    its own objects, so a recorder must not rely on state another process holds."""
