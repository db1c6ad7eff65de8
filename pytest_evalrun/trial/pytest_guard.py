"""The pytest plugin behind the ``{pytest}`` placeholder: hidden tests run against the agent's
workspace without anything the agent left there taking part in the run.

Loaded with ``-p pytest_evalrun.trial.pytest_guard`` by the command ``{pytest}`` expands to
(:func:`pytest_evalrun.trial.placeholders.pytest_words`), it

- reads and writes bytecode in a private directory (``sys.pycache_prefix``): a
  ``__pycache__/*.pyc`` the agent planted, with a header matching a source it left unchanged,
  is never executed (neither by pytest's assertion rewriting nor by a plain import);
- imports the workspace's modules only when nothing else provides them: the workspace is
  searched by a finder placed *after* every ``sys.path`` entry (``python -I`` keeps the
  working directory off ``sys.path``), so a ``pytest.py``, ``json.py`` or a test helper's name
  the agent used never shadows the standard library, an installed package or the test suite's
  own modules;
- loads a ``conftest.py`` inside the workspace only when its content is the one the workspace
  had before the agent ran (``--evalrun-conftest REL=BLOB-SHA``, given by the harness); any
  other (new, or changed by the agent) is not imported, and a line on stderr names it.

It imports nothing of pytest: it is plain hook functions, and it reaches into pytest only to
wrap the plugin manager's conftest import (``_importconftest``, present in pytest 7 to 9).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
import types
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

# Before any test module or conftest is imported (this module is loaded by ``-p``, early).
sys.pycache_prefix = tempfile.mkdtemp(prefix="evalrun-pycache-")


class WorkspaceLast(importlib.abc.MetaPathFinder):
    """Finds top-level modules in the workspace (and in the workspace's directories pytest
    puts on ``sys.path`` for its tests), after every other finder gave up."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.roots = [root]

    def inside(self, entry: object) -> bool:
        if not isinstance(entry, str) or not entry:
            return False
        text = os.path.abspath(entry)
        return text == self.root or text.startswith(self.root + os.sep)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if path is not None:  # a submodule: found through its package's __path__
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, list(self.roots))


class GuardedPath(list):  # type: ignore[type-arg]
    """``sys.path`` that sends the workspace's directories pytest adds (a test's directory,
    with any import mode) to :class:`WorkspaceLast` instead: searched after everything."""

    finder: WorkspaceLast

    def _divert(self, entry: object) -> bool:
        if self.finder.inside(entry):
            if entry not in self.finder.roots:
                self.finder.roots.append(str(entry))
            return True
        return False

    def append(self, entry: Any) -> None:
        if not self._divert(entry):
            super().append(entry)

    def insert(self, index: Any, entry: Any) -> None:
        if not self._divert(entry):
            super().insert(index, entry)


def blob_sha(data: bytes) -> str:
    """git's name for a file's content (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("evalrun-guard", "pytest-evalrun: hidden tests (set by {pytest})")
    group.addoption("--evalrun-workspace", default=None, help="the agent's workspace")
    group.addoption(
        "--evalrun-conftest",
        action="append",
        default=[],
        help="REL=BLOB-SHA: a conftest.py of the workspace as it was before the agent ran",
    )


def _trusted(option: Any) -> tuple[str | None, set[tuple[str, str]]]:
    workspace = getattr(option, "evalrun_workspace", None)
    pairs = set()
    for item in getattr(option, "evalrun_conftest", None) or ():
        rel, _, sha = str(item).rpartition("=")
        pairs.add((rel, sha))
    return (os.path.abspath(workspace) if workspace else None), pairs


def foreign_conftest(path: str, workspace: str, trusted: set[tuple[str, str]]) -> bool:
    """Is ``path`` a conftest.py inside the workspace that the workspace did not have?"""
    text = os.path.abspath(path)
    if not (text == workspace or text.startswith(workspace + os.sep)):
        real = os.path.realpath(text)
        inside = real.startswith(os.path.realpath(workspace) + os.sep)
        if not inside:
            return False
        text = real
        workspace = os.path.realpath(workspace)
    rel = os.path.relpath(text, workspace).replace(os.sep, "/")
    try:
        with open(text, "rb") as f:
            data = f.read()
    except OSError:
        return True
    return (rel, blob_sha(data)) not in trusted


def pytest_load_initial_conftests(early_config: Any, parser: Any, args: Any) -> None:
    workspace, trusted = _trusted(early_config.known_args_namespace)
    if workspace is None:
        return
    if not any(isinstance(f, WorkspaceLast) for f in sys.meta_path):
        finder = WorkspaceLast(workspace)
        sys.meta_path.append(finder)
        guarded_path = GuardedPath(p for p in sys.path if not finder.inside(p))
        guarded_path.finder = finder
        sys.path = guarded_path
    manager = early_config.pluginmanager
    original = getattr(manager, "_importconftest", None)
    if original is None:  # a pytest without it: load no conftest rather than a foreign one
        sys.stderr.write("evalrun: this pytest cannot be guarded; conftest files are not used\n")
        early_config.known_args_namespace.noconftest = True
        return

    def guarded(conftestpath: Any, *rest: Any, **kwargs: Any) -> Any:
        if foreign_conftest(str(conftestpath), workspace, trusted):
            sys.stderr.write(
                f"evalrun: not loaded: {conftestpath} (not in the workspace as it was before the"
                " agent ran)\n"
            )
            return types.ModuleType("evalrun_ignored_conftest")
        return original(conftestpath, *rest, **kwargs)

    manager._importconftest = guarded


def pytest_collect_file(file_path: Any, parent: Any) -> None:
    """Test modules are imported by path (``--import-mode=importlib``); the modules beside
    them (a test's helpers) stay importable: a directory outside the workspace at the end of
    ``sys.path``, one inside the workspace after everything (:class:`WorkspaceLast`)."""
    directory = str(getattr(file_path, "parent", ""))
    if directory and str(file_path).endswith(".py") and directory not in sys.path:
        sys.path.append(directory)  # a GuardedPath diverts the workspace's directories
