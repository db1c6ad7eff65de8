"""Presets in containers (issue 22): a real agent CLI runs inside the trial's container, with
podman and with Docker.

The CLI's npm install and the host's node are bound read-only into the container (nothing is
installed in the image: the base image has no node); its model calls go through the model
gateway, which runs in the pytest process and is reached through a forward into the
container's network namespace (the container itself has ``--network none``). Per CLI, one
pytest session (two workers) with two tasks against the mock model: ``edit`` (the model writes
hello.txt with the CLI's file tool, runs a failing shell command, answers: passed) and
``refuse`` (failed). Judged as tests/test_presets.py judges the sandboxed runs
(:func:`test_presets.check_trial`: tokens counted by the gateway equal to what the mock
served, the CLI's own figures beside, the trajectory, no secret in any file), plus meta.json
saying the trial ran in that runtime with the egress proxy.

Needs podman, the base image and the CLIs, and for the Docker runs Docker's engine with the
base image (tests/tools/install_docker.sh): skipped, saying what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from mockllm import MockLLM, Script, say, shell
from test_agent_clis_mock import U2, U3, WRITE, edit_script, require_cli
from test_podman import BASE_IMAGE, Engine, engine, podman
from test_presets import HARBOR, SECRET, check_trial, experiment, refuse_script, trial_dir

__all__ = ["engine", "podman"]  # the fixtures, imported for their use here

#: The five: Node.js scripts (Gemini CLI, Copilot CLI, Codex's launcher) and compiled
#: programs (Claude Code's executable, opencode's, Codex's own).
CLIS = ["claude", "gemini", "codex", "copilot", "opencode"]
VERIFY = "grep -qx hi hello.txt"
#: CLIs that need the system's CA certificates, which the base image lacks: Copilot CLI's
#: model client refuses to start without trust roots, Codex starts no OpenTelemetry exporter
#: (its model calls work). Their trials run in an image built with them.
NEEDS_CA = {"codex", "copilot"}
CA_DOCKERFILE = (f"FROM {BASE_IMAGE}\nRUN apt-get update && apt-get install -y "
                 "--no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*\n")


#: The model's shell call: every variable of every process the CLI's shell can see inside
#: (Copilot CLI refuses a command reading paths outside the workspace: its own env only).
DUMP = ("echo ENV-DUMP-START; env; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; "
        "done; ls missing.txt")
DUMP_ENV = "echo ENV-DUMP-START; env; ls missing.txt"


def key_search_script(cli: str) -> Script:
    """edit_script's turns, the shell call dumping the environment of every process inside
    (the real key must be in none: the gateway's stand-in key is all the container gets)."""
    write = edit_script(cli).turns[0]
    command = DUMP_ENV if cli == "copilot" else DUMP
    return Script([write, shell(command, U2), say("Created hello.txt.", U3)])


def in_container(spec: dict[str, Any], root: Path, cli: str) -> dict[str, Any]:
    """test_presets' experiment, in the base image (with CA certificates: NEEDS_CA): a shell
    verify (no host Python inside), the mock's own proxy variables left out (the trial's egress
    proxy stands there)."""
    spec["environment"] = {"image": BASE_IMAGE}
    if cli in NEEDS_CA:
        (root / "image").mkdir()
        (root / "image" / "Dockerfile").write_text(CA_DOCKERFILE)
        spec["environment"] = {"dockerfile": "image/Dockerfile"}
    for task in spec["tasks"]:
        task["verify"] = VERIFY
        task["env"] = {k: v for k, v in task["env"].items() if "proxy" not in k.lower()}
    return spec


@pytest.mark.slow
@pytest.mark.parametrize("cli", CLIS)
def test_a_preset_cli_runs_inside_the_container_through_the_gateway(
    cli: str, engine: Engine, pytester: pytest.Pytester, tmp_path: Path
) -> None:
    exe = require_cli(cli)
    edit, refuse = key_search_script(cli), refuse_script()
    with MockLLM(edit, log_path=tmp_path / "edit.jsonl") as m1, \
            MockLLM(refuse, log_path=tmp_path / "refuse.jsonl") as m2:
        spec = in_container(experiment(cli, exe, m1, m2), pytester.path, cli)
        (pytester.path / f"{cli}.eval.yaml").write_text(yaml.safe_dump(spec))
        run = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider",
                                            engine.option)
    outcomes = run.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("failed")) == (1, 1), run.stdout.str()[-4000:]

    edited = trial_dir(pytester.path, cli, "edit")
    assert (edited / "workspace" / "hello.txt").read_text().strip() == "hi"
    seen = check_trial(cli, edited, m1, edit, HARBOR, tmp_path)
    assert seen["analysis"]["tool_calls"].get(WRITE[cli][0]) == 1
    # the model saw the dump (its next request carries it), and no real key in it
    sent = (tmp_path / "edit.jsonl").read_text()
    assert "ENV-DUMP-START" in sent and "HTTPS_PROXY=http://127.0.0.1:3128" in sent
    assert SECRET not in sent
    refused = trial_dir(pytester.path, cli, "refuse")
    assert json.loads((refused / "meta.json").read_text())["status"] == "failed"
    check_trial(cli, refused, m2, refuse, HARBOR, tmp_path)
    for trial in (edited, refused):
        isolation = json.loads((trial / "meta.json").read_text())["isolation"]
        assert (isolation["environment"], isolation["sandbox"]) == (engine.name, "container")
        assert isolation["network"] is True and isolation["egress"]["log"] == "network.log"
