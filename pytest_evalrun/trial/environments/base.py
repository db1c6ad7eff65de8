"""Where a trial's steps run: the :class:`Environment` interface and its registry.

One trial gets one environment (the models: Inspect AI's ``SandboxEnvironment``, Harbor's
``BaseEnvironment``). The trial runner (:mod:`pytest_evalrun.trial.run`) asks it, in order:

1. :meth:`Environment.prepare` -- the workspace from the fixture, snapshotted (git objects
   kept outside the workspace, out of the agent's reach);
2. per step (setup, agent, verify): :meth:`Environment.step_paths` (HOME, TMPDIR and the
   workspace as the step sees them, for its environment variables), then
   :meth:`Environment.run` for every process the step starts, with the phase's
   :class:`~pytest_evalrun.trial.phases.View` (what the phase may see besides the system);
   after setup, :meth:`Environment.after_setup` (the snapshot the agent's diff is taken from);
3. :meth:`Environment.diff` after the agent (the agent's change alone);
4. :meth:`Environment.teardown` at the end (always, also after an error or Ctrl-C): nothing of
   the trial runs any more and the workspace is in the trial directory (``workspace/``);
5. :meth:`Environment.describe` -- the isolation record of meta.json (``isolation``).

The workspace is a host directory (:attr:`Environment.workspace`) that the environment shows
its steps (the local sandbox binds it at ``/tmp/workspace``; a container gets a copy of it and
the host copy is kept in step after setup, after the agent and at the end); the plugin copies
the fixture into it, snapshots it and diffs it on the host, so the evidence never depends on
what runs inside. On the host every other trial path (the trial directory, the artifacts and
verifier directories, the prompt file, the experiment directory) is seen at its own host path;
a container sees them at Harbor's places (``/logs/...``, docs/environments.md):
:meth:`Environment.inside` maps a host path to the path a step sees.

A plugin adds an environment with the ``pytest_evalrun_environments`` hook: ``{name:
factory}``, ``factory(place) -> Environment`` (docs/hooks.md). Built in: ``bwrap`` and
``none`` (:mod:`.local`), ``podman`` and ``docker`` (:mod:`.container`); ``auto`` chooses
``bwrap`` where bubblewrap works, else ``none`` (:class:`~.registry.Environments`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ...sandboxkind import EnvironmentKind
from ..process import DEFAULT_MAX_OUTPUT, ProcessResult
from ..workspace import Snapshot, prepare_workspace, snapshot_after_setup, workspace_diff

if TYPE_CHECKING:
    from ...secrets import Redactor
    from ..network import Allow, Forward, Upstream
    from ..phases import View

__all__ = [
    "Environment",
    "EnvironmentFactory",
    "EnvironmentUnavailable",
    "StepPaths",
    "TrialPlace",
]


class EnvironmentUnavailable(Exception):
    """The environment asked for cannot run here (the trial is an ``error``, kind
    ``sandbox``, with this message); never a silent fallback to less isolation."""


@dataclass(frozen=True)
class TrialPlace:
    """One trial as an environment is given it: its host paths and what the experiment asks
    of its isolation."""

    #: The trial's result directory (the workspace is kept in ``trial_dir / "workspace"``).
    trial_dir: Path
    #: The agent's artifacts directory (inside the trial directory).
    artifacts: Path
    #: The exact prompt sent (inside the trial directory).
    prompt_file: Path
    #: The experiment file's directory (the grader's files).
    experiment_dir: Path
    #: pytest's rootdir (setup may read it).
    rootdirs: tuple[Path, ...] = ()
    #: The results and jobs roots: no step sees them (but for its own trial directory).
    hide: tuple[Path, ...] = ()
    #: ``sandbox: read:`` / ``sandbox: write:`` of the variant.
    read: tuple[Path, ...] = ()
    write: tuple[Path, ...] = ()
    #: ``network:`` of the variant (False: no network at all).
    network: bool = True
    #: ``network: {allow: [...]}`` of the variant (None: any public host through the egress
    #: proxy; docs/isolation.md).
    network_allow: tuple[Allow, ...] | None = None
    #: ``sandbox: {unix_sockets: true}``: steps may create ``AF_UNIX`` sockets.
    unix_sockets: bool = False
    #: The proxy the environment pytest runs in names: the egress proxy goes out through it.
    upstream: Upstream | None = None
    #: What was asked for (``auto``, ``bwrap``, ``none`` or a plugin's name), for describe().
    requested: str = EnvironmentKind.AUTO.value
    #: The experiment's settings for this environment (e.g. an image), as plain data.
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kept_workspace(self) -> Path:
        """Where the workspace is when the trial is over."""
        return self.trial_dir / "workspace"

    @property
    def protect(self) -> tuple[Path, ...]:
        """Directories whose content a step's program lookup must never expose whole."""
        return (self.experiment_dir, *self.rootdirs)


