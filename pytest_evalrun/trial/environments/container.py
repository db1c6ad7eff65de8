"""The container environments: ``podman`` and ``docker`` (one container per trial).

The container (:mod:`pytest_evalrun.trial.containers`) starts in :meth:`prepare`, from the
task's image or the image built from its Dockerfile (built once, cached by content). Nothing of
the host is mounted in it but read-only binds of a preset's CLI and the ``python:`` runner: the
fixture (or, for a Harbor task, the image's working directory)
is the workspace *inside*; the plugin keeps a host copy of it, synced out after setup, after
the agent and at the end, so the snapshot and ``workspace.diff`` are computed on the host from
objects the agent never reaches, as in the local sandbox.

Inside, Harbor's layout: the workspace at the task's working directory (``environment:
workdir``, else the image's ``WORKDIR``, else ``/tmp/workspace``), the prompt at
``/logs/prompt.md``, the artifacts directory at ``/logs/artifacts`` and the verifier's at
``/logs/verifier``; a path of the trial's on the host (in a step's command or variables) is
rewritten to its place inside. Phases, as Harbor runs them: the grader's files enter only for
verify (a Harbor task's ``tests/`` at ``/tests``; for an experiment's own task, the experiment
directory, without the results and jobs roots, at its own path), after every process the agent
left has been killed; the oracle agent alone gets ``solution/`` (``/solution``).

Network (:mod:`.containernet`): always ``--network none``; when the trial allows outbound
(``network:`` of the variant, and a Harbor task's ``network_mode`` not ``no-network``), the
local sandbox's per-trial egress proxy and the step's host services (the model gateway) are
forwarded into the container's network namespace (docs/environments.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...experiment.model import Experiment, Task, Variant
from ...sandboxkind import CONTAINER_RUNTIMES, LOCAL_ENVIRONMENTS, EnvironmentKind
from ..containerexec import Batch
from ..containerimages import BuildError, build_image
from ..containerreap import reap_stale
from ..containerruntime import ContainerError, Runtime, detect_runtime
from ..containers import (
    KILL_ALL,
    Container,
    ContainerSpec,
    container_name,
    seccomp_profile,
)
from ..containerspares import TASK_LABEL, TRIAL_LABEL, take_container
from ..containertar import merge_into, pack_at
from ..nsforward import NetnsError, NetnsForwards
from ..process import ProcessResult, environment_call
from ..workspace import Snapshot, prepare_workspace
from .base import Environment, EnvironmentUnavailable, StepCall, StepPaths, TrialPlace
from .containernet import (
    NODE_DIR_INSIDE,
    ContainerNet,
    _container_pid,
    copy_in,
    copy_out,
    image_path,
    step_home,
)
from .containersteps import PYTHON_INSIDE, ContainerSteps, guard, is_pycall, names, python_mounts

__all__ = ["CONTAINERS", "LOGS", "ContainerEnvironment", "choose", "environment_for"]

LOGS = "/logs"
PROMPT_INSIDE = f"{LOGS}/prompt.md"
ARTIFACTS_INSIDE = f"{LOGS}/artifacts"
VERIFIER_INSIDE = f"{LOGS}/verifier"
TRIAL_INSIDE = f"{LOGS}/trial"
DEFAULT_WORKDIR = "/tmp/workspace"
TESTS_INSIDE = "/tests"
SOLUTION_INSIDE = "/solution"
#: Not copied with the experiment directory into verify's container.
SKIP_DIRS = frozenset({".git", ".venv", "venv", "node_modules", "__pycache__", ".mypy_cache",
                       ".pytest_cache", ".ruff_cache", ".tox"})
#: Variables of the step's environment not passed inside (the image's own are kept).
HOST_ONLY = frozenset({"PATH", "HOME", "TMPDIR", "PWD", "SHELL", "USER", "LOGNAME"})
#: Name of the environment that refuses a trial needing a container (see :func:`choose`).
REFUSE = "container-required"

_REAPED: set[str] = set()
_WORKDIRS: dict[str, str] = {}
#: (image, workdir, fixture) -> does the image's working directory add nothing to the fixture
#: (so the workspace can be made on the host and sent in whole)? Learnt from the first trial.
_PLAIN: dict[tuple[str, str, str], bool] = {}


def choose(requested: str, spec: Mapping[str, Any] | None, harbor: bool) -> str | None:
    """The environment a trial runs in, by name, from ``--eval-environment`` (``requested``)
    and the container the experiment names (``spec``: None when it names none): ``auto``
    runs a named container with podman (else Docker), else the local sandbox (None: the
    ``sandbox:`` mode decides); ``podman``/``docker`` always use that runtime (a trial with no
    image errors); ``bwrap``/``none`` run locally and ignore the image, but a Harbor task
    needs its container (:data:`REFUSE`)."""
    if requested in CONTAINER_RUNTIMES:
        return requested
    if requested in LOCAL_ENVIRONMENTS:
        return REFUSE if harbor else requested
    if spec is None:
        return None
    runtime = detect_runtime("auto")
    return runtime.name if runtime is not None else EnvironmentKind.PODMAN.value


def environment_for(
    experiment: Experiment, variant: Variant, task: Task, requested: str, run_id: str,
) -> tuple[str | None, dict[str, Any]]:
    """``(name, options)`` of the environment one trial runs in (:func:`choose`), the options
    being the container's settings as plain data (image or Dockerfile, limits, the Harbor
    task's tests and solution, names for the container's labels)."""
    spec = experiment.environment_for(variant, task)
    harbor = task.harbor
    name = choose(requested, spec.describe() if spec else None, harbor is not None)
    if name not in CONTAINER_RUNTIMES:
        return name, {}
    options: dict[str, Any] = {"task": task.name, "run_id": run_id,
                               "experiment": experiment.name}
    if spec is not None:
        options.update(spec.describe())
        options["build_timeout"] = spec.build_timeout
    python = [str(s.value) for s in (variant.setup, variant.agent, task.verify)
              if s is not None and s.kind == "python"]
    if python:  # the runner and the callables' modules, bound read-only
        options["python_mounts"] = python_mounts(python, experiment.directory)
    if harbor is not None:
        options["harbor_tests"] = str(harbor.tests)
        if harbor.solution is not None:
            options["harbor_solution"] = str(harbor.solution)
        options["solution_env"] = dict(harbor.solution_env)
    return name, options


def _refuse(place: TrialPlace) -> Environment:
    raise EnvironmentUnavailable(
        "a Harbor task runs in its container: run it with --eval-environment auto, podman "
        f"or docker, not {place.requested!r}")


class ContainerEnvironment(ContainerSteps, Environment):
    """One trial in a container of its own (see the module docstring)."""

    name = EnvironmentKind.PODMAN.value
    sandboxed = True

    def __init__(self, place: TrialPlace, runtime_name: str) -> None:
        super().__init__(place)
        self.name = runtime_name  # type: ignore[misc]
        opts = dict(place.options)
        self.options = opts
        if not (opts.get("image") or opts.get("dockerfile")):
            raise EnvironmentUnavailable(
                f"the {runtime_name} environment needs a container image: give the task or "
                "the variant 'environment: {image: NAME}' or '{dockerfile: PATH}'")
        runtime = detect_runtime(runtime_name)
        if runtime is None:
            raise EnvironmentUnavailable(
                f"{runtime_name} is not installed or does not answer here (the trial asks for "
                "a container; docs/environments.md says how to install podman)")
        self.runtime: Runtime = runtime
        if runtime.program not in _REAPED:
            _REAPED.add(runtime.program)
            reap_stale(runtime)
        what = f"task {opts.get('task', '?')!r}"
        if opts.get("dockerfile"):
            dockerfile = Path(str(opts["dockerfile"]))
            context = Path(str(opts.get("context") or dockerfile.parent))
            try:
                self.image = build_image(runtime, dockerfile, context, what=what,
                                         timeout=float(opts.get("build_timeout") or 600.0))
            except BuildError as exc:
                raise EnvironmentUnavailable(str(exc)) from exc
        else:
            self.image = str(opts["image"])
        self.network = bool(place.network) and opts.get("network") is not False
        #: Does verify run in a fresh container of the image (``environment: {verify:}``)?
        #: A Harbor task's verifier runs in the agent's container, as Harbor runs it.
        self.fresh_verify = not opts.get("harbor_tests") and opts.get("verify") != "same"
        self.net = ContainerNet(place, self.network)
        self.scratch: Path | None = Path(tempfile.mkdtemp(prefix="evalrun-trial-"))
        self._workspace = self.scratch / "workspace"
        self.workdir = str(opts.get("workdir") or "") or self._image_workdir()
        self.container: Container | None = None
        #: ``verify: fresh``: verify's container, launched with the agent's.
        self._verify_next: Container | None = None
        #: Has anything run in the container since the host copy of the workspace was made?
        self.dirty = False
        self.graded = False
        self.skipped: list[str] = []
        #: The grader's files (archive, where) for the next step's process to copy in, and
        #: the last step's own copy out (:meth:`_exec_step`).
        self._grader: tuple[Path, str] | None = None
        self._copied: Batch | None = None
        #: Where the ``{pytest}`` guard module is inside (a name of this trial's own).
        self.guard_inside = f"{LOGS}/.evalrun-{os.urandom(6).hex()}"

    # -- the container ----------------------------------------------------------------------
    def _start(self) -> Container:
        """A container of the trial, launched (:func:`.take_container`: one launched ahead
        when there is one, and as many launched ahead for the next trial as this one uses;
        not waited for: give it its first copy in and wait with :meth:`_ready`)."""
        opts = self.options
        trial = os.path.basename(self.place.trial_dir)
        labels = {"io.evalrun.run": str(opts.get("run_id", "")),
                  TASK_LABEL: str(opts.get("task", "")),
                  TRIAL_LABEL: trial}
        name = container_name()
        spec = ContainerSpec(
            image=self.image, name=name, labels=labels,
            cpus=_float(opts.get("cpus")), memory_mb=_int(opts.get("memory_mb")),
            pids=_int(opts.get("pids")) or 4096, network=False,
            seccomp=seccomp_profile() if self.runtime.name == EnvironmentKind.PODMAN else None,
            # a preset's CLI and node; a python: step's runner and module
            mounts=tuple((str(h), str(i)) for h, i in [*(opts.get("mounts") or ()),
                                                        *(opts.get("python_mounts") or ())]),
        )
        try:
            return take_container(self.runtime, spec, ahead=2 if self.fresh_verify else 1)
        except ContainerError as exc:
            raise EnvironmentUnavailable(str(exc)) from exc

    @staticmethod
    def _ready(container: Container, send: Path | None = None) -> Container:
        """``container`` (launched) once it runs, ``send`` (a tar archive) extracted at
        ``/`` by its first process."""
        try:
            return container.wait_ready(send)
        except ContainerError as exc:
            raise EnvironmentUnavailable(str(exc)) from exc

    def _image_workdir(self) -> str:
        """The image's WORKDIR (not ``/``), else :data:`DEFAULT_WORKDIR` (cached)."""
        if self.image not in _WORKDIRS:
            try:
                done = self.runtime.call("image", "inspect", "--format",
                                         "{{.Config.WorkingDir}}", self.image)
            except ContainerError as exc:
                raise EnvironmentUnavailable(str(exc)) from exc
            if done.returncode != 0:
                raise EnvironmentUnavailable(
                    f"image {self.image!r} of task {self.options.get('task', '?')!r} is not "
                    f"there ({self.runtime.name} image inspect: "
                    f"{done.stderr.decode(errors='replace').strip()[-300:]})")
            found = done.stdout.decode(errors="replace").strip()
            _WORKDIRS[self.image] = found if found.startswith("/") and found != "/" \
                else DEFAULT_WORKDIR
        return _WORKDIRS[self.image]

    @property
    def workspace(self) -> Path:
        return self._workspace

    def prepare(self, fixture: Path | None, *, templates: Path | None = None) -> Snapshot:
        """Start the container, put the fixture (and /logs, the prompt) in, and take the
        workspace's first host copy from inside: one call besides the start (none once the
        image's working directory is known to add nothing: the container's first process
        extracts the workspace made on the host)."""
        assert self.scratch is not None
        # the container starts while the host makes what goes into it; with ``verify:
        # fresh``, verify's container (of the image alone: nothing of the agent's reaches
        # it) starts too, to be ready when the agent is done (:meth:`_renew`)
        launched = self.container = self._start()
        if self.fresh_verify:
            self._verify_next = self._start()
            self._verify_next.send_first(None)
        stage = self.scratch / "stage"
        for sub in ("agent", "verifier", "artifacts", "trial"):
            (stage / "logs" / sub).mkdir(parents=True, exist_ok=True)
        if self.place.prompt_file.is_file():
            shutil.copyfile(self.place.prompt_file, stage / "logs" / "prompt.md")
        guard(stage / self.guard_inside.lstrip("/"))
        work = stage / "work"
        # (the directories above the workspace are not in the archive: /tmp keeps its mode)
        items = [(stage / "logs", LOGS), (work, self.workdir)]
        key = (self.image, self.workdir, str(fixture))
        if _PLAIN.get(key):
            # the image adds nothing to this workspace (seen in this session): the workspace
            # and its git repository are made here and go in with the rest, on the
            # container's first process's stdin (no call of their own)
            try:
                snapshot = prepare_workspace(fixture, self._workspace, templates=None)
                shutil.copytree(self._workspace, work, symlinks=True)
                archive = self.scratch / "stage.tar"
                pack_at(items, str(archive))
                self._ready(launched, archive)
                self.net.attach(launched, launched.pidfile)
            finally:
                shutil.rmtree(stage, ignore_errors=True)
                (self.scratch / "stage.tar").unlink(missing_ok=True)
            return snapshot
        self._ready(launched)
        self.net.attach(launched, launched.pidfile)
        if fixture is not None:
            shutil.copytree(fixture, work, symlinks=True, dirs_exist_ok=True)
        else:
            work.mkdir(parents=True, exist_ok=True)
        sent = names(work)
        inside = self.scratch / "image-workdir"
        archive = self.scratch / "stage.tar"
        try:
            pack_at(items, str(archive))
            self.skipped = self.container.exchange(
                'tar -x -f - -C / && cd "$1" && exec tar -c -f - .', [self.workdir],
                send=archive, receive=inside, what="copying the workspace into the container")
        except ContainerError as exc:
            raise EnvironmentUnavailable(str(exc)) from exc
        finally:
            shutil.rmtree(stage, ignore_errors=True)
            archive.unlink(missing_ok=True)
        had_git = os.path.lexists(inside / ".git")
        _PLAIN[key] = not self.skipped and names(inside) == sent
        try:
            snapshot = prepare_workspace(inside, self._workspace, templates=None)
        finally:
            shutil.rmtree(inside, ignore_errors=True)
        if not had_git:
            # as in the local sandbox, the workspace is a git repository of its first state
            # (an image's own repository, e.g. a SWE-bench checkout, is left as it is)
            try:
                self.container.put(self._workspace / ".git", f"{self.workdir}/.git")
            except ContainerError as exc:
                raise EnvironmentUnavailable(str(exc)) from exc
        return snapshot

    def _sources(self, verifier: bool) -> list[str]:
        """What is copied out after a step: the artifacts (and verifier) directory and the
        workspace."""
        return [ARTIFACTS_INSIDE, self.workdir, *([VERIFIER_INSIDE] if verifier else [])]

    def _fetch(self, verifier: bool) -> int:
        """After a step: kill what it left, then copy the artifacts (and verifier) directory
        and the workspace out, in one call; the host copy of the workspace is replaced. How
        many processes the step left that were killed (0 where they are killed from inside,
        uncounted)."""
        assert self.container is not None and self.scratch is not None
        got = self.scratch / "fetched"
        shutil.rmtree(got, ignore_errors=True)
        killed = self.container.kill_leftovers()
        copied, self._copied = self._copied, None
        try:
            if copied is not None:  # the step's own process copied it out (_exec_step)
                path, length = copied.archive()
                skipped = self.container.receive(path, length, got)
            else:
                skipped = self.container.fetch(self._sources(verifier), got, before=KILL_ALL)
        except BaseException:
            shutil.rmtree(got, ignore_errors=True)
            raise
        finally:
            if copied is not None:
                copied.out.unlink(missing_ok=True)
        self._take(got, skipped, verifier)
        return killed or 0

    def _take(self, got: Path, skipped: list[str], verifier: bool) -> None:
        """Take what a step's copy out brought into ``got`` (removed after): the artifacts
        (and verifier) directory merged into the trial's, the workspace's host copy
        replaced."""
        assert self.scratch is not None
        self.skipped = skipped
        try:
            merge_into(got / ARTIFACTS_INSIDE.lstrip("/"), self.place.artifacts)
            if verifier:
                merge_into(got / VERIFIER_INSIDE.lstrip("/"), self.place.trial_dir / "verifier")
            fresh = got / self.workdir.lstrip("/")
            if fresh.is_symlink() or (os.path.lexists(fresh) and not fresh.is_dir()):
                # the agent replaced the workspace by a link or a file: never followed
                fresh.unlink()
                self.skipped.append(f"{self.workdir} (replaced by a link or a file)")
            fresh.mkdir(parents=True, exist_ok=True)
            old = self.scratch / "old"
            os.replace(self._workspace, old)
            os.replace(fresh, self._workspace)
            shutil.rmtree(old, ignore_errors=True)
            self.dirty = False
        finally:
            shutil.rmtree(got, ignore_errors=True)

    def _sync_workspace(self) -> None:
        """The host copy of the workspace := the one inside, when anything ran since."""
        if self.container is not None and self.scratch is not None and self.dirty:
            self._fetch(verifier=False)

    def after_setup(self, snapshot: Snapshot) -> Snapshot:
        self._sync_workspace()
        return super().after_setup(snapshot)

    def diff(self, snapshot: Snapshot | None, *, redactor: Any = None) -> str:
        try:
            self._sync_workspace()
        except ContainerError as exc:
            return f"# workspace diff unavailable: {exc}\n"
        text = super().diff(snapshot, redactor=redactor)
        if self.skipped:
            names = ", ".join(self.skipped[:20])
            text += f"# not copied out of the container (not a file, directory or link): {names}\n"
        return text

    # -- paths ------------------------------------------------------------------------------
    def _map(self) -> list[tuple[str, str]]:
        """(host prefix, inside) pairs, longest host prefix first."""
        p = self.place
        pairs = [
            (os.path.abspath(self._workspace), self.workdir),
            (os.path.abspath(p.artifacts), ARTIFACTS_INSIDE),
            (os.path.abspath(p.trial_dir / "verifier"), VERIFIER_INSIDE),
            (os.path.abspath(p.prompt_file), PROMPT_INSIDE),
            (os.path.abspath(p.kept_workspace), self.workdir),
            (os.path.abspath(p.trial_dir), TRIAL_INSIDE),
        ]
        return sorted(pairs, key=lambda pair: -len(pair[0]))

    def inside(self, path: Path | str) -> str:
        text = os.path.abspath(path)
        for host, inside in self._map():
            if text == host or text.startswith(host + os.sep):
                return inside + text[len(host):]
        return text

    def _rewrite(self, text: str) -> str:
        for host, inside in self._map():
            text = text.replace(host, inside)
        return text

    def step_paths(self, phase: str) -> StepPaths:
        if self.scratch is None:
            raise EnvironmentUnavailable("the trial's environment was torn down")
        return StepPaths("/root", "/tmp", self.workdir or DEFAULT_WORKDIR,
                         env=self.net.step_env(phase))

    @property
    def forwards_sockets(self) -> bool:
        """A network of its own (``--network none``) reached through forwards when on."""
        return self.network

    # -- files ------------------------------------------------------------------------------
    def put(self, src: Path, dest: str) -> None:
        if self.container is None:
            raise EnvironmentUnavailable("the container is not running")
        self.container.put(src, dest)
        self.dirty = True

    def get(self, src: str, dest: Path) -> None:
        if self.container is None:
            raise EnvironmentUnavailable("the container is not running")
        self.container.get(src, dest)

    def _grader_archive(self) -> tuple[Path, str] | None:
        """Before the first verify process: what the grader brings, as a tar archive and the
        directory inside to extract it in (None: nothing, or already in). With ``verify:
        fresh`` the agent's container ends here and verify gets a new one of the image
        (:meth:`_renew`): the archive then also holds the workspace and ``/logs``."""
        if self.graded or self.container is None or self.scratch is None:
            return None
        self.graded = True
        stage = self.scratch / "grader"
        shutil.rmtree(stage, ignore_errors=True)
        items: list[tuple[Path, str]] = []
        if self.fresh_verify:
            items = self._renew(stage)
        tests = self.options.get("harbor_tests")
        source = self.place.experiment_dir
        guard(stage / "guard")
        items.append((stage / "guard", self.guard_inside))
        if tests:
            items.append((Path(str(tests)), TESTS_INSIDE))
        elif source.is_dir():
            hidden = {os.path.abspath(h) for h in self.place.hide}

            def ignore(directory: str, names: list[str]) -> list[str]:
                return [n for n in names if n in SKIP_DIRS
                        or os.path.abspath(os.path.join(directory, n)) in hidden]

            shutil.copytree(source, stage / "experiment", symlinks=True, ignore=ignore)
            items.append((stage / "experiment", str(source)))
        if not items:
            return None
        archive = self.scratch / "grader.tar"
        try:
            pack_at(items, str(archive))
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return archive, "/"

    def _renew(self, stage: Path) -> list[tuple[Path, str]]:
        """``verify: fresh``: end the agent's container (everything it left running, and
        whatever it changed outside the workspace, goes with it) and start a new one of the
        image; what goes into it besides the grader's files: the workspace as the agent left
        it, ``/logs`` with the prompt and the artifacts."""
        assert self.container is not None
        self._sync_workspace()
        self.container.remove()
        self.container = None
        # launched with the agent's (:meth:`prepare`); only the image is in it
        launched, self._verify_next = self._verify_next or self._start(), None
        self.container = launched
        self._ready(launched)
        self._forward_again()
        logs = stage / "logs"
        for sub in ("agent", "verifier", "trial"):
            (logs / sub).mkdir(parents=True, exist_ok=True)
        if self.place.prompt_file.is_file():
            shutil.copyfile(self.place.prompt_file, logs / "prompt.md")
        items = [(logs, LOGS), (self._workspace, self.workdir)]
        if self.place.artifacts.is_dir() and not self.place.artifacts.is_symlink():
            items.append((self.place.artifacts, ARTIFACTS_INSIDE))
        return items

    def _forward_again(self) -> None:
        """The trial's egress proxy (and its allow list) forwarded into verify's fresh
        container too, as into the agent's (:mod:`.containernet`)."""
        net = self.net
        if not net.on or net.egress is None or self.container is None \
                or self.scratch is None:
            return
        try:
            if net.ns is not None:
                net.ns.close()
            net.ns = NetnsForwards(_container_pid(self.container, self.container.pidfile))
            net.ns.check()
            for forward in net.egress.forwards:
                net.ns.add(forward)
        except (OSError, NetnsError) as exc:
            raise EnvironmentUnavailable(
                f"verify's container network could not be set up: {exc}") from exc

    def _grader_files(self) -> None:
        """Before the first verify process: what the grader brings, copied in now (or, where
        the step's process copies it in itself, by :meth:`_exec_step`)."""
        grader = self._grader_archive()
        if grader is None or self.container is None:
            return
        if self.container.direct is not None and self.container.direct.bash is not None:
            self._grader = grader
            return
        archive, where = grader
        try:
            self.container.exchange('mkdir -p "$1" && exec tar -x -f - -C "$1"', [where],
                                    send=archive, what="copying the grader's files in")
        finally:
            archive.unlink(missing_ok=True)

    # -- steps ------------------------------------------------------------------------------
    def run(self, call: StepCall) -> ProcessResult:
        container = self.container
        if container is None or self.scratch is None:
            return ProcessResult(None, False, 0.0, start_error="the container is not running",
                                 infra_error=("sandbox", "the container is not running"))
        try:
            if call.view.phase == "verify":
                self._grader_files()
        except (ContainerError, OSError, EnvironmentUnavailable) as exc:
            why = f"copying the grader's files into the container failed: {exc}"
            return ProcessResult(None, False, 0.0, start_error=why, infra_error=("sandbox", why))
        container = self.container  # verify's own container (verify: fresh)
        if container is None:
            return ProcessResult(None, False, 0.0, start_error="the container is not running",
                                 infra_error=("sandbox", "the container is not running"))
        if call.argv and (call.argv[0] == sys.executable
                          or call.argv[0].startswith(os.path.join(sys.prefix, ""))):
            why = ("this step runs the host's Python, which a container does not have: use "
                   "a 'python:' step, or a command step with {python} or {pytest} (the "
                   "image's own python3; docs/environments.md)")
            return ProcessResult(None, False, 0.0, start_error=why, infra_error=("sandbox", why))
        try:
            copied = copy_in(container, call.write, self.inside)
        except (ContainerError, OSError) as exc:
            why = f"copying the step's directories into the container failed: {exc}"
            return ProcessResult(None, False, 0.0, start_error=why, infra_error=("sandbox", why))
        inner = {k: self._rewrite(v) for k, v in call.env.items() if k not in HOST_ONLY}
        inner.update(self._program_env(call.env, copied))
        words = [self._rewrite(w) for w in call.argv]
        workdir = self._rewrite(call.cwd) if call.cwd else self.workdir
        client_env = {k: v for k, v in os.environ.items()
                      if k in ("PATH", "HOME", "LANG", "XDG_RUNTIME_DIR", "CONTAINERS_CONF",
                               "DOCKER_HOST", "CONTAINER_HOST")}
        client_env.update(inner)
        try:
            with self.net.step(call.endpoints if self.network else ()), environment_call():
                result = self._exec_step(
                    words, inner, workdir, verifier=call.view.phase == "verify",
                    env=client_env, timeout=call.timeout, output=call.output,
                    append=call.append, stdin_text=call.stdin_text, max_output=call.max_output,
                )
        except NetnsError as exc:
            why = f"cannot forward the step's host services into the container: {exc}"
            return ProcessResult(None, False, 0.0, start_error=why, infra_error=("sandbox", why))
        self.dirty = True
        if result.exit_code in (126, 127) and any(
                w == PYTHON_INSIDE or w.startswith(PYTHON_INSIDE + " ")
                or f" {PYTHON_INSIDE} " in w for w in words):
            why_not = self._no_pycall_python() if is_pycall(words) else self._no_python()
            if why_not is not None:
                return ProcessResult(None, False, result.duration, start_error=why_not,
                                     infra_error=("sandbox", why_not))
        try:
            copy_out(container, copied)
        except (ContainerError, OSError) as exc:
            if result.start_error is None:
                why = f"copying the step's directories out of the container failed: {exc}"
                return ProcessResult(None, False, result.duration, start_error=why,
                                     infra_error=("sandbox", why))
        try:
            killed = self._fetch(verifier=call.view.phase == "verify")
        except (ContainerError, OSError) as exc:
            if result.start_error is None:
                why = f"copying the step's files out of the container failed: {exc}"
                return ProcessResult(None, False, result.duration, start_error=why,
                                     infra_error=("sandbox", why))
        else:  # what the step left running, killed from the host after it
            result = result.with_leftovers(killed)
        return result

    def _program_env(self, env: Mapping[str, str],
                     copied: Sequence[tuple[Path, str]]) -> dict[str, str]:
        """``PATH`` with the bound node first (a preset's CLI), ``HOME`` when it is a
        directory of the trial's copied in (its config home)."""
        extra = step_home(env, copied, self._rewrite)
        if self.options.get("mounts"):
            extra["PATH"] = f"{NODE_DIR_INSIDE}/bin:{image_path(self.runtime, self.image)}"
        return extra

    def teardown(self) -> Path | None:
        self.net.close()
        scratch, self.scratch = self.scratch, None
        kept = self.place.kept_workspace
        try:
            if scratch is not None and self.container is not None:
                self.scratch = scratch
                with contextlib.suppress(ContainerError, OSError):
                    self._sync_workspace()
                self.scratch = None
            if self.container is not None:
                self.container.remove()
            if self._verify_next is not None:  # the trial ended before verify
                self._verify_next.discard()  # nothing ran in it: not waited for
                self._verify_next = None
            if scratch is not None and os.path.lexists(self._workspace) \
                    and not os.path.lexists(kept):
                shutil.move(str(self._workspace), str(kept))
                self._workspace = kept
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        return kept if self._workspace == kept else None

    def describe(self) -> dict[str, Any]:
        opts = self.options
        return {
            "environment": self.name,
            "sandbox": "container",
            "requested": self.place.requested,
            "network": self.network,
            **self.net.record(self.runtime.name),
            "runtime": self.runtime.name,
            "image": self.image,
            "workdir": self.workdir or None,
            "limits": {"cpus": _float(opts.get("cpus")), "memory_mb": _int(opts.get("memory_mb")),
                       "pids": _int(opts.get("pids")) or 4096},
            "userns": self.runtime.name == EnvironmentKind.PODMAN,
            "first_process_hidden": self.runtime.name == EnvironmentKind.PODMAN,
            "verify_container": "fresh" if self.fresh_verify else "same",
        }


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _podman(place: TrialPlace) -> Environment:
    return ContainerEnvironment(place, EnvironmentKind.PODMAN.value)


def _docker(place: TrialPlace) -> Environment:
    return ContainerEnvironment(place, EnvironmentKind.DOCKER.value)


#: The container environments by name, for :class:`~.base.Environments`.
CONTAINERS = {EnvironmentKind.PODMAN.value: _podman, EnvironmentKind.DOCKER.value: _docker,
              REFUSE: _refuse}
