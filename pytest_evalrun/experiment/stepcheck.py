"""The checker of steps: ``agent``, ``setup`` and ``verify`` as a command (a string or a
list), a ``{kind: value}`` mapping (``command``, ``python`` or a plugin's kind) or an agent
preset (``{preset: NAME, executable: PROGRAM, args: [...]}``), each made a
:class:`~pytest_evalrun.experiment.model.Step`."""

from __future__ import annotations

import re
from collections.abc import Collection

from pytest_evalrun.experiment.checker import PRESET_KEYS, Checker, describe, did_you_mean
from pytest_evalrun.experiment.errors import ExperimentError
from pytest_evalrun.experiment.model import Step
from pytest_evalrun.experiment.yamltree import YList, YMap, plain

__all__ = ["Steps"]

_PYTHON_TARGET = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class Steps(Checker):
    """Checks steps. ``presets``: the preset names ``agent: {preset: NAME}`` may use (None:
    any name)."""

    def __init__(
        self, path_text: str, errors: list[ExperimentError], presets: Collection[str] | None
    ) -> None:
        super().__init__(path_text, errors)
        self.presets = tuple(presets) if presets is not None else None

    def step(self, m: YMap, key: str, kinds: tuple[str, ...], ctx: str) -> Step | None:
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
                else describe(value, m.src.get(key))
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
                f"{did_you_mean(kind, kinds)}",
            )
            return None
        if kind == "command":
            if isinstance(inner, (str, YList)):
                return self._command(inner, line, where)
            self.error(
                line,
                f"{where} must be a string (shell) or a list (argv), got "
                f"{describe(inner, value.src.get(kind))}",
            )
            return None
        if kind == "python":
            if isinstance(inner, str) and _PYTHON_TARGET.fullmatch(inner):
                return Step("python", inner, line)
            self.error(
                line,
                f"{where} must be 'package.module:function', got "
                f"{describe(inner, value.src.get(kind))}",
            )
            return None
        return Step(kind, plain(inner), line)

    def _preset(self, m: YMap, where: str) -> Step | None:
        """``{preset: NAME, executable: PROGRAM, args: [...]}`` -> Step("preset", mapping)."""
        before = len(self.errors)
        self.check_keys(m, PRESET_KEYS, f" in {where}")
        ok = len(self.errors) == before
        name, line = m["preset"], m.lines["preset"]
        if not isinstance(name, str) or not name:
            self.error(line, f"'preset' in {where} must be a preset name, got "
                       f"{describe(name, m.src.get('preset'))}")
            return None
        if self.presets is not None and name not in self.presets:
            self.error(line, f"unknown preset {name!r} in {where}; known presets: "
                       f"{', '.join(self.presets)}{did_you_mean(name, self.presets)}")
            return None
        executable = m.get("executable")
        if "executable" in m and (not isinstance(executable, str) or not executable.strip()):
            self.error(m.lines["executable"], f"'executable' in {where} must be a program "
                       f"name or path, got {describe(executable, m.src.get('executable'))}")
            ok = False
        args = m.get("args", [])
        if args is None or isinstance(args, str):
            args = [] if args is None else args
        if not isinstance(args, YList) and args != []:
            self.error(m.lines["args"], f"'args' in {where} must be a list of strings, got "
                       f"{describe(args, m.src.get('args'))}")
            return None
        if isinstance(args, YList):
            for item, item_line in zip(args, args.lines, strict=False):
                if not isinstance(item, str):
                    self.error(item_line, f"'args' in {where}: items must be strings, got "
                               f"{describe(item, None)}")
                    ok = False
        if not ok:
            return None
        return Step("preset", {"preset": name, "executable": executable,
                               "args": [str(a) for a in args]}, line)

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
                    item_line, f"{where}: argv items must be strings, got {describe(item, None)}"
                )
                return None
            argv.append(text)
        if not argv or not argv[0]:
            self.error(line, f"{where}: the command is empty")
            return None
        return Step("command", tuple(argv), line)