@dataclass(frozen=True)
class StepPaths:
    """Paths as one step sees them: its private HOME and TMPDIR (fresh for the step) and its
    working directory (the workspace); ``env``: variables the environment sets for every
    step (e.g. ``HTTPS_PROXY`` of its egress path), added over the step's clean base."""

    home: str
    tmp: str
    workspace: str
    env: Mapping[str, str] = field(default_factory=dict)



@dataclass(frozen=True)
class StepCall:
    """One process of a step, as the step runner asks an environment to run it
    (:meth:`Environment.run` says what an implementation guarantees for each field)."""

    argv: Sequence[str]
    #: The phase's view (what the process may see).
    view: View
    #: Its complete environment, paths as it sees them.
    env: Mapping[str, str]
    #: Seconds before it is killed with everything it started (None: no limit).
    timeout: float | None
    #: The host file its stdout and stderr go to.
    output: Path
    #: Where it starts, as it sees it (None: the workspace).
    cwd: str | None = None
    #: Append to ``output`` instead of truncating it.
    append: bool = False
    stdin_text: str | None = None
    #: Bytes of output kept (None: all).
    max_output: int | None = DEFAULT_MAX_OUTPUT
    #: Host paths made visible read-only / writable besides the view.
    read: Sequence[Path] = ()
    write: Sequence[Path] = ()
    #: The words its own program is found from (None: ``argv``).
    program: Sequence[str] | None = None
    #: Host services it must reach: URLs at the same URL, or host Unix sockets
    #: (:class:`~..network.Forward`) as ``127.0.0.1:port``.
    endpoints: Sequence[str | Forward] = ()

