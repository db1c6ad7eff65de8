"""What the container environment adds to running a step (:mod:`.container`): one
``runc exec`` per process with its copies (:meth:`ContainerSteps._exec_step`), and
``{python}`` / ``{pytest}`` as the image's own python3 with the pytest guard module put into
the container (docs/environments.md)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sysconfig
from pathlib import Path
from typing import Any

from ..containerexec import Batch
from ..containerruntime import ContainerError
from ..containers import Container
from ..phases import module_paths
from ..process import ProcessResult, run_step

__all__ = ["GUARD_SOURCE", "MODULES_INSIDE", "PYCALL_BOOT", "PYCALL_INSIDE", "PYTEST_BOOT",
           "PYTHON_INSIDE", "ContainerSteps", "guard", "is_pycall", "names", "python_mounts"]

#: ``{python}`` in a container: the image's own python3 (found on the image's PATH).
PYTHON_INSIDE = "python3"
#: ``{pytest}`` in a container: the image's python3 -I running pytest, with the guard module
#: (:mod:`pytest_evalrun.trial.pytest_guard`) importable from the trial's directory for it
#: (appended to ``sys.path``: never ahead of the image's own modules). ``%s``: that directory.
PYTEST_BOOT = (
    "import sys\n"
    "sys.path.append(%r)\n"
    "try:\n"
    "    import pytest\n"
    "except ImportError:\n"
    "    sys.stderr.write('evalrun: the image has no pytest for python3 ({pytest}): install it "
    "in the image (apt-get install python3-pytest, or pip install pytest)\\n')\n"
    "    sys.exit(127)\n"
    "sys.argv[0] = 'pytest'\n"
    "sys.exit(pytest.main())\n"
)
#: Where a ``python:`` step's runner (:mod:`pytest_evalrun.trial.pycall` and the module of
#: exit statuses it imports) is bound read-only inside, and where the step's own module is.
PYCALL_INSIDE = "/opt/evalrun/pycall"
MODULES_INSIDE = "/opt/evalrun/python"
#: The files of :data:`PYCALL_INSIDE`, from this installation.
PYCALL_FILES = ("pycall.py", "exitcodes.py")
#: A ``python:`` step in a container: the image's python3 -I loading the runner from
#: :data:`PYCALL_INSIDE` as a package of its own (nothing added to ``sys.path``, nothing of the
#: image's or the workspace's can stand in for it); ``%r``: that directory.
PYCALL_BOOT = (
    "import sys, types\n"
    "if sys.version_info < (3, 9):\n"
    "    sys.stderr.write('evalrun: a python: step needs python3 3.9 or newer in the image\\n')\n"
    "    sys.exit(127)\n"
    "package = types.ModuleType('evalrun_pycall')\n"
    "package.__path__ = [%r]\n"
    "sys.modules['evalrun_pycall'] = package\n"
    "from evalrun_pycall import pycall\n"
    "sys.stdout.reconfigure(line_buffering=True)\n"
    "sys.exit(pycall.main(sys.argv[1:]))\n"
)
GUARD_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "pytest_guard.py")


class ContainerSteps:
    """Mixed into :class:`.container.ContainerEnvironment` (which sets these)."""

    container: Container | None
    scratch: Path | None
    image: str
    options: dict[str, Any]
    guard_inside: str
    _grader: tuple[Path, str] | None
    _copied: Batch | None

    def _sources(self, verifier: bool) -> list[str]:
        raise NotImplementedError

    def python(self) -> str:
        """``{python}``: the image's own python3 (the host's is not in the container)."""
        return PYTHON_INSIDE

    def pytest_runner(self) -> list[str]:
        """``{pytest}``: the image's python3 -I running pytest with the guard module, which
        goes into the container with the workspace and again with the grader's files."""
        return [PYTHON_INSIDE, "-I", "-c", PYTEST_BOOT % self.guard_inside]

    def pycall(self) -> tuple[list[str], dict[str, str]]:
        """A ``python:`` step: the image's python3 running the runner bound at
        :data:`PYCALL_INSIDE`, the step's module found at :data:`MODULES_INSIDE` (both bound
        read-only when the container starts: :func:`python_mounts`)."""
        return ([PYTHON_INSIDE, "-I", "-B", "-c", PYCALL_BOOT % PYCALL_INSIDE],
                {"EVALRUN_PYCALL_MODULES": MODULES_INSIDE})

    def _no_pycall_python(self) -> str | None:
        """Why a ``python:`` step cannot run in this container (None: it can)."""
        if self.container is None:
            return None
        try:
            done = self.container.run(["/bin/sh", "-c", "command -v python3 >/dev/null || exit 3; "
                                       "python3 -c 'import sys; sys.exit(sys.version_info < "
                                       "(3, 9))' 2>/dev/null || exit 4"])
        except ContainerError:
            return None
        what = (f"image {self.image!r} (task {self.options.get('task', '?')!r})")
        fix = ("in the image (its Dockerfile: e.g. 'RUN apt-get install -y python3'), or run "
               "the task in the local sandbox")
        if done.returncode == 3:
            return (f"a 'python:' step runs in the container with the image's own python3, "
                    f"which {what} does not have: install python3 {fix}")
        if done.returncode == 4:
            return (f"a 'python:' step runs in the container with the image's own python3, "
                    f"which in {what} is older than 3.9: install a newer python3 {fix}")
        return None

    def _no_python(self) -> str | None:
        """Why ``{python}`` / ``{pytest}`` cannot run in this container (None: they can)."""
        if self.container is None:
            return None
        try:
            done = self.container.run(["/bin/sh", "-c", "command -v python3 >/dev/null || exit 3; "
                                       "python3 -c 'import pytest' 2>/dev/null || exit 4"])
        except ContainerError:
            return None
        fix = ("in the image (its Dockerfile: e.g. 'RUN apt-get install -y python3 "
               "python3-pytest'), or run the task in the local sandbox")
        if done.returncode == 3:
            return (f"{{python}} and {{pytest}} run the image's own python3, which image "
                    f"{self.image!r} (task {self.options.get('task', '?')!r}) does not have: "
                    f"install python3 {fix}")
        if done.returncode == 4:
            return (f"{{pytest}} runs pytest with the image's python3, which has no pytest in "
                    f"image {self.image!r} (task {self.options.get('task', '?')!r}): install "
                    f"pytest {fix}")
        return None

    def _exec_step(
        self, words: list[str], inner: dict[str, str], workdir: str, *, verifier: bool,
        env: dict[str, str], timeout: float | None, output: Path, append: bool,
        stdin_text: str | None, max_output: int | None,
    ) -> ProcessResult:
        """Run one process of a step in the container. Where ``runc exec`` reaches it
        directly, as one process with its copies (:meth:`.containerexec.DirectExec.batch`):
        the grader's files in (first verify process), the step, every leftover killed, the
        copy out (which :meth:`_fetch` then takes instead of copying again). A step that did
        not get as far as its copy out (timed out, killed) is copied out by :meth:`_fetch`."""
        container = self.container
        assert container is not None and self.scratch is not None
        if container.direct is None or container.direct.bash is None:
            return run_step(
                container.exec_argv(words, env_names=sorted(inner), workdir=workdir,
                                    interactive=stdin_text is not None, env=inner),
                cwd=self.scratch, env=env, timeout=timeout, output=output,
                append=append, stdin_text=stdin_text, max_output=max_output,
            )
        grader, self._grader = self._grader, None
        try:
            batch = container.direct.batch(
                words, env=inner, workdir=workdir, collect=self._sources(verifier),
                grader=grader[0] if grader else None, grader_dest=grader[1] if grader else "/")
        except OSError as exc:
            why = f"cannot start the step in the container: {exc}"
            return ProcessResult(None, False, 0.0, start_error=why, infra_error=("sandbox", why))
        try:
            result = run_step(batch.argv, cwd=self.scratch, env=env, timeout=timeout,
                              output=output, append=append, stdin_text=stdin_text,
                              max_output=max_output, pass_fds=batch.fds)
        finally:
            batch.close()
            if grader is not None:
                grader[0].unlink(missing_ok=True)
        outcome = batch.outcome()
        if outcome is not None and outcome[0] == "grader":
            batch.out.unlink(missing_ok=True)
            why = "copying the grader's files into the container failed"
            return ProcessResult(None, False, result.duration, start_error=why,
                                 infra_error=("sandbox", why))
        if outcome is not None and outcome[1] == 0:
            self._copied = batch
        else:
            batch.out.unlink(missing_ok=True)
        return result.with_leftovers(batch.killed)


