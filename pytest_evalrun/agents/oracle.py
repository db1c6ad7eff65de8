"""The ``oracle`` agent (``agent: {preset: oracle}``): runs the task's reference solution.

As Harbor's ``--agent oracle``: a Harbor task's ``solution/`` is copied into the trial's
container at ``/solution`` (the only agent that ever sees it) and ``solution/solve.sh`` runs
there, in the task's working directory, with ``[solution] env`` of task.toml. It lets a task
set be validated (every task passes with its own solution) before any agent is paid for. It
calls no model: no gateway, no tokens, no cost.
"""

from __future__ import annotations

from pathlib import Path

from ..experiment.model import Step
from ..trial.process import ProcessResult
from ..trial.steps import StepContext
from .preset import Preset

__all__ = ["ORACLE", "SOLUTION_INSIDE", "OraclePreset", "run_oracle"]

SOLUTION_INSIDE = "/solution"
#: Run as Harbor does: the script itself (its shebang), made executable first.
COMMAND = f"chmod +x {SOLUTION_INSIDE}/solve.sh 2>/dev/null; exec {SOLUTION_INSIDE}/solve.sh"


class OraclePreset(Preset):
    """The oracle is a preset by name only: :func:`run_oracle` runs it (no CLI, no records)."""


ORACLE = OraclePreset(name="oracle", program="sh")


def run_oracle(step: Step, ctx: StepContext) -> ProcessResult:
    """Copy the task's solution into the trial's environment and run ``solve.sh``."""
    options = ctx.environment.place.options
    solution = options.get("harbor_solution")
    if not solution:
        why = ("the oracle agent runs a Harbor task's solution/solve.sh in the task's "
               "container; this trial has none (a task of the experiment file's own, or a "
               "Harbor task without solution/solve.sh)")
        ctx.output.write_text(f"evalrun: {why}\n")
        return ProcessResult(None, False, 0.0, start_error=why)
    try:
        ctx.environment.put(Path(str(solution)), SOLUTION_INSIDE)
    except Exception as exc:  # the environment's own failure: the trial is an error
        why = f"copying solution/ into the container failed: {exc}"
        ctx.output.write_text(f"evalrun: {why}\n")
        return ProcessResult(None, False, 0.0, start_error=why, infra_error=("sandbox", why))
    env = dict(ctx.env)
    env.update({str(k): str(v) for k, v in dict(options.get("solution_env") or {}).items()})
    env["DEBIAN_FRONTEND"] = "noninteractive"
    return ctx.run(["/bin/sh", "-c", COMMAND], env=env)
