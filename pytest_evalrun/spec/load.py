"""Load an experiment file: YAML text -> checked :class:`~pytest_evalrun.spec.model.Experiment`.

Three stages, each linear in the size of the file:

1. ``yamltree.compose``: YAML text -> node tree (libyaml when available). Syntax errors, tabs
   used for indentation and other reader problems become :class:`SpecError` with a line.
2. ``yamltree.Walker``: node tree -> plain values (``YMap``/``YList`` remember the line of every
   key and item). It interpolates ``${VAR}``, collects secret values, rejects duplicate keys and
   YAML tags other than the plain JSON-like ones (so ``!!python/...`` is never constructed), and
   bounds alias expansion and nesting (billion laughs).
3. ``_Builder`` (here): plain values -> model. Checks keys, types and ranges, resolves ``defaults``
   and ``extends`` and builds the immutable model.

Every problem found is reported at once (:class:`SpecErrors`); nothing here lets an unexpected
exception escape for bad input.
"""

from __future__ import annotations

import difflib
import gc
import os
import re
import stat
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, ScalarNode

from pytest_evalrun.secrets import inherited_secrets, weak_secret_names
from pytest_evalrun.spec.errors import SpecError, SpecErrors
from pytest_evalrun.spec.model import (
    BUILTIN_KINDS,
    DEFAULT_PASS_THRESHOLD,
    DEFAULT_SETUP_TIMEOUT,
    DEFAULT_TIMEOUT,
    DEFAULT_TRIALS,
    DEFAULT_VERIFY_TIMEOUT,
    MAX_ITEMS_PER_FILE,
    MAX_TRIALS,
    SANDBOX_MODES,
    Experiment,
    SandboxSpec,
    Step,
    Task,
    Variant,
)
from pytest_evalrun.spec.names import slugify, validate_name
from pytest_evalrun.spec.yamltree import Walker, YList, YMap, compose, plain

__all__ = ["load_experiment", "load_experiment_text"]

TOP_KEYS = (
    "experiment",
    "description",
    "trials",
    "timeout",
    "setup_timeout",
    "verify_timeout",
    "min_pass_rate",
    "pass_threshold",
    "defaults",
    "variants",
    "tasks",
    "secrets",
    "env",
    "retries",
    "env_passthrough",
    "sandbox",
    "network",
)
#: Keys about a variant's isolation: at the top level, in ``defaults`` or in a variant.
ISOLATION_KEYS = ("env_passthrough", "sandbox", "network")
VARIANT_KEYS = (
    "agent",
    "model",
    "setup",
    "env",
    "description",
    "extends",
    "retries",
    "pricing",
    *ISOLATION_KEYS,
)
DEFAULTS_KEYS = (
    "agent",
    "model",
    "setup",
    "env",
    "description",
    "retries",
    "pricing",
    *ISOLATION_KEYS,
)
SANDBOX_KEYS = ("mode", "read", "write")
#: ``agent: {preset: NAME, executable: PROGRAM, args: [...]}``; ``pricing:`` USD per 1M tokens.
PRESET_KEYS = ("preset", "executable", "args")
PRICING_KEYS = ("input", "cached_input", "output", "cache_write")
TASK_KEYS = (
    "name",
    "description",
    "prompt",
    "prompt_file",
    "fixture",
    "verify",
    "tags",
    "timeout",
    "setup_timeout",
    "verify_timeout",
    "trials",
    "pass_threshold",
    "min_pass_rate",
    "env",
    "extends",
    "retries",
)
_TIMEOUT_KEYS = ("timeout", "setup_timeout", "verify_timeout")
_RATE_KEYS = ("pass_threshold", "min_pass_rate")
MAX_TIMEOUT = 7 * 24 * 3600.0
MAX_RETRIES = 10
#: pytest markers with a meaning of their own, and ``-m`` keywords: not allowed as tags.
RESERVED_TAGS = frozenset(
    ["and", "or", "not", "skip", "skipif", "xfail", "parametrize", "usefixtures", "filterwarnings"]
)

