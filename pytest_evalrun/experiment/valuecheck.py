"""The checkers of single values: each reads one key of a YAML mapping (a text, the numbers,
``env``, the isolation keys, ``tags``, ``fixture``, ``prompt_file``, ``pricing``), reports what
is wrong with it and returns the checked value, or :data:`~.checker.INVALID`."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_evalrun.experiment.allowlist import Allow, parse_allow
from pytest_evalrun.experiment.checker import (
    BUDGET_KEYS,
    ENVIRONMENT_KEYS,
    INVALID,
    PRICING_KEYS,
    SANDBOX_KEYS,
    Checker,
    describe,
    did_you_mean,
)
from pytest_evalrun.experiment.errors import ExperimentError
from pytest_evalrun.experiment.model import (
    MAX_TRIALS,
    SANDBOX_MODES,
    VERIFY_CONTAINERS,
    EnvironmentSpec,
    SandboxSetting,
)
from pytest_evalrun.experiment.promptfile import PromptFileError, read_prompt_file
from pytest_evalrun.experiment.yamltree import YList, YMap

__all__ = ["MAX_RETRIES", "MAX_TIMEOUT", "RESERVED_TAGS", "Values"]

_TIMEOUT_KEYS = ("timeout", "setup_timeout", "verify_timeout")
_RATE_KEYS = ("pass_threshold", "min_pass_rate")
MAX_TIMEOUT = 7 * 24 * 3600.0
MAX_RETRIES = 10
#: pytest markers with a meaning of their own, and ``-m`` keywords: not allowed as tags.
RESERVED_TAGS = frozenset(
    ["and", "or", "not", "skip", "skipif", "xfail", "parametrize", "usefixtures", "filterwarnings"]
)

_TAG_NAME = re.compile(r"[^\W\d]\w*")


class Values(Checker):
    """Checks values of the keys that tasks, variants, ``defaults`` and the top level share.
    Relative paths resolve against ``base_dir``; each directory and prompt file is looked at
    once per file."""

    def __init__(self, path_text: str, errors: list[ExperimentError], base_dir: Path) -> None:
        super().__init__(path_text, errors)
        self.base_dir = base_dir
        self._dirs: dict[Path, bool] = {}
        self._prompts: dict[Path, str | None] = {}

    def text(self, m: YMap, key: str, ctx: str, allow_null: bool = True) -> Any:
        """A free-text value: a string, or a number/boolean as written; else ``INVALID``."""
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
            f"{key!r}{ctx} must be a string, got {describe(value, m.src.get(key))}",
        )
        return INVALID

    def numbers(self, m: YMap, ctx: str, out: dict[str, Any]) -> None:
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
                out[key] = INVALID
                self.error(
                    m.lines[key],
                    f"{key!r}{ctx} must be {want}, got {describe(value, m.src.get(key))}",
                )

    def env(self, m: YMap, ctx: str) -> Any:
        value = m.get("env")
        if value is None:
            return {}
        if not isinstance(value, YMap):
            self.error(
                m.lines["env"],
                f"'env'{ctx} must be a mapping of variable names to "
                f"strings, got {describe(value, m.src.get('env'))}",
            )
            return INVALID
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
                    f"empty), got {describe(val, None)}",
                )
                ok = False
            elif "\0" in text:
                self.error(line, f"env {key!r}{ctx} contains a NUL character")
                ok = False
            else:
                env[key] = text
        return env if ok else INVALID

    def isolation(self, m: YMap, ctx: str, out: dict[str, Any]) -> None:
        """``env_passthrough``, ``sandbox`` and ``network`` present in ``m``, checked."""
        if "env_passthrough" in m:
            out["env_passthrough"] = self._names(m, "env_passthrough", ctx)
        if "network" in m:
            out["network"] = self._network(m, ctx)
        if "sandbox" in m:
            out["sandbox"] = self._sandbox(m, ctx)
        if "environment" in m:
            out["environment"] = self.environment(m, ctx)

    def environment(self, m: YMap, ctx: str) -> Any:
        """``environment: {image: NAME}`` or ``{dockerfile: PATH, context: DIR}``, with
        ``workdir``, ``cpus``, ``memory_mb``, ``pids``, ``build_timeout``, ``verify``; ``null``:
        none."""
        value, line = m["environment"], m.lines["environment"]
        if value is None:
            return None
        want = ("a mapping {image: NAME} or {dockerfile: PATH} (with optional context, "
                "workdir, cpus, memory_mb, pids, build_timeout, verify)")
        if not isinstance(value, YMap):
            self.error(line, f"'environment'{ctx} must be {want}, got "
                       f"{describe(value, m.src.get('environment'))}")
            return INVALID
        where = f" in 'environment'{ctx}"
        before = len(self.errors)
        self.check_keys(value, ENVIRONMENT_KEYS, where)
        if ("image" in value) == ("dockerfile" in value):
            self.error(line, f"'environment'{ctx} needs exactly one of 'image' (an image "
                       "name) and 'dockerfile' (a path)")
            return INVALID
        fields: dict[str, Any] = {"line": line}
        for key in ("image", "workdir"):
            if key in value:
                text = value[key]
                if not isinstance(text, str) or not text.strip() or "\0" in text:
                    self.error(value.lines[key], f"{key!r}{where} must be a non-empty string, "
                               f"got {describe(text, value.src.get(key))}")
                elif key == "workdir" and not text.startswith("/"):
                    self.error(value.lines[key], f"'workdir'{where} must be an absolute path "
                               f"inside the container, got {text!r}")
                else:
                    fields[key] = text
        for key in ("dockerfile", "context"):
            if key in value:
                want_file = key == "dockerfile"
                path = self._path(value, key, where,
                                  (lambda p: p.is_file()) if want_file else (lambda p: p.is_dir()))
                if path is None:
                    if isinstance(value[key], str) and value[key]:
                        kind = "file" if want_file else "directory"
                        self.error(value.lines[key], f"{key} {value[key]!r}{where} is not a "
                                   f"{kind}; relative paths are resolved against "
                                   f"{str(self.base_dir)!r}")
                else:
                    fields[key] = path
        if "verify" in value:
            if value["verify"] in VERIFY_CONTAINERS:
                fields["verify"] = value["verify"]
            else:
                self.error(value.lines["verify"], f"'verify'{where} must be one of "
                           f"{', '.join(VERIFY_CONTAINERS)} (where verify runs: a fresh "
                           "container of the image with the workspace, or the agent's own), "
                           f"got {describe(value['verify'], value.src.get('verify'))}")
        limits = {"cpus": (0.01, 1024.0), "memory_mb": (4, 16 * 1024 * 1024),
                  "pids": (8, 4_194_304), "build_timeout": (1.0, 24 * 3600.0)}
        for key, (low, high) in limits.items():
            if key not in value:
                continue
            number = value[key]
            integer = key in ("memory_mb", "pids")
            ok = (isinstance(number, (int, float)) and not isinstance(number, bool)
                  and low <= number <= high and (not integer or isinstance(number, int)))
            if not ok:
                kind = "an integer" if integer else "a number"
                self.error(value.lines[key], f"{key!r}{where} must be {kind} from {low:g} to "
                           f"{high:g}, got {describe(number, value.src.get(key))}")
            else:
                fields[key] = number if integer else float(number)
        if len(self.errors) != before:
            return INVALID
        return EnvironmentSpec(**fields)

    def _network(self, m: YMap, ctx: str) -> Any:
        """``network:``: true (the default: outbound through the egress proxy), false (none
        at all) or ``{allow: [host, host:port, *.domain, ...]}`` (only those hosts): True,
        False or the tuple of :class:`~.network.Allow` entries."""
        value, line = m["network"], m.lines["network"]
        if isinstance(value, bool):
            return value
        if not isinstance(value, YMap):
            self.error(
                line,
                f"'network'{ctx} must be true, false or a mapping {{allow: [host, "
                f"'host:port', ...]}}, got {describe(value, m.src.get('network'))}",
            )
            return INVALID
        where = f" in 'network'{ctx}"
        self.check_keys(value, ("allow",), where)
        if any(k != "allow" for k in value):
            return INVALID
        items = value.get("allow")
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, (YList, list)):
            self.error(
                value.lines.get("allow", line),
                f"'allow'{where} must be a list of hosts ('api.example.com', "
                f"'127.0.0.1:8080', '*.example.com'), got "
                f"{describe(items, value.src.get('allow'))}",
            )
            return INVALID
        lines = items.lines if isinstance(items, YList) else [value.lines.get("allow", line)]
        entries: list[Allow] = []
        ok = True
        for item, item_line in zip(items, lines, strict=False):
            if not isinstance(item, (str, int)) or isinstance(item, bool):
                self.error(item_line, f"'allow'{where}: {item!r} is not a host or host:port")
                ok = False
                continue
            try:
                entries.append(parse_allow(str(item)))
            except ValueError as exc:
                self.error(item_line, f"'allow'{where}: {exc}")
                ok = False
        return tuple(dict.fromkeys(entries)) if ok else INVALID

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
                f"[ANTHROPIC_API_KEY, 'AWS_*']), got {describe(value, m.src.get(key))}",
            )
            return INVALID
        names: list[str] = []
        for item, line in zip(value, value.lines, strict=False):
            if not isinstance(item, str) or not item or "=" in item or "\0" in item:
                self.error(line, f"{key!r}{ctx}: {item!r} is not a variable name or glob")
                return INVALID
            names.append(item)
        return tuple(names)

    def _sandbox(self, m: YMap, ctx: str) -> Any:
        value, line = m["sandbox"], m.lines["sandbox"]
        modes = "|".join(SANDBOX_MODES)
        if isinstance(value, str):
            if value in SANDBOX_MODES:
                return SandboxSetting(mode=value)
            hint = did_you_mean(value, SANDBOX_MODES)
            self.error(line, f"'sandbox'{ctx} must be {modes}, got {value!r}{hint}")
            return INVALID
        if not isinstance(value, YMap):
            self.error(
                line,
                f"'sandbox'{ctx} must be {modes} or a mapping {{mode:, read: [...], write: "
                f"[...]}}, got {describe(value, m.src.get('sandbox'))}",
            )
            return INVALID
        where = f" in 'sandbox'{ctx}"
        self.check_keys(value, SANDBOX_KEYS, where)
        ok = all(k in SANDBOX_KEYS for k in value)
        mode = value.get("mode", "auto")
        if mode not in SANDBOX_MODES:
            self.error(
                value.lines.get("mode", line),
                f"'mode'{where} must be {modes}, got {describe(mode, value.src.get('mode'))}",
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
                    f"{describe(items, value.src.get(key))}",
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
        unix = value.get("unix_sockets", False)
        if not isinstance(unix, bool):
            self.error(
                value.lines["unix_sockets"],
                f"'unix_sockets'{where} must be true or false, got "
                f"{describe(unix, value.src.get('unix_sockets'))}",
            )
            ok = False
        if not ok:
            return INVALID
        return SandboxSetting(
            mode=str(mode), read=paths["read"], write=paths["write"], unix_sockets=unix is True
        )

    def tags(self, m: YMap, ctx: str) -> Any:
        value = m["tags"]
        if value is None:
            return ()
        if not isinstance(value, YList):
            self.error(
                m.lines["tags"],
                f"'tags'{ctx} must be a list of names (e.g. [build]), "
                f"got {describe(value, m.src.get('tags'))}",
            )
            return INVALID
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
        return tuple(dict.fromkeys(value)) if ok else INVALID

    def _path(self, m: YMap, key: str, ctx: str, check: Callable[[Path], bool]) -> Path | None:
        text = m.get(key)
        if not isinstance(text, str) or not text:
            self.error(
                m.lines[key], f"{key!r}{ctx} must be a path, got {describe(text, m.src.get(key))}"
            )
            return None
        try:
            path = (self.base_dir / os.path.expanduser(text)).resolve()
            return path if check(path) else None
        except (OSError, ValueError, RuntimeError):
            return None

    def fixture(self, m: YMap, ctx: str) -> Any:
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
            return INVALID
        return path

    def prompt_file(self, m: YMap, ctx: str) -> Any:
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
            return INVALID
        return (path, self._prompts[path])

    def budget(self, m: YMap, ctx: str) -> Any:
        """``budget: {max_cost_usd, max_tokens, max_calls}``: numbers >= 0 (counts whole)."""
        value, line = m["budget"], m.lines["budget"]
        if not isinstance(value, YMap):
            self.error(line, f"'budget'{ctx} must be a mapping ({', '.join(BUDGET_KEYS)}), "
                       f"got {describe(value, m.src.get('budget'))}")
            return INVALID
        before = len(self.errors)
        self.check_keys(value, BUDGET_KEYS, f" in 'budget'{ctx}")
        if len(self.errors) != before:
            return INVALID
        out: dict[str, float | int] = {}
        for key, number in value.items():
            whole = key != "max_cost_usd"
            bad = (isinstance(number, bool) or not isinstance(number, (int, float))
                   or number < 0 or (whole and not isinstance(number, int)))
            if bad:
                kind = "a whole number >= 0" if whole else "a number >= 0 (USD)"
                self.error(value.lines[key], f"'budget' {key!r}{ctx} must be {kind}, got "
                           f"{describe(number, value.src.get(key))}")
                return INVALID
            out[key] = int(number) if whole else float(number)
        return out

    def pricing(self, m: YMap, ctx: str) -> Any:
        value, line = m["pricing"], m.lines["pricing"]
        if not isinstance(value, YMap):
            self.error(line, f"'pricing'{ctx} must be a mapping of USD per million tokens "
                       f"({', '.join(PRICING_KEYS)}), got {describe(value, m.src.get('pricing'))}")
            return INVALID
        return self._rates(value, (*PRICING_KEYS, "long_context"), "'pricing'", ctx)

    def _rates(self, value: YMap, allowed: tuple[str, ...], what: str, ctx: str) -> Any:
        """A ``pricing:`` mapping's rates (and its ``long_context`` tier: ``above``, a prompt
        size in tokens, and the rates that apply beyond it)."""
        before = len(self.errors)
        self.check_keys(value, allowed, f" in {what}{ctx}")
        if len(self.errors) != before:
            return INVALID
        out: dict[str, Any] = {}
        for key, number in value.items():
            if key == "long_context":
                if not isinstance(number, YMap) or "above" not in number:
                    self.error(value.lines[key], f"{what} 'long_context'{ctx} must be a mapping "
                               "with 'above' (a prompt size in tokens) and the rates beyond it, "
                               f"got {describe(number, value.src.get(key))}")
                    return INVALID
                tier = self._rates(number, (*PRICING_KEYS, "above"), "'pricing' 'long_context'",
                                   ctx)
                if tier is INVALID:
                    return INVALID
                out[key] = tier
                continue
            if isinstance(number, bool) or not isinstance(number, (int, float)) or number < 0:
                unit = "tokens" if key == "above" else "USD per million tokens"
                self.error(value.lines[key], f"{what} {key!r}{ctx} must be a number >= 0 "
                           f"({unit}), got {describe(number, value.src.get(key))}")
                return INVALID
            out[key] = float(number)
        return out
