"""YAML text -> plain values that remember their file and line.

Two steps, each linear in the size of the text:

1. :func:`compose`: YAML text -> node tree (libyaml when available). Syntax errors, tabs used
   for indentation and other reader problems become :class:`ExperimentError` with a line.
2. :class:`Walker`: node tree -> plain values (:class:`YMap`/:class:`YList` remember the line
   of every key and item). It interpolates ``${VAR}``, collects secret values, rejects
   duplicate keys and YAML tags other than the plain JSON-like ones (so ``!!python/...`` is
   never constructed), and bounds alias expansion and nesting (billion laughs, deep files).

Nothing here knows the experiment schema: which keys hold environments or named entries is
the caller's to say (see :class:`Walker`); ``experiment/load.py`` checks the values and builds the
model.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from pytest_evalrun.experiment.errors import ExperimentError
from pytest_evalrun.experiment.interpolate import InterpolationError, interpolate
from pytest_evalrun.secrets import is_secret_name

__all__ = ["MAX_ALIAS_VISITS", "MAX_DEPTH", "Walker", "YList", "YMap", "compose", "plain"]

#: Past this many node visits through aliases (and 4x the distinct nodes), loading fails.
MAX_ALIAS_VISITS = 100_000
MAX_DEPTH = 100

_Y = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_Y + t for t in ("str", "int", "float", "bool", "null"))
_TIMESTAMP, _MERGE, _SEQ, _MAP = (_Y + t for t in ("timestamp", "merge", "seq", "map"))


# --------------------------------------------------------------------------- stage 1: YAML


class _CachingResolver(Resolver):
    """The safe resolver, remembering the tag of each plain scalar it has seen (keys and
    values repeat a lot in big files). Valid because the safe schema has no path resolvers."""

    def __init__(self) -> None:
        super().__init__()
        self._tags: dict[str, str] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is ScalarNode and implicit[0]:
            tag = self._tags.get(value)
            if tag is None:
                tag = self._tags[value] = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
            return tag
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]


_CParser: Any
try:
    import yaml.cyaml

    _CParser = getattr(yaml.cyaml, "CParser", None)
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _CParser = None

if _CParser is not None:

    class _CLoader(_CParser, SafeConstructor, _CachingResolver):  # type: ignore[misc]
        """libyaml's parser and composer with the caching safe resolver."""

        def __init__(self, stream: str) -> None:
            _CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            _CachingResolver.__init__(self)


def compose(text: str, path: str) -> Node | None:
    """The node tree of ``text`` (``None`` for an empty document), read as if from ``path``."""
    try:
        if _CParser is None:  # pragma: no cover - PyYAML built without libyaml
            return _single_node(yaml.SafeLoader(text))
        if _may_nest_deeply(text):
            # libyaml's composer recurses on the C stack: a very deep file would crash it.
            # Its event parser does not; use it to refuse such files first.
            _check_depth(_CLoader(text), path)
        return _single_node(_CLoader(text))
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, text, path) from None
    except yaml.YAMLError as exc:  # ReaderError: a character YAML does not allow
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
        reason = getattr(exc, "reason", None) or str(exc)
        raise ExperimentError(path, line, f"invalid YAML: {reason}") from None
    except RecursionError:  # pragma: no cover - pure-Python PyYAML only
        raise ExperimentError(path, None, "invalid YAML: the file is nested too deeply") from None


def _single_node(loader: Any) -> Node | None:
    try:
        node: Node | None = loader.get_single_node()
        return node
    finally:
        loader.dispose()


def _check_depth(loader: Any, path: str) -> None:
    depth = 0
    try:
        while (event := loader.get_event()) is not None:
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1 if event.start_mark else None
                    raise ExperimentError(
                        path, line, f"the file nests more than {MAX_DEPTH} levels deep")
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
    finally:
        loader.dispose()


_DEEP_INDENT = re.compile(r"^[ \t?:-]{150}", re.MULTILINE)
_BRACKET = re.compile(r"[\[\]{}]")


def _may_nest_deeply(text: str) -> bool:
    """A cheap over-estimate: could ``text`` nest more than ~200 levels?"""
    if text.count("[") + text.count("{") > 200:
        depth = peak = 0
        for ch in _BRACKET.findall(text):
            depth = depth + 1 if ch in "[{" else max(depth - 1, 0)
            peak = max(peak, depth)
        if peak > 200:
            return True
    return _DEEP_INDENT.search(text) is not None


