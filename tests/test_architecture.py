"""The house rules of pytest_evalrun/, checked on its source with ``ast`` (every import counts,
also under TYPE_CHECKING and inside functions): no import circle, every arrow points down, and
the layers below the pytest wiring know nothing of pytest."""

from __future__ import annotations

import ast
from pathlib import Path

import import_graph
import pytest

#: (layer, order within the layer): a module imports only modules of a lower layer, or of its
#: own layer with a lower or equal order. The longest matching prefix decides.
LAYERS: dict[str, tuple[int, int]] = {
    "pytest_evalrun.plugin": (5, 0),
    "pytest_evalrun.controller": (4, 0),
    "pytest_evalrun.worker": (4, 0),
    "pytest_evalrun.dryrun": (4, 0),
    "pytest_evalrun.cli": (4, 0),
    "pytest_evalrun.interrupt": (3, 3),
    "pytest_evalrun.replay": (3, 3),
    "pytest_evalrun.junitxml": (3, 0),
    "pytest_evalrun.collect": (3, 2),
    "pytest_evalrun.context": (3, 1),
    "pytest_evalrun.hookspecs": (3, 0),
    "pytest_evalrun.shared": (3, 0),
    "pytest_evalrun.options": (3, 0),
    "pytest_evalrun.discovery": (3, 0),
    "pytest_evalrun.shard": (1, 0),
    "pytest_evalrun.agents": (2, 3),
    "pytest_evalrun.trial.environments": (2, 2),
    "pytest_evalrun.trial.containers": (2, 2),
    "pytest_evalrun.trial.containerruntime": (2, 2),
    "pytest_evalrun.trial.containerimages": (2, 2),
    "pytest_evalrun.trial.containerspares": (2, 2),
    "pytest_evalrun.trial.containerreap": (2, 2),
    "pytest_evalrun.trial.containertar": (2, 2),
    "pytest_evalrun.trial.containerexec": (2, 2),
    "pytest_evalrun.trial.sandbox": (2, 2),
    "pytest_evalrun.trial.sandboxview": (2, 2),
    "pytest_evalrun.trial.bwrapprobe": (2, 2),
    "pytest_evalrun.trial": (2, 2),
    "pytest_evalrun.gateway": (2, 2),
    "pytest_evalrun.store": (2, 1),
    "pytest_evalrun.finish": (2, 1),
    "pytest_evalrun.report": (2, 0),
    "pytest_evalrun.outcome": (1, 0),
    "pytest_evalrun.layoutjson": (1, 0),
    "pytest_evalrun.filewrite": (1, 0),
    "pytest_evalrun.sandboxkind": (1, 0),
    "pytest_evalrun.secrets": (1, 0),
    "pytest_evalrun.experiment": (1, 0),
    "pytest_evalrun.demo_agent": (1, 0),
    "pytest_evalrun.safetext": (1, 0),
    "pytest_evalrun": (0, 0),
}
#: Modules that may import pytest: the wiring, the roles, collection and pytest's junitxml.
PYTEST_ALLOWED = (
    "pytest_evalrun.plugin",
    "pytest_evalrun.controller",
    "pytest_evalrun.worker",
    "pytest_evalrun.collect",
    "pytest_evalrun.replay",
    "pytest_evalrun.context",
    "pytest_evalrun.hookspecs",
    "pytest_evalrun.shared",
    "pytest_evalrun.options",
    "pytest_evalrun.junitxml",
    "pytest_evalrun.dryrun",
)


def layer(module: str) -> tuple[int, int]:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def test_no_import_cycles() -> None:
    assert import_graph.cycles(import_graph.graph()) == []


def test_the_cycle_finder_finds_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_graph.cycles(edges) == [["a", "b", "c"]]


def test_every_arrow_points_down() -> None:
    up = [
        f"{source} -> {target}"
        for source, targets in import_graph.graph().items()
        for target in targets
        if target != "pytest_evalrun" and layer(target) > layer(source)
    ]
    assert up == []


def test_every_module_has_a_layer() -> None:
    for module in import_graph.modules():
        assert module == "pytest_evalrun" or layer(module) != (0, 0), module


def _imports_pytest(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        found += [n for n in names if n.split(".")[0] in ("pytest", "_pytest", "xdist")]
    return found


def test_lower_layers_know_nothing_of_pytest() -> None:
    offenders = {
        module: _imports_pytest(path)
        for module, path in import_graph.modules().items()
        if not module.startswith(PYTEST_ALLOWED)
    }
    assert {m: names for m, names in offenders.items() if names} == {}


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        ("pytest_evalrun.store.index", "pytest_evalrun.worker", False),
        ("pytest_evalrun.trial.run", "pytest_evalrun.store.trialdir", True),
        ("pytest_evalrun.report.summary", "pytest_evalrun.store.runs", False),
        ("pytest_evalrun.collect", "pytest_evalrun.context", True),
        ("pytest_evalrun.context", "pytest_evalrun.collect", False),
    ],
)
def test_layer_rule_itself(source: str, target: str, allowed: bool) -> None:
    """The rule the test above applies, on known cases (so it cannot pass vacuously)."""
    assert (layer(target) <= layer(source)) is allowed
