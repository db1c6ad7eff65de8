"""Step kinds: how an agent, setup or verify step is run.

Built in: ``command`` (argv list or shell string, placeholders filled in) and ``python``
(``"pkg.mod:func"`` run in a fresh interpreter by :mod:`pytest_evalrun.trial.pycall`, so it gets
the same timeout, output capture and process-tree kill as a command). Plugins add kinds through
the ``pytest_evalrun_agent_kinds`` / ``pytest_evalrun_verify_kinds`` hooks.

A runner starts processes only through :meth:`StepContext.run`, which runs them in the trial's
environment (:mod:`pytest_evalrun.trial.environments`) with the view of the step's phase: while
a runner runs, :func:`~.process.run_step` called directly refuses to start anything
(:func:`~.process.steps_only_through`). ``ctx.values`` and ``ctx.env`` hold the paths as the
step sees them (the workspace is ``/tmp/workspace`` inside the sandbox).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..experiment.model import Step
from .exitcodes import PYCALL_CRASHED as PYCALL_CRASHED
from .exitcodes import PYCALL_NOT_FOUND as PYCALL_NOT_FOUND
from .phases import View, module_paths
from .placeholders import render_command
from .process import DEFAULT_MAX_OUTPUT, ProcessResult

if TYPE_CHECKING:
    from .environments.base import Environment
    from .network import Forward


def missing(step: Step, exit_code: int | None) -> bool:
    """Did the step's program turn out not to exist (shell 126/127, unimportable callable)?"""
    if step.kind == "python":
        return exit_code == PYCALL_NOT_FOUND
    return step.kind == "command" and isinstance(step.value, str) and exit_code in (126, 127)


@dataclass(frozen=True)
class StepContext:
    """What a step runner needs: what to run with, for how long, output where, and the one
    way to start a process (:meth:`run`)."""

    role: str  # "setup", "agent" or "verify"
    #: The workspace on the host (for reading and writing files in-process).
    cwd: Path
    env: Mapping[str, str]
    timeout: float
    output: Path
    values: Mapping[str, str]  # placeholder values (paths as the step sees them)
    experiment_dir: Path
    #: Where the trial's steps run, and the view of this step's phase.
    environment: Environment = field(repr=False, compare=False)
    view: View = field(repr=False, compare=False)
    #: The variant's ``pricing:`` (USD per million tokens), for kinds that price model calls.
    pricing: Mapping[str, float] | None = None
    #: The model gateway's settings for kinds that route model calls through it (presets):
    #: ``budget`` (the trial's limits), ``record_dir`` / ``replay_dir``, ``name``.
    gateway: Mapping[str, object] | None = None

    @property
    def sandboxed(self) -> bool:
        """Does the step run isolated from the host (its program must be visible inside)?"""
        return self.environment.sandboxed

    def inside(self, path: Path | str) -> str:
        """``path`` (on the host) as the step's processes see it."""
        return self.environment.inside(path)

    def run(
        self,
        command: Sequence[str] | str,
        *,
        output: Path | None = None,
        append: bool = False,
        stdin_text: str | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        read: Sequence[Path] = (),
        write: Sequence[Path] = (),
        program: Sequence[str] | None = None,
        endpoints: Sequence[str | Forward] = (),
        max_output: int | None = DEFAULT_MAX_OUTPUT,
    ) -> ProcessResult:
        """Run ``command`` (argv, or a shell string run with ``/bin/sh -c``) in the trial's
        environment, in the workspace, with the view of this step's phase: output to
        ``output`` (default the step's), ``timeout`` (default the step's), ``env`` (default
        the step's complete environment), ``read``/``write`` host paths made visible
        (read-only / writable) besides the view, ``program``: the words the step's own
        program is found from (default the command), ``endpoints``: URLs of host services the
        process must reach at the same URL (a model endpoint), or :class:`~.network.Forward`
        entries: a host Unix socket the process reaches as ``127.0.0.1:port`` (only where
        ``ctx.environment.forwards_sockets``; the model gateway). Returns when nothing it
        started runs any more; never raises for the step's own failures."""
        from .environments.base import StepCall

        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        return self.environment.run(StepCall(
            argv,
            view=self.view,
            env=self.env if env is None else env,
            timeout=self.timeout if timeout is None else timeout,
            output=self.output if output is None else output,
            append=append,
            stdin_text=stdin_text,
            max_output=max_output,
            read=read,
            write=write,
            program=program,
            endpoints=endpoints,
        ))


class StepRunner(Protocol):
    def __call__(self, step: Step, ctx: StepContext) -> ProcessResult: ...


def run_command(step: Step, ctx: StepContext) -> ProcessResult:
    return ctx.run(render_command(step.value, ctx.values))


def run_python(step: Step, ctx: StepContext) -> ProcessResult:
    # -I: no working directory (the workspace) or PYTHON* variables on sys.path; pycall sets
    # sys.path itself (the experiment directory first, the workspace last for a verifier).
    # The environment says which Python (a container: the image's python3, docs/environments.md).
    words, extra = ctx.environment.pycall()
    command = [*words, ctx.role, str(step.value)]
    env = {**ctx.env, **extra}
    env["EVALRUN_PYCALL_PATH"] = str(ctx.experiment_dir)
    # its module, when it lives beside the YAML
    return ctx.run(command, env=env, read=module_paths(str(step.value), ctx.experiment_dir))


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