def _yaml_error(exc: yaml.MarkedYAMLError, text: str, path: str) -> ExperimentError:
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return ExperimentError(path, None, f"invalid YAML: {exc}")
    line_text = _line_at(text, mark.line)
    indent = line_text[: len(line_text) - len(line_text.lstrip(" \t"))]
    if "\t" in indent or line_text[mark.column : mark.column + 1] == "\t":
        return ExperimentError(
            path,
            mark.line + 1,
            "a tab character is used for indentation; YAML allows only spaces there",
            column=mark.column + 1,
        )
    if exc.context and "single document" in exc.context:
        return ExperimentError(
            path,
            mark.line + 1,
            "the file must hold a single YAML document, but another one starts here ('---')",
        )
    message = f"invalid YAML: {exc.problem or 'syntax error'}"
    if exc.context:
        message += f" ({exc.context}"
        if exc.context_mark is not None and exc.context_mark.line != mark.line:
            message += f" started on line {exc.context_mark.line + 1}"
        message += ")"
    return ExperimentError(path, mark.line + 1, message, column=mark.column + 1)


def _line_at(text: str, index: int) -> str:
    start = 0
    for _ in range(index):
        start = text.find("\n", start) + 1
        if start == 0:
            return ""
    end = text.find("\n", start)
    return text[start : end if end >= 0 else len(text)]


# --------------------------------------------------------------------------- stage 2: values


class YMap(dict[str, Any]):
    """A mapping from the file: ``line`` of the mapping, ``lines[key]`` of each key, and
    ``src[key]``, the text as written of each scalar value that is not a string."""

    __slots__ = ("line", "lines", "src")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[str, int] = {}
        self.src: dict[str, str] = {}


class YList(list[Any]):
    """A sequence from the file, with the ``lines`` of its items (see :class:`YMap`)."""

    __slots__ = ("line", "lines", "src")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.lines: list[int] = []
        self.src: dict[int, str] = {}


