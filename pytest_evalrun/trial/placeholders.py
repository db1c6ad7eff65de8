"""Placeholders in step commands: ``{prompt}``, ``{workspace}``, ...

Only the names below are replaced; any other ``{...}`` (awk's ``{print $1}``, a JSON literal)
is left exactly as written. ``{python}`` is the interpreter running pytest (so a step can use
the same virtual environment without activating it). In a list command (argv) values are
inserted as they are; in a string command (run by the shell) they are inserted shell-quoted,
so a prompt with quotes or ``$`` cannot break or inject into the command line.

``{pytest}`` is several words: the safe way to run tests against the agent's workspace
(:func:`pytest_words`).  As a whole argument of a list command it becomes those arguments; in
a string command, those words shell-quoted.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence

NAMES = (
    "prompt",
    "prompt_file",
    "workspace",
    "trial_dir",
    "artifacts_dir",
    "experiment_dir",
    "seed",
    "trial",
    "variant",
    "task",
    "model",
    "run_id",
    "verifier_dir",
    "python",
    "pytest",
)
#: Placeholders whose value is several words (stored shell-quoted in ``values``).
WORDS = frozenset({"pytest"})
_PATTERN = re.compile(r"\{(" + "|".join(sorted(NAMES, key=len, reverse=True)) + r")\}")


def substitute(text: str, values: Mapping[str, str], *, quote: bool = False) -> str:
    def repl(m: re.Match[str]) -> str:
        value = values.get(m.group(1), "")
        if m.group(1) in WORDS:
            return value if quote else " ".join(shlex.split(value))
        return shlex.quote(value) if quote else value

    return _PATTERN.sub(repl, text)


def render_command(command: Sequence[str] | str, values: Mapping[str, str]) -> list[str] | str:
    if isinstance(command, str):
        return substitute(command, values, quote=True)
    out: list[str] = []
    for arg in command:
        name = arg[1:-1] if arg.startswith("{") and arg.endswith("}") else ""
        if name in WORDS:
            out += shlex.split(values.get(name, ""))
        else:
            out.append(substitute(arg, values))
    return out


def pytest_words(python: str, workspace: str, conftests: Iterable[tuple[str, str]],
                 runner: Sequence[str] | None = None) -> list[str]:
    """The command ``{pytest}`` stands for: pytest run by ``python`` on tests that import the
    agent's code in ``workspace``, with nothing the agent left there taking part in the run.
    ``runner``: the words that start pytest with ``-I`` (default ``python -I -m pytest``; a
    container's: the image's ``python3``, the guard module put beside, :mod:`.environments.
    container`).
    ``conftests``: (path relative to the workspace, git blob sha) of each ``conftest.py`` the
    workspace had before the agent ran (the only ones of the workspace that may be loaded).

    Why each part is there (docs/isolation.md has the attacks each one stops):

    - ``-I``: the working directory (the workspace) is not on ``sys.path``, so the agent's
      ``pytest.py`` / ``_pytest/`` is not the pytest that runs; ``PYTHONPATH`` and the user
      site (``usercustomize``, user ``.pth`` files) are ignored;
    - ``-p pytest_evalrun.trial.pytest_guard``: the workspace is importable only after
      everything else, bytecode comes from a private cache, foreign conftest.py files are not
      loaded (:mod:`pytest_evalrun.trial.pytest_guard`);
    - ``-p no:evalrun``: the inner run collects no experiment file the agent left;
    - ``-p no:cacheprovider``: nothing read from or written to a ``.pytest_cache`` (``--lf``
      and ``--sw`` would otherwise skip what the agent's cache says);
    - ``-c os.devnull``, ``--rootdir``: no ``pytest.ini``, ``pyproject.toml``, ``tox.ini`` or
      ``setup.cfg`` the agent wrote (``addopts = --collect-only``, ``-p its_plugin``) is read;
    - ``--confcutdir``: no conftest.py above the workspace (``/tmp``, the scratch directory)
      is loaded;
    - ``--import-mode=importlib``: test modules and conftest files are imported by their path,
      not by a name the agent's files could answer (a root ``conftest.py`` answering for the
      fixture's ``tests/conftest.py``); the directories of test files are searched last.
    """
    words = [*(runner or (python, "-I", "-m", "pytest")), "-p",
             "pytest_evalrun.trial.pytest_guard"]
    words += ["--evalrun-workspace", workspace]
    for rel, sha in sorted(conftests):
        words += ["--evalrun-conftest", f"{rel}={sha}"]
    words += ["-p", "no:evalrun", "-p", "no:cacheprovider", "-c", os.devnull]
    words += ["--rootdir", workspace, "--confcutdir", workspace, "--import-mode=importlib"]
    return words
