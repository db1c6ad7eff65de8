"""The built-in presets plugin: the five presets and the ``preset`` agent kind.

Registered by ``pytest_evalrun.plugin`` like any other plugin. It implements two of
pytest-evalrun's hooks: ``pytest_evalrun_agent_presets`` (the built-in presets; a third-party
plugin adds its own through the same hook) and ``pytest_evalrun_agent_kinds`` (``preset``, which
looks the name up among every plugin's presets). No pytest import: pluggy finds the hook
implementations by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from ..experiment.model import Step
from ..trial.process import ProcessResult
from ..trial.steps import StepContext, StepRunner
from .builtin import BUILTIN
from .oracle import ORACLE, OraclePreset, run_oracle
from .preset import Preset

#: The agent kind presets run as.
KIND = "preset"


class PresetsPlugin:
    """``presets_hook()``: every plugin's ``pytest_evalrun_agent_presets()`` results."""

    def __init__(self, presets_hook: Callable[[], Iterable[Mapping[str, Preset] | None]]) -> None:
        self._hook = presets_hook
        self._table: dict[str, Preset] | None = None

    def pytest_evalrun_agent_presets(self) -> Mapping[str, Preset]:
        return {**BUILTIN, ORACLE.name: ORACLE}

    def pytest_evalrun_agent_kinds(self) -> Mapping[str, StepRunner]:
        return {KIND: self.run}

    def presets(self) -> dict[str, Preset]:
        """Every preset known in this process, by name (asked once)."""
        if self._table is None:
            table: dict[str, Preset] = {}
            for found in self._hook():
                table.update(found or {})
            self._table = table
        return self._table

    def run(self, step: Step, ctx: StepContext) -> ProcessResult:
        name = step.value.get("preset") if isinstance(step.value, Mapping) else None
        preset = self.presets().get(str(name))
        if preset is None:
            return ProcessResult(None, False, 0.0, start_error=f"unknown preset {name!r}")
        if isinstance(preset, OraclePreset):
            return run_oracle(step, ctx)
        from .runner import run_preset  # the runner's chain loads only when a preset runs

        return run_preset(preset, step, ctx)
