"""The typed experiment model: what an experiment file means once it is loaded and checked.

Everything here is immutable and free of pytest. ``experiment/load.py`` builds it from YAML; the
collector turns it into items; the trial runner reads it. Paths are absolute.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_evalrun.experiment.allowlist import Allow

from ..sandboxkind import SANDBOX_MODES as _SANDBOX_MODES

#: Built-in step kinds. ``command``: a list (argv) or a string (run by the shell).
#: ``python``: ``"pkg.mod:func"``, called in a fresh interpreter (``trial/pycall.py``), never in
#: the pytest process. Plugins add more through hooks.
BUILTIN_KINDS = ("command", "python")

DEFAULT_TRIALS = 1
DEFAULT_TIMEOUT = 900.0  # agent step, seconds
DEFAULT_SETUP_TIMEOUT = 300.0
DEFAULT_VERIFY_TIMEOUT = 300.0
DEFAULT_PASS_THRESHOLD = 1.0
MAX_TRIALS = 10_000
MAX_ITEMS_PER_FILE = 1_000_000


@dataclass(frozen=True)
class Step:
    """One runnable step (agent, setup or verify).

    ``kind`` is ``"command"``, ``"python"`` or a kind a plugin registered.
    For ``command``: ``value`` is a ``tuple[str, ...]`` (argv) or a ``str`` (shell).
    For ``python``: ``value`` is ``"pkg.mod:func"``.
    For a plugin kind: ``value`` is whatever the YAML held under that kind's key.
    ``line`` is the 1-based line in the experiment file where the step is defined.
    """

    kind: str
    value: Any
    line: int = 0

    def describe(self) -> Any:
        """A JSON-able description (used in variant.json / task.json and fingerprints)."""
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {self.kind: value}


#: ``sandbox:`` modes (see ``trial/sandbox.py``).
SANDBOX_MODES = _SANDBOX_MODES


@dataclass(frozen=True)
class SandboxSetting:
    """``sandbox:`` as written: a mode, and paths a sandboxed step may also read or write
    (absolute, resolved against the experiment file's directory)."""

    mode: str = "auto"
    read: tuple[Path, ...] = ()
    write: tuple[Path, ...] = ()
    #: ``unix_sockets: true``: sandboxed steps may create Unix sockets (by default they may
    #: not: a host socket file they can see would answer; docs/isolation.md).
    unix_sockets: bool = False


#: ``environment: {verify: ...}``: where verify runs (:class:`EnvironmentSpec`).
VERIFY_CONTAINERS = ("fresh", "same")


@dataclass(frozen=True)
class EnvironmentSpec:
    """``environment:`` as written (or as a Harbor task's ``task.toml`` and ``environment/``
    give it): the container image, or the Dockerfile to build it from, and its limits.
    Paths are absolute."""

    image: str | None = None
    dockerfile: Path | None = None
    #: The build context (default: the Dockerfile's directory).
    context: Path | None = None
    #: The workspace inside the container (None: the image's WORKDIR, else /tmp/workspace).
    workdir: str | None = None
    cpus: float | None = None
    memory_mb: int | None = None
    pids: int | None = None
    build_timeout: float = 600.0
    #: Where verify runs: ``fresh`` (a new container of the image with the workspace as the
    #: agent left it) or ``same`` (the agent's container, as Harbor does); None: the default
    #: (``fresh``; a Harbor task: ``same``).
    verify: str | None = None
    #: False: the task allows no network at all (Harbor's ``network_mode = "no-network"``);
    #: None: as the variant's ``network:`` says.
    network: bool | None = None
    #: The task's own network allow list (a Harbor task's ``network_mode = "allowlist"``):
    #: what its trials may reach (with the hosts of the variant's ``network: {allow:}``
    #: added); None: no list of its own.
    allow: tuple[Allow, ...] | None = None
    line: int = 0

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (variant.json / task.json, the fingerprint)."""
        out: dict[str, Any] = {}
        for key in ("image", "dockerfile", "context", "workdir", "cpus", "memory_mb", "pids",
                    "network", "verify"):
            value = getattr(self, key)
            if value is not None:
                out[key] = str(value) if isinstance(value, Path) else value
        if self.allow is not None:
            out["allow"] = [str(a) for a in self.allow]
        return out


@dataclass(frozen=True)
class HarborSource:
    """A task made from a Harbor task directory (``tasks: {harbor: PATH}``)."""

    #: The task directory (task.toml, instruction.md, environment/, tests/, solution/).
    directory: Path
    tests: Path
    #: ``solution/`` (None: the task has none; the ``oracle`` agent then cannot run it).
    solution: Path | None = None
    #: ``[verifier] env`` and ``[solution] env`` of task.toml.
    verifier_env: Mapping[str, str] = field(default_factory=dict)
    solution_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    """One agent configuration. ``defaults`` and ``extends`` are already merged in."""

    name: str
    slug: str
    agent: Step
    line: int = 0
    model: str | None = None
    setup: Step | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None
    #: The raw, merged mapping as written (after interpolation), for variant.json.
    raw: Mapping[str, Any] = field(default_factory=dict)
    #: ``retries`` given for this variant (or in ``defaults``); None: not given here.
    retries: int | None = None
    #: ``pricing:`` USD per million tokens (input, cached_input, output, cache_write).
    pricing: Mapping[str, float] | None = None
    #: ``budget:`` of a trial of this variant (the top level's, then the variant's own keys).
    budget: Mapping[str, float] | None = None
    #: The isolation of its steps (``sandbox:`` of the variant, else the top level's).
    sandbox: SandboxSetting = field(default_factory=SandboxSetting)
    #: ``network:`` of the variant, else the top level's (True: network on; False: none).
    network: bool = True
    #: ``network: {allow: [...]}``: the only hosts its steps reach (None: any public host).
    network_allow: tuple[Allow, ...] | None = None
    #: Inherited variables its steps get (``env_passthrough:`` names or globs: the top
    #: level's and the variant's own, from ``defaults``/``extends`` when it gives none).
    env_passthrough: tuple[str, ...] = ()
    #: ``environment:`` of the variant, else the top level's (None: none given).
    environment: EnvironmentSpec | None = None


@dataclass(frozen=True)
class Task:
    """One task. Timeouts and trials are resolved (task value, else experiment, else default)."""

    name: str
    slug: str
    prompt: str
    verify: Step
    line: int = 0
    prompt_file: Path | None = None
    fixture: Path | None = None
    tags: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    setup_timeout: float = DEFAULT_SETUP_TIMEOUT
    verify_timeout: float = DEFAULT_VERIFY_TIMEOUT
    trials: int = DEFAULT_TRIALS
    pass_threshold: float = DEFAULT_PASS_THRESHOLD
    min_pass_rate: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    #: ``retries`` given for this task; None: the variant's, else the experiment's.
    retries: int | None = None
    #: ``budget:`` given for this task (its keys override the variant's).
    budget: Mapping[str, float] | None = None
    #: ``environment:`` of the task (it wins over the variant's and the top level's).
    environment: EnvironmentSpec | None = None
    #: Set when the task is a Harbor task directory.
    harbor: HarborSource | None = None


@dataclass(frozen=True)
class Experiment:
    """A whole experiment file."""

    name: str
    slug: str
    path: Path  # the experiment file, absolute
    variants: tuple[Variant, ...]
    tasks: tuple[Task, ...]
    description: str | None = None
    min_pass_rate: float | None = None
    #: Values that must never be written or printed (interpolated secrets, ``secrets:`` keys).
    secret_values: frozenset[str] = frozenset()
    #: ``retries`` at the top level (0: an ``error`` outcome is not retried).
    retries: int = 0
    #: Names of secret variables whose values are too short to mask safely (a warning).
    weak_secrets: tuple[str, ...] = ()

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def n_items(self) -> int:
        return len(self.variants) * sum(t.trials for t in self.tasks)

    def retries_for(self, variant: Variant, task: Task) -> int:
        """How often an ``error`` outcome of this variant x task is retried inside the trial:
        the task's ``retries``, else the variant's, else the experiment's."""
        for value in (task.retries, variant.retries):
            if value is not None:
                return value
        return self.retries

    def environment_for(self, variant: Variant, task: Task) -> EnvironmentSpec | None:
        """The container this variant x task runs in: the task's ``environment``, else the
        variant's (which includes the top level's); None: no container named."""
        return task.environment or variant.environment

    def fixture_dirs(self) -> list[Path]:
        return [t.fixture for t in self.tasks if t.fixture is not None]
