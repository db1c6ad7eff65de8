"""Variants and tasks: each entry of ``variants:`` and ``tasks:`` checked on its own, then
``extends`` chains resolved (unknown targets and cycles reported) and ``defaults:`` and the
experiment-wide values applied, giving :class:`~pytest_evalrun.experiment.model.Variant` and
:class:`~pytest_evalrun.experiment.model.Task` objects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_evalrun.experiment.checker import (
    DEFAULTS_KEYS,
    INVALID,
    TASK_KEYS,
    VARIANT_KEYS,
    Checker,
    describe,
    did_you_mean,
)
from pytest_evalrun.experiment.errors import ExperimentError
from pytest_evalrun.experiment.harbor_tasks import HarborTasks, harbor_item
from pytest_evalrun.experiment.model import (
    DEFAULT_PASS_THRESHOLD,
    DEFAULT_SETUP_TIMEOUT,
    DEFAULT_TIMEOUT,
    DEFAULT_TRIALS,
    DEFAULT_VERIFY_TIMEOUT,
    SandboxSetting,
    Task,
    Variant,
)
from pytest_evalrun.experiment.names import slugify, validate_name
from pytest_evalrun.experiment.stepcheck import Steps
from pytest_evalrun.experiment.valuecheck import Values
from pytest_evalrun.experiment.yamltree import YList, YMap, plain

__all__ = ["Entries", "Top"]


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
class Top:
    """The experiment-wide values tasks and variants inherit."""

    trials: int = DEFAULT_TRIALS
    retries: int = 0
    numbers: dict[str, float] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    raw_env: dict[str, Any] = field(default_factory=dict)
    #: ``sandbox:``, ``network:`` and ``env_passthrough:`` at the top level.
    isolation: dict[str, Any] = field(default_factory=dict)
    #: ``budget:`` at the top level.
    budget: dict[str, Any] = field(default_factory=dict)


def _ctx_name(kind: str, name: object, index: int | None = None) -> str:
    if isinstance(name, str) and name:
        return f" in {kind} {name!r}"
    return f" in {kind} #{index + 1}" if index is not None else f" in a {kind}"


class Entries(Checker):
    """Builds the variants and the tasks; ``values`` and ``steps`` check their fields, and
    ``agent`` and ``setup`` steps may be of ``agent_kinds``, ``verify`` of ``verify_kinds``."""

    def __init__(
        self,
        path_text: str,
        errors: list[ExperimentError],
        values: Values,
        steps: Steps,
        agent_kinds: tuple[str, ...],
        verify_kinds: tuple[str, ...],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(path_text, errors)
        self.values = values
        self.harbor = HarborTasks(path_text, errors, values, environ or {})
        self.steps = steps
        self.agent_kinds = agent_kinds
        self.verify_kinds = verify_kinds

    # -- variants

    def variants(self, root: YMap, top: Top) -> list[Variant]:
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
                    f"got {describe(value, root.src.get('variants'))}",
                )
            return []
        base: dict[str, Any] = {"env": dict(top.env)}
        base_raw: dict[str, Any] = {"env": dict(top.raw_env)} if top.raw_env else {}
        defaults = root.get("defaults")
        misspelt: set[str] = set()
        if isinstance(defaults, YMap):
            misspelt = self.check_keys(defaults, DEFAULTS_KEYS, " in defaults")
            d = self._variant_entry("defaults", defaults, " in defaults")
            base, base_raw = _merge(base, d.fields), _merge(base_raw, d.raw)
        elif defaults is not None:
            self.error(
                root.lines.get("defaults"),
                "'defaults' must be a mapping of variant "
                f"settings, got {describe(defaults, root.src.get('defaults'))}",
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
                    f"{describe(spec, value.src.get(name))}",
                )
                continue
            entry = self._variant_entry(name, spec, ctx)
            entry.misspelt = misspelt | self.check_keys(spec, VARIANT_KEYS, ctx)
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
                    fields[key] = self.steps.step(m, key, self.agent_kinds, ctx) or INVALID
        for key in ("model", "description"):
            if key in m:
                fields[key] = self.values.text(m, key, ctx)
        if "env" in m:
            fields["env"] = self.values.env(m, ctx)
        if "retries" in m:
            numbers: dict[str, Any] = {}
            self.values.numbers(m, ctx, numbers)
            fields["retries"] = numbers["retries"]
        if "pricing" in m:
            fields["pricing"] = self.values.pricing(m, ctx)
        if "budget" in m:
            fields["budget"] = self.values.budget(m, ctx)
        self.values.isolation(m, ctx, fields)
        entry = _Entry(name, m.line, fields, _raw(m))
        self._extends(m, ctx, entry)
        return entry

    def _make_variant(
        self, e: _Entry, f: dict[str, Any], raw: dict[str, Any], top: Top
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
        if e.broken or INVALID in f.values() or INVALID in top.isolation.values():
            return None
        iso = top.isolation
        network = f.get("network", iso.get("network", True))
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
            budget={**top.budget, **f.get("budget", {})} or None,
            sandbox=f.get("sandbox", iso.get("sandbox", SandboxSetting())),
            network=network is not False,
            network_allow=network if isinstance(network, tuple) else None,
            env_passthrough=tuple(dict.fromkeys(passthrough)),
            environment=f.get("environment", iso.get("environment")),
        )

    # -- tasks

    def tasks(self, root: YMap, top: Top) -> list[Task]:
        value = root.get("tasks")
        if isinstance(value, YMap) and "harbor" in value:
            tasks = self.harbor.tasks(value, " in 'tasks'", top.numbers, top.trials)
            self._check_slugs([(t.name, t.slug, t.line) for t in tasks], "task")
            return tasks
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
                    f"{describe(value, root.src.get('tasks'))}",
                )
            return []
        entries: dict[str, _Entry] = {}
        harbor: list[Task] = []
        for index, (spec, line) in enumerate(zip(value, value.lines, strict=False)):
            if harbor_item(spec):
                assert isinstance(spec, YMap)
                harbor += self.harbor.tasks(spec, f" in task #{index + 1}", top.numbers,
                                            top.trials)
                continue
            if not isinstance(spec, YMap):
                self.error(
                    line,
                    f"task #{index + 1} must be a mapping (name, prompt, verify, "
                    f"...), got {describe(spec, value.src.get(index))}",
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
        for task in harbor:
            if task.name in entries or any(t.name == task.name for t in tasks):
                self.error(task.line, f"duplicate task name {task.name!r} (a Harbor task "
                           "directory and another task)")
            else:
                tasks.append(task)
        self._check_slugs([(t.name, t.slug, t.line) for t in tasks], "task")
        return tasks

    def _task_entry(self, m: YMap, index: int) -> _Entry | None:
        name = m.get("name")
        ctx = _ctx_name("task", name, index)
        misspelt = self.check_keys(m, TASK_KEYS, ctx)
        if "name" not in m:
            self.error(m.line, f"task #{index + 1} has no 'name'")
            return None
        name = self.values.text(m, "name", ctx, allow_null=False)
        if name is INVALID:
            return None
        problem = validate_name(name)
        if problem:
            self.error(m.lines["name"], f"task name {name!r} {problem}")
            return None
        assert isinstance(name, str)
        f: dict[str, Any] = {}
        for key in ("description", "prompt"):
            if key in m:
                f[key] = self.values.text(m, key, ctx, allow_null=key == "description")
        if "prompt" in m and "prompt_file" in m:
            self.error(
                m.lines["prompt_file"],
                f"task {name!r} has both 'prompt' and 'prompt_file': give only one",
            )
            f["prompt"] = INVALID
        elif "prompt_file" in m:
            f["prompt_file"] = self.values.prompt_file(m, ctx)
        if "fixture" in m:
            f["fixture"] = None if m["fixture"] is None else self.values.fixture(m, ctx)
        if "verify" in m:
            f["verify"] = self.steps.step(m, "verify", self.verify_kinds, ctx) or INVALID
        if "tags" in m:
            f["tags"] = self.values.tags(m, ctx)
        if "env" in m:
            f["env"] = self.values.env(m, ctx)
        if "budget" in m:
            f["budget"] = self.values.budget(m, ctx)
        if "environment" in m:
            f["environment"] = self.values.environment(m, ctx)
        self.values.numbers(m, ctx, f)
        entry = _Entry(name, m.line, f, _raw(m, drop=("name",)), misspelt=misspelt)
        self._extends(m, ctx, entry)
        return entry

    def _make_task(
        self, e: _Entry, f: dict[str, Any], raw: dict[str, Any], top: Top
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
        if not ok or INVALID in f.values():
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
            budget=f.get("budget"),
            env=f.get("env", {}),
            description=f.get("description"),
            raw={"name": e.name, **raw},
            retries=f.get("retries"),  # None: the variant's, else the experiment's
            environment=f.get("environment"),
        )

    # -- extends

    def _extends(self, m: YMap, ctx: str, entry: _Entry) -> None:
        if "extends" not in m:
            return
        target = self.values.text(m, "extends", ctx, allow_null=False)
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
                        f"{did_you_mean(entry.extends, entries)}",
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
