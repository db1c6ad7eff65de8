"""What a preset's CLI gets bound into a trial's container (agents/incontainer.py,
trial/environments/containernet.py): its npm tree at its own path, or its program alone, and
node at /opt/evalrun/node/bin/node; nothing for a command agent, the oracle or a program that
is not installed. (The real CLIs inside podman: tests/test_podman_presets.py.)"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pytest_evalrun.agents.builtin import BUILTIN
from pytest_evalrun.agents.incontainer import container_mounts
from pytest_evalrun.agents.oracle import ORACLE
from pytest_evalrun.agents.preset import Preset
from pytest_evalrun.experiment.model import Step
from pytest_evalrun.trial.environments.containernet import NODE_DIR_INSIDE, program_mounts


def npm_tree(root: Path, name: str) -> Path:
    """``root/node_modules/.bin/NAME`` -> ``../NAME/cli.js`` (as npm installs a CLI)."""
    package = root / "node_modules" / name
    package.mkdir(parents=True)
    (package / "cli.js").write_text("#!/usr/bin/env node\n")
    os.chmod(package / "cli.js", 0o755)
    (root / "node_modules" / ".bin").mkdir()
    link = root / "node_modules" / ".bin" / name
    link.symlink_to(f"../{name}/cli.js")
    return link


def test_a_plugin_preset_binds_its_npm_tree_and_node(tmp_path: Path) -> None:
    link = npm_tree(tmp_path / "tools", "toycli")
    node = tmp_path / "nodebin" / "node"
    node.parent.mkdir()
    node.write_text("#!/bin/sh\n")
    os.chmod(node, 0o755)
    presets: dict[str, Preset] = {"toy": Preset(name="toy", program="toycli"),
                                  ORACLE.name: ORACLE}
    env = {"PATH": f"{link.parent}:{node.parent}"}
    agent = Step("preset", {"preset": "toy"})
    mounts = container_mounts(agent, env, tmp_path, presets)
    tree = str(tmp_path / "tools" / "node_modules")
    assert sorted(mounts) == sorted([(tree, tree), (str(node), f"{NODE_DIR_INSIDE}/bin/node")])
    # the same through executable:, by path relative to the experiment's directory
    by_path = Step("preset", {"preset": "toy", "executable": "tools/node_modules/.bin/toycli"})
    assert container_mounts(by_path, env, tmp_path, presets) == mounts
    # nothing for the oracle, a command agent, an unknown preset, a missing program
    for step in (Step("preset", {"preset": "oracle"}), Step("command", ("true",)),
                 Step("preset", {"preset": "nope"}),
                 Step("preset", {"preset": "toy", "executable": "no-such-cli"})):
        assert container_mounts(step, env, tmp_path, presets) == [], step
    # the built-in table is the default
    assert set(BUILTIN) >= {"claude-code", "codex"}
    assert container_mounts(Step("preset", {"preset": "toy"}), env, tmp_path) == []


def test_a_program_outside_node_modules_is_bound_alone(tmp_path: Path) -> None:
    program = tmp_path / "bin" / "agent"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n")
    link = tmp_path / "links" / "agent"
    link.parent.mkdir()
    link.symlink_to(program)
    # the link's path inside is the real file, and never the whole directory
    assert program_mounts(str(link), None) == [(str(program), str(link))]
    assert program_mounts(str(program), None) == [(str(program), str(program))]
    node = shutil.which("node")
    if node:
        with_node = program_mounts(str(program), node)
        assert (os.path.realpath(node), f"{NODE_DIR_INSIDE}/bin/node") in with_node
