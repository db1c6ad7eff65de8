"""Step kinds: how an agent, setup or verify step is run.

Built in: ``command`` (argv list or shell string, placeholders filled in) and ``python``
(``"pkg.mod:func"`` run in a fresh interpreter by :mod:`pytest_evalrun.trial.pycall`, so it gets
the same timeout, output capture and process-tree kill as a command). Plugins add kinds through
the ``pytest_evalrun_agent_kinds`` / ``pytest_evalrun_verify_kinds`` hooks.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..spec.model import Step
from .placeholders import render_command
from .process import ProcessResult, run_step

#: Exit status of :mod:`pycall` when the callable itself crashed (not a verdict).
PYCALL_CRASHED = 70
#: Exit status of :mod:`pycall` when the callable could not be imported.
PYCALL_NOT_FOUND = 71


def missing(step: Step, exit_code: int | None) -> bool:
    """Did the step's program turn out not to exist (shell 126/127, unimportable callable)?"""
    if step.kind == "python":
        return exit_code == PYCALL_NOT_FOUND
    return step.kind == "command" and isinstance(step.value, str) and exit_code in (126, 127)


@dataclass(frozen=True)
class StepContext:
    """What a step runner needs: where to run, with what, for how long, output where."""

    role: str  # "setup", "agent" or "verify"
    cwd: Path
    env: Mapping[str, str]
    timeout: float
    output: Path
    values: Mapping[str, str]  # placeholder values
    experiment_dir: Path
    #: The variant's ``pricing:`` (USD per million tokens), for kinds that price model calls.
    pricing: Mapping[str, float] | None = None


class StepRunner(Protocol):
    def __call__(self, step: Step, ctx: StepContext) -> ProcessResult: ...


def run_command(step: Step, ctx: StepContext) -> ProcessResult:
    command = render_command(step.value, ctx.values)
    return run_step(command, cwd=ctx.cwd, env=ctx.env, timeout=ctx.timeout, output=ctx.output)


def run_python(step: Step, ctx: StepContext) -> ProcessResult:
    argv = [sys.executable, "-m", "pytest_evalrun.trial.pycall", ctx.role, str(step.value)]
    env = dict(ctx.env)
    env["EVALRUN_PYCALL_PATH"] = str(ctx.experiment_dir)
    return run_step(argv, cwd=ctx.cwd, env=env, timeout=ctx.timeout, output=ctx.output)


BUILTIN: Mapping[str, StepRunner] = {"command": run_command, "python": run_python}


@dataclass
class StepKinds:
    """The step kinds known in this process: built-ins plus what plugins registered."""

    agent: dict[str, StepRunner]
    verify: dict[str, StepRunner]

    @classmethod
    def builtin(cls) -> StepKinds:
        return cls(agent=dict(BUILTIN), verify=dict(BUILTIN))

    def runner(self, role: str, kind: str) -> StepRunner:
        table = self.verify if role == "verify" else self.agent
        return table[kind]