class Environment(ABC):
    """Where one trial's steps run. Subclasses implement the abstract methods; the workspace
    methods (:meth:`prepare`, :meth:`after_setup`, :meth:`diff`, :meth:`put`, :meth:`get`)
    work on the host directory :attr:`workspace` and suit every environment that shows that
    directory to its steps."""

    #: The registry name (``bwrap``, ``none``, ...).
    name: ClassVar[str] = ""
    #: Do steps run isolated from the host (a program must be made visible to run)?
    sandboxed: ClassVar[bool] = False

    def __init__(self, place: TrialPlace) -> None:
        self.place = place

    # -- the workspace --------------------------------------------------------------------
    @property
    @abstractmethod
    def workspace(self) -> Path:
        """The workspace on the host while the trial runs (where :meth:`prepare` puts it)."""

    def prepare(self, fixture: Path | None, *, templates: Path | None = None) -> Snapshot:
        """Copy ``fixture`` (None: an empty workspace) into :attr:`workspace` and snapshot
        it; :class:`~pytest_evalrun.trial.workspace.WorkspaceError` or ``OSError`` when it
        cannot be done."""
        return prepare_workspace(fixture, self.workspace, templates=templates)

    def after_setup(self, snapshot: Snapshot) -> Snapshot:
        """The snapshot the agent's change is diffed against, once setup has run."""
        return snapshot_after_setup(self.workspace, snapshot)

    def diff(self, snapshot: Snapshot | None, *, redactor: Redactor | None = None) -> str:
        """The agent's change to the workspace as a git diff (bounded; see workspace.py)."""
        return workspace_diff(self.workspace, snapshot, redactor=redactor)

    def put(self, src: Path, dest: str) -> None:
        """Copy the host file ``src`` to ``dest`` (a path as the steps see it)."""
        import shutil

        shutil.copy2(src, self.host(dest))

    def get(self, src: str, dest: Path) -> None:
        """Copy ``src`` (a path as the steps see it) to the host file ``dest``."""
        import shutil

        shutil.copy2(self.host(src), dest)

    def host(self, inside: str) -> Path:
        """The host path of ``inside`` (a path as the steps see it): the inverse of
        :meth:`inside` for the workspace; every other path is at its own."""
        seen = self.inside(self.workspace)
        if inside == seen or inside.startswith(seen.rstrip("/") + "/"):
            return Path(str(self.workspace) + inside[len(seen):])
        return Path(inside)

    # -- steps ----------------------------------------------------------------------------
    def python(self) -> str:
        """The Python ``{python}`` names for this trial's steps (default: the one running
        pytest)."""
        import sys

        return sys.executable

    def pycall(self) -> tuple[list[str], dict[str, str]]:
        """How a ``python:`` step's interpreter starts: the words before its role and target
        (:mod:`..pycall`, run by a Python with ``-I``) and the variables it needs besides the
        step's (default: the Python running pytest, nothing more)."""
        import sys

        return [sys.executable, "-I", "-m", "pytest_evalrun.trial.pycall"], {}

    def pytest_runner(self) -> list[str] | None:
        """The words ``{pytest}`` starts with (``python -I`` running pytest, the guard module
        importable); None: ``{python} -I -m pytest``."""
        return None

    @property
    def forwards_sockets(self) -> bool:
        """Do this trial's steps have a network of their own that reaches the host only
        through forwards, so a :class:`~..network.Forward` given to :meth:`run` as an endpoint
        is how a host service (served on a Unix socket) is reached? False (the default): the
        steps share the host's network, or have none; serve on the host's loopback and name
        the URL instead."""
        return False

    @abstractmethod
    def inside(self, path: Path | str) -> str:
        """``path`` (on the host) as a step sees it."""

    @abstractmethod
    def step_paths(self, phase: str) -> StepPaths:
        """Fresh private HOME and TMPDIR for the next step of ``phase``, as it sees them."""

    @abstractmethod
    def run(self, call: StepCall) -> ProcessResult:
        """Run ``call.argv`` as one process of a step of the phase ``call.view.phase`` and
        return when nothing it started runs any more (:class:`StepCall` names the fields
        below).

        Guarantees every implementation keeps: the process sees what ``view`` and the
        trial's place allow (plus ``read`` read-only and ``write`` writable: a step kind's
        own files) and the step's own program (found from ``program``, default ``argv``);
        the host services named by ``endpoints`` (URLs: a model endpoint, an OpenTelemetry
        receiver) are reachable at the same URLs (an environment with a network of its own
        forwards them); a :class:`~..network.Forward` among them (a host Unix socket: the model
        gateway's) is reachable as TCP ``127.0.0.1:port`` where :attr:`forwards_sockets`, and
        ignored elsewhere;
        ``env`` is its complete environment (paths as it sees them); it starts in ``cwd``
        (as it sees it; default the workspace); stdout and stderr go to the host file
        ``output`` (truncated, or appended to), cut to ``max_output`` bytes; ``stdin_text``
        on stdin, else nothing; after ``timeout`` seconds it is killed with everything it
        started; a direct :func:`~..process.run_step` is refused while a step runner runs, so
        an implementation starts its processes inside :func:`~..process.environment_call`.
        A program that cannot start (not found, not visible, the isolation failed)
        is a ``start_error``, never an exit status of the program's; when the isolation
        itself failed, ``infra_error`` is ``("sandbox", why)``. Never raises for the step's
        own failures."""

    @abstractmethod
    def teardown(self) -> Path | None:
        """End the trial's environment: nothing of it runs any more, the workspace is kept
        in the trial directory (returned; None when it could not be kept). Called once,
        also after an error; must not raise for a workspace that cannot be kept."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The isolation this trial had, for meta.json's ``isolation`` (at least
        ``environment``, ``sandbox``, ``requested`` and ``network``)."""


#: ``factory(place) -> Environment``; raises :class:`EnvironmentUnavailable`.
EnvironmentFactory = Callable[[TrialPlace], Environment]
