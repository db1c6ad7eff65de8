"""Load an experiment file: YAML text -> a checked :class:`~.model.Experiment`.

Three stages, each linear in the size of the file:

1. ``yamltree.compose``: YAML text -> node tree (libyaml when available). Syntax errors, tabs
   used for indentation and other reader problems become :class:`ExperimentError` with a line.
2. ``yamltree.Walker``: node tree -> plain values (``YMap``/``YList`` remember the line of every
   key and item). It interpolates ``${VAR}``, collects secret values, rejects duplicate keys and
   YAML tags other than the plain JSON-like ones (so ``!!python/...`` is never constructed), and
   bounds alias expansion and nesting (billion laughs).
3. ``_Builder`` (here): plain values -> model. Checks keys, types and ranges, resolves ``defaults``
   and ``extends`` and builds the immutable model, with its parts: ``entries.py`` (variants and
   tasks, ``extends``, ``defaults``), ``steps.py`` (steps and agent presets), ``values.py`` (the
   checkers of single values) and ``promptfile.py`` (reading prompt files); ``checker.py`` holds
   what they share (the allowed keys, the error list, the wording of problems).

Every problem found is reported at once (:class:`ExperimentErrors`); nothing here lets an unexpected
exception escape for bad input.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, ScalarNode

from pytest_evalrun.experiment.checker import INVALID, TOP_KEYS, Checker
from pytest_evalrun.experiment.entries import Entries, Top
from pytest_evalrun.experiment.errors import ExperimentError, ExperimentErrors
from pytest_evalrun.experiment.model import BUILTIN_KINDS, MAX_ITEMS_PER_FILE, Experiment, Task
from pytest_evalrun.experiment.names import slugify, validate_name
from pytest_evalrun.experiment.stepcheck import Steps
from pytest_evalrun.experiment.valuecheck import Values
from pytest_evalrun.experiment.yamltree import Walker, YList, YMap, compose, plain
from pytest_evalrun.secrets import inherited_secrets, weak_secret_names

__all__ = ["load_experiment", "load_experiment_text"]


# --------------------------------------------------------------------------- entry points


def load_experiment(
    path: Path,
    *,
    environ: Mapping[str, str],
    agent_kinds: Collection[str] = BUILTIN_KINDS,
    verify_kinds: Collection[str] = BUILTIN_KINDS,
    presets: Collection[str] | None = None,
) -> Experiment:
    """Read and check the experiment file at ``path``.

    Raises :class:`ExperimentError` (one problem) or :class:`ExperimentErrors` (several).
    ``agent_kinds`` and ``verify_kinds`` are the step kinds allowed (``setup`` uses
    ``agent_kinds``); the built-in ``command`` and ``python`` are always allowed. ``presets``:
    the preset names ``agent: {preset: NAME}`` may use (None: any name).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ExperimentError(path, None, f"cannot read the file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ExperimentError(path, line, f"the file is not valid UTF-8 ({exc.reason})") from None
    return load_experiment_text(
        text, path, environ=environ, agent_kinds=agent_kinds, verify_kinds=verify_kinds,
        presets=presets,
    )


def load_experiment_text(
    text: str,
    path: Path | str,
    *,
    environ: Mapping[str, str],
    agent_kinds: Collection[str] = BUILTIN_KINDS,
    verify_kinds: Collection[str] = BUILTIN_KINDS,
    presets: Collection[str] | None = None,
) -> Experiment:
    """Like :func:`load_experiment` for ``text`` as if read from ``path``.

    Relative paths in the file resolve against ``path``'s directory.
    """
    builder = _Builder(Path(path), str(path), environ, agent_kinds, verify_kinds, presets)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a big file makes many objects and no cycles: collections only cost time
    try:
        experiment = builder.build(text)
    except ExperimentError as exc:  # fatal: stop here, with whatever was found before
        builder.errors.append(exc)
        experiment = None
    except RecursionError:
        builder.error(None, "the file is nested too deeply")
        experiment = None
    except Exception as exc:  # pragma: no cover - a bug of ours; still never a traceback
        builder.error(None, f"internal error while loading ({type(exc).__name__}: {exc})")
        experiment = None
    finally:
        if gc_was_enabled:
            gc.enable()
    errors = _dedupe(builder.errors)
    if experiment is None and not errors:  # pragma: no cover - defensive
        errors = [ExperimentError(path, None, "the experiment could not be loaded")]
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ExperimentErrors(errors)
    assert experiment is not None
    return experiment


def _dedupe(errors: list[ExperimentError]) -> list[ExperimentError]:
    seen: set[tuple[int | None, str]] = set()
    out = []
    for err in errors:
        if (err.line, err.message) not in seen:
            seen.add((err.line, err.message))
            out.append(err)
    return out


# --------------------------------------------------------------------------- stage 3: model


class _Builder(Checker):
    """Builds the model of one file from its parts (see the module docstring), which all
    report into :attr:`errors`."""

    def __init__(
        self,
        path: Path,
        path_text: str,
        environ: Mapping[str, str],
        agent_kinds: Collection[str],
        verify_kinds: Collection[str],
        presets: Collection[str] | None = None,
    ) -> None:
        super().__init__(path_text, [])
        self.path = Path(os.path.abspath(path))
        self.base_dir = self.path.parent
        self.environ = environ
        self.secret_values: set[str] = set()
        self.values = Values(path_text, self.errors, self.base_dir)
        self.entries = Entries(
            path_text,
            self.errors,
            self.values,
            Steps(path_text, self.errors, presets),
            agent_kinds=tuple(dict.fromkeys([*BUILTIN_KINDS, *agent_kinds])),
            verify_kinds=tuple(dict.fromkeys([*BUILTIN_KINDS, *verify_kinds])),
            environ=environ,
        )

    def _walker(self, secret_names: Collection[str]) -> Walker:
        """Turns this file's nodes into values; its problems go to :attr:`errors`."""
        return Walker(
            self.path_text,
            self.environ,
            self.errors,
            self.secret_values,
            secret_names=secret_names,
            secret_maps=("env",),
            named_maps={"variants": "variant"},
        )

    # -- the whole file

    def build(self, text: str) -> Experiment | None:
        root_node = compose(text, self.path_text)
        if root_node is None:
            self.error(None, "the file is empty (an experiment needs variants and tasks)")
            return None
        if not isinstance(root_node, MappingNode):
            self.error(
                root_node.start_mark.line + 1,
                "the top level must be a mapping of keys (experiment, variants, tasks, ...)",
            )
            return None
        secret_names = self._secret_names(root_node)
        root = self._walker(secret_names).value(root_node, None, 0)
        if not isinstance(root, YMap):  # e.g. a bad tag on the root mapping
            return None
        self.secret_values.update(
            environ_value for name in secret_names if (environ_value := self.environ.get(name))
        )
        inherited = inherited_secrets(self.environ)
        self.secret_values.update(inherited.values())
        named = {n: v for n in secret_names if (v := self.environ.get(n))}
        weak = weak_secret_names({**inherited, **named})
        self.check_keys(root, TOP_KEYS, " at the top level")
        name = self._experiment_name(root)
        top = self._top(root)
        variants = self.entries.variants(root, top)
        tasks = self.entries.tasks(root, top)
        description = self.values.text(root, "description", " at the top level")
        self._check_items(root, tasks)
        if self.errors or name is None or description is INVALID:
            return None
        return Experiment(
            name=name,
            slug=slugify(name),
            path=self.path,
            variants=tuple(variants),
            tasks=tuple(tasks),
            description=description,
            min_pass_rate=top.numbers.get("min_pass_rate"),
            secret_values=frozenset(self.secret_values),
            retries=top.retries,
            weak_secrets=tuple(weak),
        )

    def _secret_names(self, root: MappingNode) -> frozenset[str]:
        for knode, vnode in root.value:
            if isinstance(knode, ScalarNode) and knode.value == "secrets":
                value = self._walker(()).value(vnode, "secrets", 1)
                if value is None:
                    return frozenset()
                if isinstance(value, YList) and all(isinstance(v, str) for v in value):
                    return frozenset(value)
                self.error(
                    knode.start_mark.line + 1,
                    "'secrets' must be a list of names (environment variables or env "
                    "keys whose values are secret)",
                )
        return frozenset()

    def _experiment_name(self, root: YMap) -> str | None:
        name = self.values.text(root, "experiment", " at the top level")
        if name is None:
            name = self.path.name
            for suffix in (".eval.yaml", ".eval.yml", ".yaml", ".yml"):
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
        if name is INVALID:
            return None
        problem = validate_name(name)
        if problem:
            self.error(root.lines.get("experiment"), f"experiment name {name!r} {problem}")
            return None
        return str(name)

    def _top(self, root: YMap) -> Top:
        top = Top()
        ctx = " at the top level"
        fields: dict[str, Any] = {}
        self.values.numbers(root, ctx, fields)
        if isinstance(fields.get("trials"), int):
            top.trials = fields["trials"]
        if isinstance(fields.get("retries"), int):
            top.retries = fields["retries"]
        top.numbers = {
            k: v for k, v in fields.items() if k not in ("trials", "retries") and v is not INVALID
        }
        env = self.values.env(root, ctx)
        if isinstance(env, dict):
            top.env = env
            top.raw_env = plain(root.get("env") or {})
        self.values.isolation(root, ctx, top.isolation)
        if "budget" in root:
            budget = self.values.budget(root, ctx)
            if isinstance(budget, dict):
                top.budget = budget
        return top

    def _check_items(self, root: YMap, tasks: list[Task]) -> None:
        n_variants = len(root["variants"]) if isinstance(root.get("variants"), YMap) else 0
        n_trials = sum(t.trials for t in tasks)
        total = n_variants * n_trials
        if total > MAX_ITEMS_PER_FILE:
            self.error(
                root.lines.get("tasks"),
                f"this file defines {total:,} trial items ({n_variants} variants x "
                f"{n_trials:,} task trials); at most {MAX_ITEMS_PER_FILE:,} are allowed "
                "per file: split it",
            )
