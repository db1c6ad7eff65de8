"""What a preset is: how one coding-agent CLI is run for a trial and where its records are.

A :class:`Preset` knows one CLI. For a trial it gets a :class:`PresetTrial` (the prompt, the
model, the workspace, an empty per-trial config home, the step's environment) and returns a
:class:`Launch` (argv and the complete environment); after the CLI exits it reads the CLI's own
records back into :class:`Records`. Everything else (starting the process through the step
runner's process function, an OTLP receiver, writing the evidence files, pricing) is the
preset runner's (:mod:`.runner`), the same for every preset.

A plugin adds a preset with the ``pytest_evalrun_agent_presets`` hook (docs/agents.md).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .agentrun import AgentRun
from .route import ModelRoute

#: Set to ``0`` (or ``false``/``no``/``off``) in a variant's ``env`` to leave a CLI's own
#: telemetry, update checks and downloads as the CLI ships them.
QUIET_SWITCH = "EVALRUN_PRESET_QUIET"


@dataclass(frozen=True)
class PresetTrial:
    """One trial as a preset sees it."""

    preset: str
    #: The CLI's program, resolved to a path.
    executable: str
    #: Extra arguments from the YAML (``args:``), appended to the preset's own.
    args: tuple[str, ...]
    prompt: str
    model: str | None
    workspace: Path
    #: The trial's own config home (empty at the start; kept after the trial, read by collect).
    home: Path
    #: The trial's artifacts directory (files written there are promoted / copied to Pier).
    artifacts: Path
    #: The step's environment (the variant's and task's ``env`` included).
    env: Mapping[str, str]
    #: ``http://127.0.0.1:PORT`` of the OTLP/HTTP receiver when the preset asked for one.
    otlp_endpoint: str | None = None

    @property
    def quiet(self) -> bool:
        """Quiet-traffic settings on (the default)?"""
        return self.env.get(QUIET_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")

    def base_env(self, **extra: str) -> dict[str, str]:
        """The step's environment with HOME and the XDG directories inside the trial's home."""
        env = dict(self.env)
        home = self.home
        env.update({
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "NO_COLOR": "1",
        })
        env.pop(QUIET_SWITCH, None)
        if env.get("PWD") != str(self.workspace):  # some CLIs trust $PWD over their cwd
            env.pop("PWD", None)
        env.update(extra)
        return env


@dataclass
class Launch:
    """How to start the CLI: argv and its complete environment."""

    argv: list[str]
    env: dict[str, str]


@dataclass
class Records:
    """What a preset read back from the CLI's own records after the run."""

    run: AgentRun
    #: The session's events as JSONL text (the CLI's transcript), for ``events.jsonl``.
    events: str | None = None
    #: A markdown transcript the CLI wrote itself (else one is rendered from ``run``).
    session_md: str | None = None
    #: OpenTelemetry records as JSONL text, for ``<otel_name>`` (when not written there directly).
    otel: str | None = None


@dataclass(frozen=True)
class SandboxNeeds:
    """What a preset's CLI needs from the trial's sandbox."""

    #: Paths the CLI reads (its program's install directory, node); read-only is enough.
    read_paths: tuple[Path, ...] = ()
    #: Paths the CLI writes besides the workspace and the artifacts dir (the config home).
    write_paths: tuple[Path, ...] = ()


@dataclass
class Preset:
    """One CLI. Subclasses implement :meth:`launch` and :meth:`collect`."""

    #: The name written in YAML (``agent: {preset: NAME}``).
    name: str
    #: The program run when the YAML gives no ``executable:``.
    program: str
    #: The parser key in :data:`pytest_evalrun.agents.PARSERS` (used by the default collect).
    cli: str = ""
    #: ``"otlp"``: run an OTLP/HTTP receiver for the trial; ``"file"``: the CLI writes
    #: :attr:`otel_name` itself (or :attr:`Records.otel` holds it); ``""``: no OpenTelemetry.
    otel: str = ""
    #: File name of the OpenTelemetry records in the artifacts dir.
    otel_name: str = ""

    def launch(self, trial: PresetTrial) -> Launch:
        raise NotImplementedError

    def followups(self, trial: PresetTrial, stdout: str) -> list[tuple[list[str], Path]]:
        """Commands to run after the CLI (same environment and directory), each with the file
        its output goes to: e.g. an export of the session. Default: none."""
        return []

    def collect(self, trial: PresetTrial, stdout: str) -> Records:
        raise NotImplementedError

    def endpoint(self, trial: PresetTrial) -> str | None:
        """The model API's base URL the CLI talks to (None: not known). When the CLI made no
        model call, the runner tries to connect to it to tell ``model_unreachable`` from
        ``no_model_call``."""
        return None

    def model_route(self, trial: PresetTrial) -> ModelRoute | None:
        """Where the CLI's model endpoint and key are in its environment, for the trial's model
        gateway (None: not known; the CLI talks to its model directly, with the key in its
        environment, and its own records give the tokens)."""
        return None

    def needs(self, trial: PresetTrial) -> SandboxNeeds:
        """Network on; the program's install directory readable; the config home writable."""
        program = Path(os.path.realpath(trial.executable))
        reads = [program.parent.parent if program.parent.name == "bin" else program.parent]
        node = shutil.which("node", path=trial.env.get("PATH"))
        if node:
            reads.append(Path(os.path.realpath(node)).parent.parent)
        return SandboxNeeds(read_paths=tuple(dict.fromkeys(reads)), write_paths=(trial.home,))


def newest(paths: list[Path]) -> Path | None:
    """The most recently modified of ``paths`` (None when empty)."""
    return max(paths, key=lambda p: p.lstat().st_mtime_ns, default=None)
