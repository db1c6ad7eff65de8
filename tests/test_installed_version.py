"""The agent CLI's version as installed (agents/installed.py), not as its editable records
say: the version Harbor's agent_info and the trajectory show (issue 20)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from agentcli_pins import CLIS, PINS, executable

from pytest_evalrun.agents.installed import installed_version


def _package(root: Path, name: str, version: object, entry: str) -> Path:
    pkg = root / "node_modules" / name
    (pkg / Path(entry).parent).mkdir(parents=True, exist_ok=True)
    (pkg / entry).write_text("#!/usr/bin/env node\n")
    (pkg / "package.json").write_text(json.dumps({"name": name, "version": version}))
    bin_dir = root / "node_modules" / ".bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / Path(entry).stem
    os.symlink(os.path.relpath(pkg / entry, bin_dir), link)
    return link


def test_read_from_the_package_the_executable_belongs_to(tmp_path: Path) -> None:
    assert installed_version(str(_package(tmp_path, "@x/cli", "2.1.328", "bin/cli.js"))) == (
        "2.1.328"
    )
    assert installed_version(str(_package(tmp_path, "y", "0.171.0-alpha.1", "dist/y.js"))) == (
        "0.171.0-alpha.1"
    )
    # not a version, not an npm package, not there: unknown
    assert installed_version(str(_package(tmp_path, "bad", "1e309; rm -rf /", "b.js"))) is None
    assert installed_version(str(_package(tmp_path, "num", 3, "n.js"))) is None
    plain = tmp_path / "agent.sh"
    plain.write_text("#!/bin/sh\n")
    assert installed_version(str(plain)) is None
    assert installed_version(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_the_pinned_clis(cli: str) -> None:
    path = executable(cli)
    if path is None:
        if os.environ.get("EVALRUN_CI_NO_SKIPS") or os.environ.get("EVALRUN_REQUIRE_AGENT_CLIS"):
            pytest.fail(f"the pinned {cli} CLI is not installed (tests/tools/)")
        pytest.skip(f"the pinned {cli} CLI is not installed (npm; tests/tools/)")
    assert installed_version(str(path)) == PINS[CLIS[cli][0]]
