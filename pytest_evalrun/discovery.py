"""Which files are experiment files, which directories pytest must never collect.

Fixture directories (copied into every trial's workspace) and our own output directories hold
files that look like tests (``test_*.py``, ``*.eval.yaml``); pytest must not collect them. The
first ``pytest_ignore_collect`` call scans the command-line paths once, loads the experiment files
found (the result is cached and reused by the collector), and records their fixture directories.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .experiment.errors import ExperimentError
from .experiment.load import load_experiment
from .experiment.model import Experiment

DEFAULT_PATTERNS = ("*.eval.yaml", "*.eval.yml")
_ALWAYS_SKIP = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
    }
)


def matches(path: Path, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(path.name, p) for p in patterns)


@dataclass
class Discovery:
    """Per-process cache of loaded experiment files and the directories to ignore."""

    patterns: tuple[str, ...]
    environ: Mapping[str, str]
    agent_kinds: Collection[str]
    verify_kinds: Collection[str]
    output_dirs: tuple[Path, ...]
    norecurse: tuple[str, ...] = ()
    explicit: frozenset[Path] = frozenset()
    #: Preset names known (``agent: {preset: NAME}``); None: not checked.
    presets: Collection[str] | None = None
    _loaded: dict[Path, Experiment | ExperimentError] = field(default_factory=dict)
    #: Experiment files found by :meth:`scan` (outside fixture and output directories).
    found: list[Path] = field(default_factory=list)
    _ignored: set[Path] | None = None

    def load(self, path: Path) -> Experiment | ExperimentError:
        path = path.resolve()
        cached = self._loaded.get(path)
        if cached is None:
            try:
                cached = load_experiment(
                    path,
                    environ=self.environ,
                    agent_kinds=self.agent_kinds,
                    verify_kinds=self.verify_kinds,
                    presets=self.presets,
                )
            except ExperimentError as exc:
                cached = exc
            except (OSError, UnicodeDecodeError) as exc:
                cached = ExperimentError(path, None, f"cannot read the file: {exc}")
            self._loaded[path] = cached
        return cached

    def is_experiment_file(self, path: Path) -> bool:
        if path.suffix not in (".yaml", ".yml"):
            return False
        return matches(path, self.patterns) or path.resolve() in self.explicit

    def _walk(self, root: Path) -> Iterable[Path]:
        if root.is_file():
            if self.is_experiment_file(root):
                yield root
            return
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = [
                d
                for d in dirnames
                if d not in _ALWAYS_SKIP
                and not any(fnmatch.fnmatch(d, p) for p in self.norecurse)
                and (here / d).resolve() not in self.output_dirs
            ]
            for name in filenames:
                if name.endswith((".yaml", ".yml")) and self.is_experiment_file(here / name):
                    yield here / name

    def scan(self, roots: Iterable[Path]) -> None:
        """Load every experiment file under ``roots`` and record the directories to ignore."""
        found = list(dict.fromkeys(p.resolve() for root in roots for p in self._walk(root)))
        fixtures: set[Path] = set()
        by_slug: dict[str, list[Path]] = {}
        for path in found:
            spec = self.load(path)
            if isinstance(spec, Experiment):
                fixtures.update(d.resolve() for d in spec.fixture_dirs())
                by_slug.setdefault(spec.slug.lower(), []).append(path)
        for paths in by_slug.values():
            if len(paths) > 1:  # their results would land in one directory and mix
                for path in paths:
                    others = ", ".join(str(p) for p in paths if p != path)
                    name = self._loaded[path].name  # type: ignore[union-attr]
                    self._loaded[path] = ExperimentError(
                        path, None,
                        f"experiment name {name!r} is also used by {others}; give each "
                        "experiment file its own 'experiment:' name",
                    )
        self._ignored = fixtures | set(self.output_dirs)
        self.found = [p for p in found if not self.ignored(p)]

    def ignored(self, path: Path) -> bool:
        if self._ignored is None:
            return False
        path = path.resolve()
        if path in self._ignored:
            return True
        return any(parent in self._ignored for parent in path.parents)

    @property
    def scanned(self) -> bool:
        return self._ignored is not None