def guard(target: Path) -> None:
    """The ``{pytest}`` guard module as the package ``pytest_evalrun.trial`` in ``target``."""
    package = target / "pytest_evalrun" / "trial"
    package.mkdir(parents=True, exist_ok=True)
    (target / "pytest_evalrun" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    # (its file, not the module: importing it here would set this process's pycache prefix)
    shutil.copyfile(GUARD_SOURCE, package / "pytest_guard.py")


def names(root: Path) -> set[str]:
    """Every path under ``root`` (relative), with its kind."""
    found = set()
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            kind = "l" if os.path.islink(path) else "d" if os.path.isdir(path) else "f"
            found.add(f"{kind}:{os.path.relpath(path, root)}")
    return found


def is_pycall(words: list[str]) -> bool:
    """Are ``words`` a ``python:`` step's interpreter (:meth:`ContainerSteps.pycall`)?"""
    return len(words) > 4 and words[0] == PYTHON_INSIDE and words[3:5] == [
        "-c", PYCALL_BOOT % PYCALL_INSIDE]


def python_mounts(targets: list[str], experiment_dir: Path) -> list[tuple[str, str]]:
    """``(host, inside)`` read-only binds for ``python:`` steps (``"pkg.mod:func"``): the
    runner's files at :data:`PYCALL_INSIDE`, and each callable's top-level module or package
    at :data:`MODULES_INSIDE`: the experiment directory's (as on the host, the module alone),
    else an installed one of the Python running pytest (the standard library is the image's).
    A module found nowhere is not bound: the step then fails to import it (exit 71), as on
    the host. Nothing when there is no ``python:`` step."""
    if not targets:
        return []
    here = os.path.dirname(GUARD_SOURCE)
    mounts = {f"{PYCALL_INSIDE}/{name}": os.path.join(here, name) for name in PYCALL_FILES}
    for target in targets:
        for path in module_paths(target, experiment_dir) or _installed(target):
            mounts.setdefault(f"{MODULES_INSIDE}/{path.name}", os.path.realpath(path))
    return [(host, inside) for inside, host in mounts.items()]


def _installed(target: str) -> tuple[Path, ...]:
    """The top-level package directory or module file of ``target``'s module as the Python
    running pytest would import it (without importing it), unless it is the standard
    library's, built in, or a namespace package."""
    top = target.partition(":")[0].split(".")[0]
    if not top.isidentifier():
        return ()
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return ()
    origin = spec.origin if spec is not None else None
    if not origin or not os.path.isabs(origin):
        return ()
    path = Path(origin)
    if spec is not None and spec.submodule_search_locations is not None:
        path = path.parent
    stdlib = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")}
    real = os.path.realpath(path)
    parts = Path(real).parts
    if "site-packages" not in parts and "dist-packages" not in parts and any(
            real.startswith(s + os.sep) for s in stdlib):
        return ()
    return (path,)
