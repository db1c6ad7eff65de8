"""What a preset's CLI needs of the host inside a trial's container (issue 22).

A container sees nothing of the host, and its mounts are fixed when it starts (before the agent
step): :func:`container_mounts` names, for a variant whose agent is a preset, the
host files to bind read-only (:func:`~..trial.environments.containernet.program_mounts`): the
CLI's npm install and the host's ``node``. The model calls go through the gateway, forwarded
into the container's network (docs/environments.md).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from ..experiment.model import Step
from ..trial.environments.containernet import program_mounts
from .builtin import BUILTIN
from .oracle import OraclePreset
from .preset import Preset
from .runner import resolve_executable

__all__ = ["container_mounts"]


def container_mounts(agent: Step, env: Mapping[str, str], base: Path,
                     presets: Mapping[str, Preset] | None = None) -> list[tuple[str, str]]:
    """``(host, inside)`` read-only binds for ``agent`` when it is a preset (of ``presets``,
    the session's table; default the built-in ones) whose program is found (as the preset step
    will find it: ``executable:``, else the preset's program on ``env``'s PATH); none otherwise
    (a command agent, the oracle, a CLI that is not installed: its step then says so)."""
    if agent.kind != "preset" or not isinstance(agent.value, Mapping):
        return []
    preset = (BUILTIN if presets is None else presets).get(str(agent.value.get("preset")))
    if preset is None or isinstance(preset, OraclePreset):
        return []
    program = str(agent.value.get("executable") or preset.program)
    executable = resolve_executable(program, env, base)
    if executable is None:
        return []
    return program_mounts(executable, shutil.which("node", path=env.get("PATH")))