def plain(value: Any) -> Any:
    """``value`` with YMap/YList turned into plain dicts and lists."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _tag_text(tag: str) -> str:
    return "!!" + tag[len(_Y) :] if tag.startswith(_Y) else tag


class Walker:
    """Turns a node tree into values (see the module docstring): ``Walker(...).value(root)``.

    Problems go to ``errors`` (the walk goes on); alias bombs and too deep nesting raise
    :class:`ExperimentError`. Secret values met on the way are added to ``secret_values``: the
    ``environ`` value of a ``${VAR}`` whose name, or the key it is under, is secret (one of
    ``secret_names`` or secret-looking), and literals under secret keys of a mapping held by a
    key in ``secret_maps`` (environments). A duplicate key in the mapping held by a top-level
    key in ``named_maps`` is reported as a duplicate of what ``named_maps`` calls its keys.
    """

    def __init__(
        self,
        path: str,
        environ: Mapping[str, str],
        errors: list[ExperimentError],
        secret_values: set[str],
        *,
        secret_names: Collection[str] = (),
        secret_maps: Collection[str] = (),
        named_maps: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.environ = environ
        self.errors = errors
        self.secret_values = secret_values
        self.secret_names = secret_names
        self.secret_maps = frozenset(secret_maps)
        self.named_maps = dict(named_maps or {})
        self.seen: set[int] = set()
        self.alias_visits = 0
        self.constructor = SafeConstructor()

    def value(self, node: Node, key: str | None = None, depth: int = 0) -> Any:
        """The value of ``node``, found under ``key`` at nesting ``depth`` (0: the root)."""
        nid = id(node)
        if nid in self.seen:
            self.alias_visits += 1
            if self.alias_visits > MAX_ALIAS_VISITS and self.alias_visits > 4 * len(self.seen):
                raise self._fatal(
                    node,
                    f"YAML aliases expand to more than {MAX_ALIAS_VISITS:,} nodes"
                    " (an alias bomb?); refusing to expand them",
                )
        else:
            self.seen.add(nid)
        if depth > MAX_DEPTH:
            raise self._fatal(node, f"the file nests more than {MAX_DEPTH} levels deep")
        if isinstance(node, ScalarNode):
            return self._scalar(node, key)
        if isinstance(node, SequenceNode):
            if node.tag != _SEQ:
                return self._bad_tag(node)
            seq = YList(node.start_mark.line + 1)
            for item in node.value:
                seq.lines.append(item.start_mark.line + 1)
                if isinstance(item, ScalarNode) and item.tag != _STR:
                    seq.src[len(seq)] = item.value
                seq.append(self.value(item, key, depth + 1))
            return seq
        if isinstance(node, MappingNode):
            if node.tag != _MAP:
                return self._bad_tag(node)
            return self._mapping(node, key, depth, env_map=key in self.secret_maps)
        return None  # pragma: no cover - composers produce only the three node kinds

    def _error(self, line: int | None, message: str) -> None:
        self.errors.append(ExperimentError(self.path, line, message))

    def _fatal(self, node: Node, message: str) -> ExperimentError:
        return ExperimentError(self.path, node.start_mark.line + 1, message)

    def _is_secret(self, name: str) -> bool:
        return name in self.secret_names or is_secret_name(name)

    def _mapping(self, node: MappingNode, parent: str | None, depth: int, env_map: bool) -> YMap:
        out = YMap(node.start_mark.line + 1)
        merges: list[Node] = []
        for knode, vnode in node.value:
            if isinstance(knode, ScalarNode) and knode.tag == _MERGE:
                merges.extend(vnode.value if isinstance(vnode, SequenceNode) else [vnode])
                continue
            key = self._key(knode)
            if key is None:
                continue
            line = knode.start_mark.line + 1
            if key in out.lines:
                what = "key"
                if depth == 1 and parent is not None and parent in self.named_maps:
                    what = self.named_maps[parent]
                self._error(line, f"duplicate {what} {key!r} (first on line {out.lines[key]})")
                continue
            out.lines[key] = line
            if isinstance(vnode, ScalarNode) and vnode.tag != _STR:
                out.src[key] = vnode.value
            out[key] = self.value(vnode, key, depth + 1)
            if env_map:
                self._env_value(key, out)
        for mnode in merges:  # "<<: *base": keys not given explicitly, earlier merges first
            merged = self.value(mnode, parent, depth + 1)
            if not isinstance(merged, YMap):
                self._error(mnode.start_mark.line + 1, "a YAML merge key (<<) needs a mapping")
                continue
            for key, val in merged.items():
                if key not in out:
                    out[key] = val
                    out.lines[key] = merged.lines[key]
                    if key in merged.src:
                        out.src[key] = merged.src[key]
                    if env_map:
                        self._env_value(key, out)
        return out

    def _env_value(self, key: str, env: YMap) -> None:
        """A literal under a secret-looking key of an environment mapping is secret."""
        if self._is_secret(key) and env[key] is not None:
            val = env.src.get(key, env[key])
            if isinstance(val, str) and val:
                self.secret_values.add(val)

    def _key(self, node: Node) -> str | None:
        if not isinstance(node, ScalarNode):
            self._error(node.start_mark.line + 1, "mapping keys must be plain scalars")
            return None
        if node.tag not in (_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP):
            self._bad_tag(node)
            return None
        return str(node.value)

    def _scalar(self, node: ScalarNode, key: str | None) -> Any:
        tag = node.tag
        if tag == _STR:
            text: str = node.value
            return self._interpolate(text, node, key) if "${" in text else text
        try:
            if tag == _INT:
                text = node.value
                if text.isdigit() and (text[0] != "0" or text == "0"):
                    return int(text)
                return self.constructor.construct_yaml_int(node)
            if tag == _FLOAT:
                try:
                    return float(node.value)
                except ValueError:  # .inf, .nan, 1:30.5 (sexagesimal)
                    return self.constructor.construct_yaml_float(node)
            if tag == _BOOL:
                return self.constructor.construct_yaml_bool(node)
        except (yaml.YAMLError, ValueError, TypeError, KeyError):
            self._error(node.start_mark.line + 1, f"invalid {_tag_text(tag)} value {node.value!r}")
            return None
        if tag == _NULL:
            return None
        if tag == _TIMESTAMP:
            return node.value  # kept as written: nothing here wants a date object
        return self._bad_tag(node)

    def _bad_tag(self, node: Node) -> None:
        tag = _tag_text(node.tag)
        if node.tag.startswith(_Y + "python/"):
            why = "experiment files cannot create Python objects"
        elif node.tag.startswith(_Y):
            why = "only strings, numbers, booleans, null, lists and mappings are supported"
        else:
            why = "custom YAML tags are not supported"
        self._error(node.start_mark.line + 1, f"YAML tag {tag!r} is not allowed: {why}")

    def _interpolate(self, text: str, node: Node, key: str | None) -> str:
        try:
            result, used = interpolate(text, self.environ)
        except InterpolationError as exc:
            for problem in exc.problems:
                self._error(node.start_mark.line + 1, problem)
            return text
        secret_key = key is not None and self._is_secret(key)
        for sub in used:
            if sub.from_environ and sub.value and (secret_key or self._is_secret(sub.name)):
                self.secret_values.add(sub.value)
        return result
