"""Step kinds: how an agent, setup or verify step is run.

Built in: ``command`` (argv list or shell string, placeholders filled in) and ``python``
(``"pkg.mod:func"`` run in a fresh interpreter by :mod:`pytest_evalrun.trial.pycall`, so it gets
the same timeout, output capture and process-tree kill as a command). Plugins add kinds through
the ``pytest_evalrun_agent_kinds`` / ``pytest_evalrun_verify_kinds`` hooks.

Every runner starts its program through :meth:`StepContext.wrap`, which puts it in the step's
sandbox (``trial/sandbox.py``); ``ctx.values`` and ``ctx.env`` already hold the paths as the
step sees them (the workspace is ``/tmp/workspace`` inside the sandbox).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..experiment.model import Step
from .exitcodes import PYCALL_CRASHED as PYCALL_CRASHED
from .exitcodes import PYCALL_NOT_FOUND as PYCALL_NOT_FOUND
from .phases import module_paths, program_paths
from .placeholders import render_command
from .process import ProcessResult, run_step
from .sandbox import Sandbox, credential_paths


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
    values: Mapping[str, str]  # placeholder values (paths as the step sees them)
    experiment_dir: Path
    #: The variant's ``pricing:`` (USD per million tokens), for kinds that price model calls.
    pricing: Mapping[str, float] | None = None
    #: The step's isolation (None: run as is, e.g. in unit tests).
    sandbox: Sandbox | None = None

    def missing_program(self, argv: Sequence[str]) -> str | None:
        """Why ``argv[0]`` cannot be started ("command not found: X"), checked before the
        sandbox starts it (inside, bubblewrap would report it with its own exit status)."""
        if self.sandbox is None or not self.sandbox.sandboxed or not argv:
            return None
        program = argv[0]
        if "/" in program:
            path = os.path.join(self.cwd, program)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return None
            return (
                f"command not found: {program}"
                if not os.path.exists(path)
                else (f"permission denied: {program}")
            )
        if shutil.which(program, path=self.env.get("PATH", os.defpath)) is None:
            return f"command not found: {program}"
        return None

    def wrap(self, command: Sequence[str] | str) -> tuple[list[str], Path]:
        """``(argv, cwd)`` to give :func:`run_step` for ``command`` (argv, or a shell string):
        inside the step's sandbox, started in the working directory as the step sees it."""
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        if self.sandbox is None:
            return argv, self.cwd
        return self.own_program(argv).wrap(argv, self.cwd)

    def own_program(self, argv: Sequence[str], *more: Path) -> Sandbox:
        """The step's sandbox with its own program visible (its executable's install prefix,
        the files its command names: :func:`~.phases.program_paths`) and ``more``."""
        assert self.sandbox is not None
        if not self.sandbox.sandboxed:
            return self.sandbox
        policy = self.sandbox.policy
        home = str(policy.user_home) if policy.user_home else os.path.expanduser("~")
        found = program_paths(
            argv,
            path=self.env.get("PATH", os.defpath),
            cwd=self.cwd,
            protect=policy.protect,
            deny=(*policy.hide, *credential_paths(os.path.realpath(home))),
        )
        return self.sandbox.extended(read=(*found, *more))


class StepRunner(Protocol):
    def __call__(self, step: Step, ctx: StepContext) -> ProcessResult: ...


def run_command(step: Step, ctx: StepContext) -> ProcessResult:
    command = render_command(step.value, ctx.values)
    if not isinstance(command, str):
        problem = ctx.missing_program(command)
        if problem is not None:
            ctx.output.parent.mkdir(parents=True, exist_ok=True)
            ctx.output.write_text(f"evalrun: {problem}\n")
            return ProcessResult(None, False, 0.0, start_error=problem)
    argv, cwd = ctx.wrap(command)
    return run_step(argv, cwd=cwd, env=ctx.env, timeout=ctx.timeout, output=ctx.output)


def run_python(step: Step, ctx: StepContext) -> ProcessResult:
    # -I: no working directory (the workspace) or PYTHON* variables on sys.path; pycall sets
    # sys.path itself (the experiment directory first, the workspace last for a verifier).
    command = [sys.executable, "-I", "-m", "pytest_evalrun.trial.pycall", ctx.role, str(step.value)]
    env = dict(ctx.env)
    env["EVALRUN_PYCALL_PATH"] = str(ctx.experiment_dir)
    if ctx.sandbox is not None:  # its module, when it lives beside the YAML
        own = module_paths(str(step.value), ctx.experiment_dir)
        argv, cwd = ctx.own_program(command, *own).wrap(command, ctx.cwd)
    else:
        argv, cwd = command, ctx.cwd
    return run_step(argv, cwd=cwd, env=env, timeout=ctx.timeout, output=ctx.output)


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