_PYTHON_TARGET = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_TAG_NAME = re.compile(r"[^\W\d]\w*")
_INVALID: Any = object()  # a field that was present but wrong (already reported)


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

    Raises :class:`SpecError` (one problem) or :class:`SpecErrors` (several). ``agent_kinds``
    and ``verify_kinds`` are the step kinds allowed (``setup`` uses ``agent_kinds``); the
    built-in ``command`` and ``python`` are always allowed. ``presets``: the preset names
    ``agent: {preset: NAME}`` may use (None: any name).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SpecError(path, None, f"cannot read the file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpecError(path, line, f"the file is not valid UTF-8 ({exc.reason})") from None
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
    except SpecError as exc:  # fatal: stop here, with whatever was found before
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
        errors = [SpecError(path, None, "the experiment could not be loaded")]
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise SpecErrors(errors)
    assert experiment is not None
    return experiment


def _dedupe(errors: list[SpecError]) -> list[SpecError]:
    seen: set[tuple[int | None, str]] = set()
    out = []
    for err in errors:
        if (err.line, err.message) not in seen:
            seen.add((err.line, err.message))
            out.append(err)
    return out


# --------------------------------------------------------------------------- stage 3: model


@dataclass
class _Entry:
    """A variant or task as written, its own fields checked, before ``extends``."""

    name: str
    line: int
    fields: dict[str, Any]
    raw: dict[str, Any]
    extends: str | None = None
    extends_line: int = 0
    broken: bool = False  # e.g. an invalid name: build nothing from it
    #: Keys suggested for misspelt ones: not reported again as missing.
    misspelt: set[str] = field(default_factory=set)


@dataclass
class _Top:
    """The experiment-wide values tasks and variants inherit."""

    trials: int = DEFAULT_TRIALS
    retries: int = 0
    numbers: dict[str, float] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    raw_env: dict[str, Any] = field(default_factory=dict)
    #: ``sandbox:``, ``network:`` and ``env_passthrough:`` at the top level.
    isolation: dict[str, Any] = field(default_factory=dict)


def _ctx_name(kind: str, name: object, index: int | None = None) -> str:
    if isinstance(name, str) and name:
        return f" in {kind} {name!r}"
    return f" in {kind} #{index + 1}" if index is not None else f" in a {kind}"


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _describe(value: Any, src: str | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{src or value} (a boolean)"
    if isinstance(value, (int, float)):
        return f"{src or value} (a number)"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"{shown!r} (a string)"
    return "a list" if isinstance(value, list) else "a mapping"


class _Builder:
    def __init__(
        self,
        path: Path,
        path_text: str,
        environ: Mapping[str, str],
        agent_kinds: Collection[str],
        verify_kinds: Collection[str],
        presets: Collection[str] | None = None,
    ) -> None:
        self.presets = tuple(presets) if presets is not None else None
        self.path_text = path_text
        self.path = Path(os.path.abspath(path))
        self.base_dir = self.path.parent
        self.environ = environ
        self.agent_kinds = tuple(dict.fromkeys([*BUILTIN_KINDS, *agent_kinds]))
        self.verify_kinds = tuple(dict.fromkeys([*BUILTIN_KINDS, *verify_kinds]))
        self.errors: list[SpecError] = []
        self.secret_values: set[str] = set()
        self._dirs: dict[Path, bool] = {}
        self._prompts: dict[Path, str | None] = {}

    # -- errors

    def error(self, line: int | None, message: str) -> None:
        self.errors.append(SpecError(self.path_text, line, message))

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
        self._check_keys(root, TOP_KEYS, " at the top level")
        name = self._experiment_name(root)
        top = self._top(root)
        variants = self._variants(root, top)
        tasks = self._tasks(root, top)
        description = self._text(root, "description", " at the top level")
        self._check_items(root, tasks)
        if self.errors or name is None or description is _INVALID:
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
        name = self._text(root, "experiment", " at the top level")
        if name is None:
            name = self.path.name
            for suffix in (".eval.yaml", ".eval.yml", ".yaml", ".yml"):
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
        if name is _INVALID:
            return None
        problem = validate_name(name)
        if problem:
            self.error(root.lines.get("experiment"), f"experiment name {name!r} {problem}")
            return None
        return str(name)

    def _top(self, root: YMap) -> _Top:
        top = _Top()
        ctx = " at the top level"
        fields: dict[str, Any] = {}
        self._numbers(root, ctx, fields)
        if isinstance(fields.get("trials"), int):
            top.trials = fields["trials"]
        if isinstance(fields.get("retries"), int):
            top.retries = fields["retries"]
        top.numbers = {
            k: v for k, v in fields.items() if k not in ("trials", "retries") and v is not _INVALID
        }
        env = self._env(root, ctx)
        if isinstance(env, dict):
            top.env = env
            top.raw_env = plain(root.get("env") or {})
        self._isolation(root, ctx, top.isolation)
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

    # -- variants

    def _variants(self, root: YMap, top: _Top) -> list[Variant]:
        value = root.get("variants")
        if not isinstance(value, YMap) or not value:
            line = root.lines.get("variants")
            if value is None or isinstance(value, YMap):
                self.error(
                    line,
                    "the experiment has no variants: add a 'variants:' mapping of "
                    "variant names to their settings (e.g. 'baseline: {}')",
                )
            else:
                self.error(
                    line,
                    f"'variants' must be a mapping of variant names to settings, "
                    f"got {_describe(value, root.src.get('variants'))}",
                )
            return []
        base: dict[str, Any] = {"env": dict(top.env)}
        base_raw: dict[str, Any] = {"env": dict(top.raw_env)} if top.raw_env else {}
        defaults = root.get("defaults")
        misspelt: set[str] = set()
        if isinstance(defaults, YMap):
            misspelt = self._check_keys(defaults, DEFAULTS_KEYS, " in defaults")
            d = self._variant_entry("defaults", defaults, " in defaults")
            base, base_raw = _merge(base, d.fields), _merge(base_raw, d.raw)
        elif defaults is not None:
            self.error(
                root.lines.get("defaults"),
                "'defaults' must be a mapping of variant "
                f"settings, got {_describe(defaults, root.src.get('defaults'))}",
            )
        entries: dict[str, _Entry] = {}
        for name, spec in value.items():
            line = value.lines[name]
            ctx = f" in variant {name!r}"
            if spec is None:
                spec = YMap(line)
            if not isinstance(spec, YMap):
                self.error(
                    line,
                    f"variant {name!r} must be a mapping of settings (or {{}}), got "
                    f"{_describe(spec, value.src.get(name))}",
                )
                continue
            entry = self._variant_entry(name, spec, ctx)
            entry.misspelt = misspelt | self._check_keys(spec, VARIANT_KEYS, ctx)
            entry.line = line
            problem = validate_name(name)
            if problem:
                self.error(line, f"variant name {name!r} {problem}")
                entry.broken = True
            entries[name] = entry
        variants = []
        for entry, fields, raw in self._resolve(entries, "variant"):
            fields, raw = _merge(base, fields), _merge(base_raw, raw)
            variant = self._make_variant(entry, fields, raw, top)
            if variant is not None:
                variants.append(variant)
        self._check_slugs([(v.name, v.slug, v.line) for v in variants], "variant")
        return variants

    def _variant_entry(self, name: str, m: YMap, ctx: str) -> _Entry:
        fields: dict[str, Any] = {}
        for key in ("agent", "setup"):
            if key in m:
                if m[key] is None and key == "setup":
                    fields[key] = None
                else:
                    fields[key] = self._step(m, key, self.agent_kinds, ctx) or _INVALID
        for key in ("model", "description"):
            if key in m:
                fields[key] = self._text(m, key, ctx)
        if "env" in m:
            fields["env"] = self._env(m, ctx)
        if "retries" in m:
            numbers: dict[str, Any] = {}
            self._numbers(m, ctx, numbers)
            fields["retries"] = numbers["retries"]
        if "pricing" in m:
            fields["pricing"] = self._pricing(m, ctx)
        self._isolation(m, ctx, fields)
        entry = _Entry(name, m.line, fields, _raw(m))
        self._extends(m, ctx, entry)
        return entry

    def _make_variant(
        self, e: _Entry, f: dict[str, Any], raw: dict[str, Any], top: _Top
    ) -> Variant | None:
        if "agent" not in f:
            if "agent" in e.misspelt:  # reported as misspelt already
                return None
            self.error(
                e.line,
                f"variant {e.name!r} has no agent: give it 'agent:' (or put one "
                "in 'defaults:' or in a variant it extends)",
            )
            return None
        if e.broken or _INVALID in f.values() or _INVALID in top.isolation.values():
            return None
        iso = top.isolation
        passthrough = (*iso.get("env_passthrough", ()), *f.get("env_passthrough", ()))
        return Variant(
            name=e.name,
            slug=slugify(e.name),
            agent=f["agent"],
            line=e.line,
            model=f.get("model"),
            setup=f.get("setup"),
            env=f.get("env", {}),
            description=f.get("description"),
            raw={"name": e.name, **raw},
            retries=f.get("retries"),
            pricing=f.get("pricing"),
            sandbox=f.get("sandbox", iso.get("sandbox", SandboxSpec())),
            network=f.get("network", iso.get("network", True)),
            env_passthrough=tuple(dict.fromkeys(passthrough)),
        )

    # -- tasks

    def _tasks(self, root: YMap, top: _Top) -> list[Task]:
        value = root.get("tasks")
        if not isinstance(value, YList) or not value:
            if value is None or isinstance(value, YList):
                self.error(
                    root.lines.get("tasks"),
                    "the experiment has no tasks: add a "
                    "'tasks:' list (each with a name, a prompt and verify)",
                )
            else:
                self.error(
                    root.lines.get("tasks"),
                    "'tasks' must be a list of tasks, got "
                    f"{_describe(value, root.src.get('tasks'))}",
                )
            return []
        entries: dict[str, _Entry] = {}
        for index, (spec, line) in enumerate(zip(value, value.lines, strict=False)):
            if not isinstance(spec, YMap):
                self.error(
                    line,
                    f"task #{index + 1} must be a mapping (name, prompt, verify, "
                    f"...), got {_describe(spec, value.src.get(index))}",
                )
                continue
            entry = self._task_entry(spec, index)
            if entry is None:
                continue
            if entry.name in entries:
                first = entries[entry.name].line
                self.error(
                    spec.lines["name"],
                    f"duplicate task name {entry.name!r} (first on line {first})",
                )
                continue
            entries[entry.name] = entry
        tasks = []
        for entry, fields, raw in self._resolve(entries, "task"):
            task = self._make_task(entry, fields, raw, top)
            if task is not None:
                tasks.append(task)
        self._check_slugs([(t.name, t.slug, t.line) for t in tasks], "task")
        return tasks

    def _task_entry(self, m: YMap, index: int) -> _Entry | None:
        name = m.get("name")
        ctx = _ctx_name("task", name, index)
        misspelt = self._check_keys(m, TASK_KEYS, ctx)
        if "name" not in m:
            self.error(m.line, f"task #{index + 1} has no 'name'")
            return None
        name = self._text(m, "name", ctx, allow_null=False)
        if name is _INVALID:
            return None
        problem = validate_name(name)
        if problem:
            self.error(m.lines["name"], f"task name {name!r} {problem}")
            return None
        assert isinstance(name, str)
        f: dict[str, Any] = {}
        for key in ("description", "prompt"):
            if key in m:
                f[key] = self._text(m, key, ctx, allow_null=key == "description")
        if "prompt" in m and "prompt_file" in m:
            self.error(
                m.lines["prompt_file"],
                f"task {name!r} has both 'prompt' and 'prompt_file': give only one",
            )
            f["prompt"] = _INVALID
        elif "prompt_file" in m:
            f["prompt_file"] = self._prompt_file(m, ctx)
        if "fixture" in m:
            f["fixture"] = None if m["fixture"] is None else self._fixture(m, ctx)
        if "verify" in m:
            f["verify"] = self._step(m, "verify", self.verify_kinds, ctx) or _INVALID
        if "tags" in m:
            f["tags"] = self._tags(m, ctx)
        if "env" in m:
            f["env"] = self._env(m, ctx)
        self._numbers(m, ctx, f)
        entry = _Entry(name, m.line, f, _raw(m, drop=("name",)), misspelt=misspelt)
        self._extends(m, ctx, entry)
        return entry

    def _make_task(
        self, e: _Entry, f: dict[str, Any], raw: dict[str, Any], top: _Top
    ) -> Task | None:
        # A misspelt required key was reported as such: do not report it missing as well.
        if e.misspelt & {"prompt", "prompt_file", "verify"}:
            return None
        ok = True
        if "prompt" not in f and "prompt_file" not in f:
            self.error(
                e.line, f"task {e.name!r} has no prompt: give it 'prompt:' or 'prompt_file:'"
            )
            ok = False
        if "verify" not in f:
            self.error(
                e.line,
                f"task {e.name!r} has no 'verify' (the command that decides "
                "whether the agent succeeded)",
            )
            ok = False
        if not ok or _INVALID in f.values():
            return None
        prompt_file, prompt = f.get("prompt_file") or (None, f["prompt"])
        nums = top.numbers

        def number(key: str, default: float) -> float:
            return float(f.get(key, nums.get(key, default)))

        return Task(
            name=e.name,
            slug=slugify(e.name),
            prompt=prompt,
            verify=f["verify"],
            line=e.line,
            prompt_file=prompt_file,
            fixture=f.get("fixture"),
            tags=f.get("tags", ()),
            timeout=number("timeout", DEFAULT_TIMEOUT),
            setup_timeout=number("setup_timeout", DEFAULT_SETUP_TIMEOUT),
            verify_timeout=number("verify_timeout", DEFAULT_VERIFY_TIMEOUT),
            trials=f.get("trials", top.trials),
            pass_threshold=number("pass_threshold", DEFAULT_PASS_THRESHOLD),
            min_pass_rate=f.get("min_pass_rate"),  # None: the experiment's gate applies
            env=f.get("env", {}),
            description=f.get("description"),
            raw={"name": e.name, **raw},
            retries=f.get("retries"),  # None: the variant's, else the experiment's
        )

    # -- extends

    def _extends(self, m: YMap, ctx: str, entry: _Entry) -> None:
        if "extends" not in m:
            return
        target = self._text(m, "extends", ctx, allow_null=False)
        if isinstance(target, str):
            entry.extends, entry.extends_line = target, m.lines["extends"]
        else:
            entry.broken = True

    def _resolve(
        self, entries: dict[str, _Entry], kind: str
    ) -> Iterable[tuple[_Entry, dict[str, Any], dict[str, Any]]]:
        """Each entry with its fields and raw merged along its ``extends`` chain, in order;
        entries with a broken chain (unknown target, cycle) are reported and left out."""
        done: dict[str, tuple[dict[str, Any], dict[str, Any]] | None] = {}
        for name in entries:
            chain: list[str] = []
            base: tuple[dict[str, Any], dict[str, Any]] | None = ({}, {})
            cur = name
            while cur not in done:
                if cur in chain:
                    cycle = [*chain[chain.index(cur) :], cur]
                    self.error(
                        entries[cur].extends_line,
                        f"{kind}s extend each other in a cycle: {' -> '.join(cycle)}",
                    )
                    base = None
                    break
                chain.append(cur)
                entry = entries[cur]
                if entry.extends is None:
                    break
                if entry.extends not in entries:
                    self.error(
                        entry.extends_line,
                        f"{kind} {cur!r} extends unknown {kind} {entry.extends!r}"
                        f"{_did_you_mean(entry.extends, entries)}",
                    )
                    base = None
                    break
                cur = entry.extends
            else:
                base = done[cur]
            for link in reversed(chain):
                entry = entries[link]
                if base is not None and not entry.broken:
                    base = (_merge(base[0], entry.fields), _merge(base[1], entry.raw))
                else:
                    base = None
                done[link] = base
            resolved = done[name]
            if resolved is not None:
                yield entries[name], resolved[0], resolved[1]

    # -- checks shared by several levels

    def _check_keys(self, m: YMap, allowed: tuple[str, ...], ctx: str) -> set[str]:
        """Report unknown keys; return the allowed keys suggested for misspelt ones."""
        suggested = set()
        for key in m:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                if close:
                    suggested.add(close[0])
                    hint = f"; did you mean {close[0]!r}?"
                else:
                    hint = _misplaced(key, ctx)
                self.error(m.lines[key], f"unknown key {key!r}{ctx}{hint}")
        return suggested

    def _check_slugs(self, named: list[tuple[str, str, int]], kind: str) -> None:
        seen: dict[str, tuple[str, int]] = {}
        for name, slug, line in named:
            folded = slug.casefold()
            if folded in seen:
                other, other_line = seen[folded]
                self.error(
                    line,
                    f"{kind} names {other!r} (line {other_line}) and {name!r} "
                    f"both become the file name {slug!r}; rename one",
                )
            else:
                seen[folded] = (name, line)

    def _text(self, m: YMap, key: str, ctx: str, allow_null: bool = True) -> Any:
        """A free-text value: a string, or a number/boolean as written; else ``_INVALID``."""
        value = m.get(key)
        if isinstance(value, str):
            return value
        if value is None:
            if allow_null:
                return None
        elif key in m.src:
            return m.src[key]
        self.error(
            m.lines.get(key),
            f"{key!r}{ctx} must be a string, got {_describe(value, m.src.get(key))}",
        )
        return _INVALID

    def _numbers(self, m: YMap, ctx: str, out: dict[str, Any]) -> None:
        """``trials``, timeouts and rates present in ``m``, checked, into ``out``."""
        for key in ("trials", "retries", *_TIMEOUT_KEYS, *_RATE_KEYS):
            if key not in m:
                continue
            value = m[key]
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if key == "trials":
                ok = is_number and isinstance(value, int) and 1 <= value <= MAX_TRIALS
                want = f"an integer from 1 to {MAX_TRIALS:,}"
            elif key == "retries":
                ok = is_number and isinstance(value, int) and 0 <= value <= MAX_RETRIES
                want = f"an integer from 0 to {MAX_RETRIES}"
            elif key in _TIMEOUT_KEYS:
                ok = is_number and 0 < value <= MAX_TIMEOUT
                want = f"a number of seconds > 0 and at most {MAX_TIMEOUT:,.0f} (7 days)"
            else:
                ok = is_number and 0 <= value <= 1
                want = "a number from 0 to 1"
            if ok:
                out[key] = value if key in ("trials", "retries") else float(value)
            else:
                out[key] = _INVALID
                self.error(
                    m.lines[key],
                    f"{key!r}{ctx} must be {want}, got {_describe(value, m.src.get(key))}",
                )

    def _env(self, m: YMap, ctx: str) -> Any:
        value = m.get("env")
        if value is None:
            return {}
        if not isinstance(value, YMap):
            self.error(
                m.lines["env"],
                f"'env'{ctx} must be a mapping of variable names to "
                f"strings, got {_describe(value, m.src.get('env'))}",
            )
            return _INVALID
        env: dict[str, str] = {}
        ok = True
        for key, val in value.items():
            line = value.lines[key]
            if not key or "=" in key or "\0" in key:
                self.error(line, f"invalid environment variable name {key!r}{ctx}")
                ok = False
            text = val if isinstance(val, str) or val is None else value.src.get(key)
            if text is None:
                self.error(
                    line,
                    f"env {key!r}{ctx} must be a string (quote it; '' for "
                    f"empty), got {_describe(val, None)}",
                )
                ok = False
            elif "\0" in text:
                self.error(line, f"env {key!r}{ctx} contains a NUL character")
                ok = False
            else:
                env[key] = text
        return env if ok else _INVALID

    def _isolation(self, m: YMap, ctx: str, out: dict[str, Any]) -> None:
        """``env_passthrough``, ``sandbox`` and ``network`` present in ``m``, checked."""
        if "env_passthrough" in m:
            out["env_passthrough"] = self._names(m, "env_passthrough", ctx)
        if "network" in m:
            value = m["network"]
            if isinstance(value, bool):
                out["network"] = value
            else:
                self.error(
                    m.lines["network"],
                    f"'network'{ctx} must be true or false, got "
                    f"{_describe(value, m.src.get('network'))}",
                )
                out["network"] = _INVALID
        if "sandbox" in m:
            out["sandbox"] = self._sandbox(m, ctx)

    def _names(self, m: YMap, key: str, ctx: str) -> Any:
        value = m[key]
        if isinstance(value, str):
            single = YList(m.lines[key])
            single.append(value)
            single.lines.append(m.lines[key])
            value = single
        if not isinstance(value, YList):
            self.error(
                m.lines[key],
                f"{key!r}{ctx} must be a list of variable names or globs (e.g. "
                f"[ANTHROPIC_API_KEY, 'AWS_*']), got {_describe(value, m.src.get(key))}",
            )
            return _INVALID
        names: list[str] = []
        for item, line in zip(value, value.lines, strict=False):
            if not isinstance(item, str) or not item or "=" in item or "\0" in item:
                self.error(line, f"{key!r}{ctx}: {item!r} is not a variable name or glob")
                return _INVALID
            names.append(item)
        return tuple(names)

    def _sandbox(self, m: YMap, ctx: str) -> Any:
        value, line = m["sandbox"], m.lines["sandbox"]
        modes = "|".join(SANDBOX_MODES)
        if isinstance(value, str):
            if value in SANDBOX_MODES:
                return SandboxSpec(mode=value)
            hint = _did_you_mean(value, SANDBOX_MODES)
            self.error(line, f"'sandbox'{ctx} must be {modes}, got {value!r}{hint}")
            return _INVALID
        if not isinstance(value, YMap):
            self.error(
                line,
                f"'sandbox'{ctx} must be {modes} or a mapping {{mode:, read: [...], write: "
                f"[...]}}, got {_describe(value, m.src.get('sandbox'))}",
            )
            return _INVALID
        where = f" in 'sandbox'{ctx}"
        self._check_keys(value, SANDBOX_KEYS, where)
        ok = all(k in SANDBOX_KEYS for k in value)
        mode = value.get("mode", "auto")
        if mode not in SANDBOX_MODES:
            self.error(
                value.lines.get("mode", line),
                f"'mode'{where} must be {modes}, got {_describe(mode, value.src.get('mode'))}",
            )
            ok = False
        paths: dict[str, tuple[Path, ...]] = {}
        for key in ("read", "write"):
            items = value.get(key)
            if items is None:
                paths[key] = ()
                continue
            if not isinstance(items, YList):
                self.error(
                    value.lines[key],
                    f"{key!r}{where} must be a list of paths, got "
                    f"{_describe(items, value.src.get(key))}",
                )
                ok = False
                continue
            found: list[Path] = []
            for item, item_line in zip(items, items.lines, strict=False):
                if not isinstance(item, str) or not item or "\0" in item:
                    self.error(item_line, f"{key!r}{where}: {item!r} is not a path")
                    ok = False
                    continue
                found.append(Path(os.path.abspath(self.base_dir / os.path.expanduser(item))))
            paths[key] = tuple(found)
        if not ok:
            return _INVALID
        return SandboxSpec(mode=str(mode), read=paths["read"], write=paths["write"])

    def _tags(self, m: YMap, ctx: str) -> Any:
        value = m["tags"]
        if value is None:
            return ()
        if not isinstance(value, YList):
            self.error(
                m.lines["tags"],
                f"'tags'{ctx} must be a list of names (e.g. [build]), "
                f"got {_describe(value, m.src.get('tags'))}",
            )
            return _INVALID
        ok = True
        for tag, line in zip(value, value.lines, strict=False):
            if not isinstance(tag, str) or not _TAG_NAME.fullmatch(tag):
                self.error(
                    line,
                    f"tag {tag!r}{ctx} is not a valid marker name "
                    "(letters, digits and _, not starting with a digit)",
                )
                ok = False
            elif tag in RESERVED_TAGS:
                self.error(line, f"tag {tag!r}{ctx} is reserved by pytest; choose another name")
                ok = False
        return tuple(dict.fromkeys(value)) if ok else _INVALID

    def _path(self, m: YMap, key: str, ctx: str, check: Callable[[Path], bool]) -> Path | None:
        text = m.get(key)
        if not isinstance(text, str) or not text:
            self.error(
                m.lines[key], f"{key!r}{ctx} must be a path, got {_describe(text, m.src.get(key))}"
            )
            return None
        try:
            path = (self.base_dir / os.path.expanduser(text)).resolve()
            return path if check(path) else None
        except (OSError, ValueError, RuntimeError):
            return None

    def _fixture(self, m: YMap, ctx: str) -> Any:
        def is_dir(path: Path) -> bool:
            if path not in self._dirs:
                self._dirs[path] = path.is_dir()
            return self._dirs[path]

        path = self._path(m, "fixture", ctx, is_dir)
        if path is None:
            if isinstance(m["fixture"], str) and m["fixture"]:
                self.error(
                    m.lines["fixture"],
                    f"fixture directory {m['fixture']!r}{ctx} does "
                    f"not exist (or is not a directory); relative paths are resolved "
                    f"against {str(self.base_dir)!r}",
                )
            return _INVALID
        return path

    def _prompt_file(self, m: YMap, ctx: str) -> Any:
        problems: dict[Path, str] = {}

        def read(path: Path) -> bool:
            if path not in self._prompts:
                try:
                    self._prompts[path] = read_prompt_file(path)
                except PromptFileError as exc:
                    self._prompts[path] = None
                    problems[path] = exc.why
            return self._prompts[path] is not None

        path = self._path(m, "prompt_file", ctx, read)
        if path is None:
            if isinstance(m["prompt_file"], str) and m["prompt_file"]:
                why = next(iter(problems.values()), "does not exist or cannot be read")
                self.error(
                    m.lines["prompt_file"],
                    f"prompt file {m['prompt_file']!r}{ctx} {why}; relative "
                    f"paths are resolved against {str(self.base_dir)!r}",
                )
            return _INVALID
        return (path, self._prompts[path])

    def _step(self, m: YMap, key: str, kinds: tuple[str, ...], ctx: str) -> Step | None:
        """``agent``/``setup``/``verify``: ``{kind: value}``, or a bare string/list (command)."""
        value, line = m[key], m.lines[key]
        where = f"{key!r}{ctx}"
        if isinstance(value, (str, YList)):
            return self._command(value, line, where)
        if isinstance(value, YMap) and "preset" in value and "preset" in kinds:
            return self._preset(value, where)
        known = ", ".join(kinds)
        if not isinstance(value, YMap) or len(value) != 1:
            got = (
                f"keys {', '.join(map(repr, value))}"
                if isinstance(value, YMap)
                else _describe(value, m.src.get(key))
            )
            self.error(
                line,
                f"{where} must be a command (a string or a list) or a mapping "
                f"with one key, the step kind ({known}); got {got}",
            )
            return None
        kind, inner = next(iter(value.items()))
        line = value.lines[kind]
        where = f"{kind!r} step{ctx}"
        if kind not in kinds:
            self.error(
                line,
                f"unknown {key} kind {kind!r}{ctx}; known kinds: {known}"
                f"{_did_you_mean(kind, kinds)}",
            )
            return None
        if kind == "command":
            if isinstance(inner, (str, YList)):
                return self._command(inner, line, where)
            self.error(
                line,
                f"{where} must be a string (shell) or a list (argv), got "
                f"{_describe(inner, value.src.get(kind))}",
            )
            return None
        if kind == "python":
            if isinstance(inner, str) and _PYTHON_TARGET.fullmatch(inner):
                return Step("python", inner, line)
            self.error(
                line,
                f"{where} must be 'package.module:function', got "
                f"{_describe(inner, value.src.get(kind))}",
            )
            return None
        return Step(kind, plain(inner), line)

    def _preset(self, m: YMap, where: str) -> Step | None:
        """``{preset: NAME, executable: PROGRAM, args: [...]}`` -> Step("preset", mapping)."""
        before = len(self.errors)
        self._check_keys(m, PRESET_KEYS, f" in {where}")
        ok = len(self.errors) == before
        name, line = m["preset"], m.lines["preset"]
        if not isinstance(name, str) or not name:
            self.error(line, f"'preset' in {where} must be a preset name, got "
                       f"{_describe(name, m.src.get('preset'))}")
            return None
        if self.presets is not None and name not in self.presets:
            self.error(line, f"unknown preset {name!r} in {where}; known presets: "
                       f"{', '.join(self.presets)}{_did_you_mean(name, self.presets)}")
            return None
        executable = m.get("executable")
        if "executable" in m and (not isinstance(executable, str) or not executable.strip()):
            self.error(m.lines["executable"], f"'executable' in {where} must be a program "
                       f"name or path, got {_describe(executable, m.src.get('executable'))}")
            ok = False
        args = m.get("args", [])
        if args is None or isinstance(args, str):
            args = [] if args is None else args
        if not isinstance(args, YList) and args != []:
            self.error(m.lines["args"], f"'args' in {where} must be a list of strings, got "
                       f"{_describe(args, m.src.get('args'))}")
            return None
        if isinstance(args, YList):
            for item, item_line in zip(args, args.lines, strict=False):
                if not isinstance(item, str):
                    self.error(item_line, f"'args' in {where}: items must be strings, got "
                               f"{_describe(item, None)}")
                    ok = False
        if not ok:
            return None
        return Step("preset", {"preset": name, "executable": executable,
                               "args": [str(a) for a in args]}, line)

    def _pricing(self, m: YMap, ctx: str) -> Any:
        value, line = m["pricing"], m.lines["pricing"]
        if not isinstance(value, YMap):
            self.error(line, f"'pricing'{ctx} must be a mapping of USD per million tokens "
                       f"({', '.join(PRICING_KEYS)}), got {_describe(value, m.src.get('pricing'))}")
            return _INVALID
        before = len(self.errors)
        self._check_keys(value, PRICING_KEYS, f" in 'pricing'{ctx}")
        if len(self.errors) != before:
            return _INVALID
        out: dict[str, float] = {}
        for key, number in value.items():
            if isinstance(number, bool) or not isinstance(number, (int, float)) or number < 0:
                self.error(value.lines[key], f"'pricing' {key!r}{ctx} must be a number >= 0 "
                           f"(USD per million tokens), got {_describe(number, value.src.get(key))}")
                return _INVALID
            out[key] = float(number)
        return out

    def _command(self, value: str | YList, line: int, where: str) -> Step | None:
        if isinstance(value, str):
            if not value.strip():
                self.error(line, f"{where}: the command is empty")
                return None
            return Step("command", value, line)
        argv: list[str] = []
        for index, (item, item_line) in enumerate(zip(value, value.lines, strict=False)):
            text = item if isinstance(item, str) or item is None else value.src.get(index)
            if text is None:
                self.error(
                    item_line, f"{where}: argv items must be strings, got {_describe(item, None)}"
                )
                return None
            argv.append(text)
        if not argv or not argv[0]:
            self.error(line, f"{where}: the command is empty")
            return None
        return Step("command", tuple(argv), line)


def _raw(m: YMap, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: plain(v) for k, v in m.items() if k != "extends" and k not in drop}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: ``env`` merged key by key, anything else replaced;
    ``prompt`` and ``prompt_file`` replace each other."""
    out = dict(base)
    if "prompt" in over or "prompt_file" in over:
        out.pop("prompt", None)
        out.pop("prompt_file", None)
    for key, value in over.items():
        old = out.get(key)
        if key == "env" and isinstance(old, dict) and isinstance(value, dict):
            out[key] = {**old, **value}
        else:
            out[key] = value
    return out


def _misplaced(key: str, ctx: str) -> str:
    """A hint for a known key at the wrong level."""
    if ctx.startswith(" in task") and key in ("agent", "model", "setup"):
        return f" ({key!r} belongs to a variant or to 'defaults')"
    if ctx.startswith(" at the top") and key in TASK_KEYS:
        return f" ({key!r} belongs to a task, under 'tasks:')"
    if ctx.startswith(" at the top") and key in VARIANT_KEYS:
        return f" ({key!r} belongs to a variant or to 'defaults:')"
    if not ctx.startswith(" in task") and key in TASK_KEYS:
        return f" ({key!r} belongs to a task)"
    return ""


#: Largest prompt file accepted (bytes).
MAX_PROMPT_BYTES = 1024 * 1024


class PromptFileError(Exception):
    """A prompt file that cannot be used: ``why`` (e.g. "is not a regular file"), and the
    message names the file."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"prompt file {path} {why}")
        self.path = path
        self.why = why


def read_prompt_file(path: Path, max_bytes: int = MAX_PROMPT_BYTES) -> str:
    """The text of a prompt file, which must be a regular file of at most ``max_bytes``
    bytes of UTF-8.  Opened non-blocking and checked before reading, so ``/dev/zero`` or a
    FIFO is an error naming the file, never an endless read or a hang."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise PromptFileError(path, "does not exist") from None
    except OSError as exc:
        raise PromptFileError(path, f"cannot be opened: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PromptFileError(path, "is not a regular file")
        if st.st_size > max_bytes:
            raise PromptFileError(path, f"has {st.st_size} bytes, more than {max_bytes}")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PromptFileError(path, f"has more than {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PromptFileError(path, "cannot be read as UTF-8 text") from None
