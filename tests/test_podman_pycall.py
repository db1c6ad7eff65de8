"""``python:`` steps in podman (and Docker) trials (issue 22): a callable runs in the container
with the image's own python3, with the contract it has on the host (its return value or
exception makes the verdict, 70/71 mean a crash / a missing callable, the step's timeout, the
workspace as working directory), and an agent cannot steer a ``python:`` verifier there: not by
a module of its own that shadows the verifier's module or the standard library, not by
``sitecustomize`` / ``usercustomize`` / ``.pth`` files (in the workspace or in the container's
system), not by a fake ``python3`` (in the workspace or on the system's PATH), not through an
image whose ``PYTHONPATH`` names the workspace. Judged by what a user sees: each trial's status,
reward and failure kind in meta.json, the same as the same experiment run on the host (the local
sandbox).

The image (python3 on the base image, ``ENV PYTHONPATH`` naming the workspace) is built by the
plugin from a Dockerfile once and cached by content. Needs podman, the base image and the apt
mirror for the first build: skipped, saying so, where podman or the image is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import run_pytest
from test_podman import BASE_IMAGE, Engine, engine, podman, trials  # noqa: F401

from pytest_evalrun.trial.bwrapprobe import probe

DOCKERFILE = (f"FROM {BASE_IMAGE}\n"
              "RUN apt-get update && apt-get install -y --no-install-recommends python3 "
              "python3-pytest && rm -rf /var/lib/apt/lists/*\n"
              # an image that puts its working directory on PYTHONPATH, as many do
              "ENV PYTHONPATH=/tmp/workspace\n")
WRONG = "def answer():\n    return 7\n"
RIGHT = "def answer():\n    return 42\n"

CHECKS = '''\
import os
import sys
import time


def verify(ctx):
    from fractions import Fraction
    import solution
    print("evalrun-test:", sys.executable, os.getcwd(), ctx.workspace, flush=True)
    return Fraction(solution.answer()) == 42


def reward(ctx):
    import solution
    return 1.0 if solution.answer() == 42 else 0.25


def boom(ctx):
    raise RuntimeError("the verifier itself broke")


def slow(ctx):
    time.sleep(120)


def setup_marker(ctx):
    (ctx.workspace / "marker.txt").write_text("set up\\n")


def needs_marker(ctx):
    import solution
    marker = ctx.workspace / "marker.txt"
    assert marker.is_file() and marker.read_text() == "set up\\n", "setup left no marker"
    return solution.answer() == 42
'''

SOLVERS = '''\
import os


def solve(ctx):
    assert os.getcwd() == str(ctx.workspace)
    (ctx.workspace / "solution.py").write_text("def answer():\\n    return 42\\n")
'''


def shell_write(files: dict[str, str]) -> str:
    """A shell command that writes ``files`` (relative: the workspace; absolute: the system)."""
    parts = []
    for name, body in files.items():
        quoted = body.replace("'", "'\\''")
        parts.append(f'mkdir -p "$(dirname "{name}")" && printf %s \'{quoted}\' > "{name}"')
        if name.endswith("python3"):
            parts.append(f'chmod +x "{name}"')
    return " && ".join(parts)


FAKE_CHECKS = ("def verify(ctx):\n    return True\n\n\ndef reward(ctx):\n    return 1.0\n")
FAKE_FRACTIONS = ("class Fraction:\n    def __init__(self, *a, **k):\n        pass\n\n"
                  "    def __eq__(self, other):\n        return True\n")
#: replaces the verifier's module before it is imported, wherever it is run at start-up
HIJACK = ("import sys, types\nm = types.ModuleType('checks')\nm.verify = lambda ctx: True\n"
          "m.reward = lambda ctx: 1.0\nsys.modules['checks'] = m\n")
#: the same as one line of a ``.pth`` file (``import`` lines of one are run at start-up)
HIJACK_PTH = "; ".join(line for line in HIJACK.splitlines()) + "\n"
FAKE_PYTHON = "#!/bin/sh\nexit 0\n"

#: Only inside a container (podman's marker file): files the agent plants in the system.
IN_CONTAINER = "[ -f /run/.containerenv ] && "

#: name -> the agent (a shell command in the workspace). The solution stays wrong.
ATTACKS: dict[str, str] = {
    "shadow-module": shell_write({"checks.py": FAKE_CHECKS}),
    "shadow-stdlib": shell_write({"fractions.py": FAKE_FRACTIONS}),
    "sitecustomize": shell_write({"sitecustomize.py": HIJACK, "usercustomize.py": HIJACK,
                                  "evil.pth": HIJACK_PTH}),
    "site-in-system": IN_CONTAINER + "for d in $(python3 -c 'import site; "
                      "print(*site.getsitepackages())') /usr/lib/python3/dist-packages; do "
                      + shell_write({"$d/sitecustomize.py": HIJACK,
                                     "$d/evil.pth": HIJACK_PTH}) + "; done; true",
    "fake-python3": shell_write({"python3": FAKE_PYTHON, "bin/python3": FAKE_PYTHON,
                                 "node_modules/.bin/python3": FAKE_PYTHON}),
    "fake-python3-system": IN_CONTAINER + shell_write(
        {"/usr/local/bin/python3": FAKE_PYTHON, "/usr/local/sbin/python3": FAKE_PYTHON})
    + "; true",
}


def write(root: Path, *, image: dict[str, Any]) -> None:
    (root / "fixtures" / "calc").mkdir(parents=True)
    (root / "fixtures" / "calc" / "solution.py").write_text(WRONG)
    (root / "checks.py").write_text(CHECKS)
    (root / "solvers.py").write_text(SOLVERS)
    (root / "image").mkdir()
    (root / "image" / "Dockerfile").write_text(DOCKERFILE)
    fixer = shell_write({"solution.py": RIGHT})
    behaviour = {
        "experiment": "pycall-behaviour",
        "environment": image,
        "timeout": 300,
        "verify_timeout": 60,
        "variants": {
            "fixer": {"agent": fixer},
            "py-agent": {"agent": {"python": "solvers:solve"}},
            "py-setup": {"agent": fixer, "setup": {"python": "checks:setup_marker"}},
            "idle": {"agent": "true"},
        },
        "tasks": [
            {"name": "verify", "prompt": "fix it", "fixture": "fixtures/calc",
             "verify": {"python": "checks:verify"}},
            {"name": "reward", "prompt": "fix it", "fixture": "fixtures/calc",
             "verify": {"python": "checks:reward"}},
            {"name": "raises", "prompt": "fix it", "fixture": "fixtures/calc",
             "verify": {"python": "checks:boom"}},
            {"name": "missing", "prompt": "fix it", "fixture": "fixtures/calc",
             "verify": {"python": "checks:nope"}},
            {"name": "times-out", "prompt": "fix it", "fixture": "fixtures/calc",
             "verify": {"python": "checks:slow"}, "verify_timeout": 3},
            {"name": "marker", "prompt": "fix it", "fixture": "fixtures/calc",
             "verify": {"python": "checks:needs_marker"}},
        ],
    }
    attacks = {
        "experiment": "pycall-attacks",
        "environment": image,
        "timeout": 300,
        "verify_timeout": 60,
        "variants": {name: {"agent": agent} for name, agent in ATTACKS.items()},
        "tasks": [
            {"name": "verify", "prompt": "fix it", "fixture": "fixtures/calc",
             "verify": {"python": "checks:verify"}},
            {"name": "reward", "prompt": "fix it", "fixture": "fixtures/calc",
             "verify": {"python": "checks:reward"}},
        ],
    }
    (root / "behaviour.eval.yaml").write_text(yaml.safe_dump(behaviour, sort_keys=False))
    (root / "attacks.eval.yaml").write_text(yaml.safe_dump(attacks, sort_keys=False))


def verdicts(root: Path, experiment: str) -> dict[tuple[str, str], tuple[Any, ...]]:
    return {(v, t): (m["status"], m["reward"], m.get("failure_kind"), m.get("error_kind"))
            for (v, t, _), m in trials(root).items() if m["experiment"] == experiment}


#: What the behaviour experiment gives, on the host as in a container.
def expected_behaviour() -> dict[tuple[str, str], tuple[str, float | None]]:
    out: dict[tuple[str, str], tuple[str, float | None]] = {}
    for variant in ("fixer", "py-agent", "py-setup", "idle"):
        right = variant != "idle"
        out[(variant, "verify")] = ("passed" if right else "failed", 1.0 if right else 0.0)
        out[(variant, "reward")] = ("passed" if right else "failed", 1.0 if right else 0.25)
        out[(variant, "marker")] = (("passed", 1.0) if variant == "py-setup" else ("failed", 0.0))
    return out


def check_in_podman(root: Path, done: Any, runtime: str = "podman") -> None:
    """What the two experiments give in podman: the behaviour of python: steps, and every
    attack a failure with the reward of an honest run."""
    tail = done.stdout[-4000:]
    seen = verdicts(root, "pycall-behaviour")
    assert len(seen) == 4 * 6, tail
    got = {k: (v[0], v[1]) for k, v in seen.items() if k[1] in ("verify", "reward", "marker")}
    assert got == expected_behaviour(), tail
    for variant in ("fixer", "py-agent", "py-setup", "idle"):
        # a verifier that raises: a crash, never a pass; a callable that is not there: an
        # error (the experiment's); a verifier that runs out of time: a fail
        assert seen[(variant, "raises")][:3] == ("failed", 0.0, "verify_crashed"), tail
        assert seen[(variant, "missing")][0] == "error", tail
        assert seen[(variant, "times-out")][0] == "failed", tail
    metas = {(v, t): m for (v, t, _), m in trials(root).items()}
    assert "RuntimeError: the verifier itself broke" in metas[("fixer", "raises")]["verify_tail"]
    assert "nope" in (metas[("fixer", "missing")]["message"] or "")
    assert "timed out" in (metas[("fixer", "times-out")]["message"] or ""), \
        metas[("fixer", "times-out")]
    # it ran in the container: the image's python3, in the workspace inside
    out = (metas[("fixer", "verify")]["_dir"] / "verifier" / "verify-output.txt").read_text()
    assert "evalrun-test: /usr/bin/python3 /tmp/workspace /tmp/workspace" in out, out
    assert metas[("fixer", "verify")]["isolation"]["environment"] == runtime
    # every attack fails (the agent's solution stays wrong), with the reward of an honest run
    attacks = verdicts(root, "pycall-attacks")
    want = {(a, t): ("failed", 0.0 if t == "verify" else 0.25)
            for a in ATTACKS for t in ("verify", "reward")}
    assert {k: (v[0], v[1]) for k, v in attacks.items()} == want, json.dumps(
        {f"{k[0]}/{k[1]}": v for k, v in attacks.items()})


def test_python_steps_run_in_the_container_and_cannot_be_steered(
    tmp_path: Path, engine: Engine  # noqa: F811
) -> None:
    """With podman and with Docker (the read-only mounts of the runner and the module)."""
    write(tmp_path, image={"dockerfile": "image/Dockerfile", "build_timeout": 900})
    check_in_podman(tmp_path, run_pytest(tmp_path, engine.option), engine.name)


@pytest.mark.skipif(not probe().available, reason="bubblewrap does not work here")
def test_with_two_workers_and_the_same_verdicts_as_on_the_host(
    tmp_path: Path, podman: str  # noqa: F811
) -> None:
    write(tmp_path, image={"dockerfile": "image/Dockerfile", "build_timeout": 900})
    in_podman = run_pytest(tmp_path, "--eval-environment=podman", "-n", "2")
    check_in_podman(tmp_path, in_podman)
    podman_verdicts = {**verdicts(tmp_path, "pycall-behaviour"),
                       **verdicts(tmp_path, "pycall-attacks")}
    # the same files in the local sandbox (the image ignored, the host's Python)
    host_root = tmp_path / "host"
    host_root.mkdir()
    write(host_root, image={"image": BASE_IMAGE})
    on_host = run_pytest(host_root, "--eval-environment=bwrap", "--eval-sandbox=bwrap",
                         "-n", "2")
    host_verdicts = {**verdicts(host_root, "pycall-behaviour"),
                     **verdicts(host_root, "pycall-attacks")}
    assert all(m["isolation"]["sandbox"] == "bwrap"
               for m in trials(host_root).values()), on_host.stdout[-2000:]
    assert podman_verdicts == host_verdicts, (in_podman.stdout[-2000:], on_host.stdout[-2000:])


def test_the_system_attacks_are_real_where_verify_shares_the_agents_container(
    tmp_path: Path, podman: str  # noqa: F811
) -> None:
    """The control: with ``environment: {verify: same}`` the verifier runs the python3 and
    the site directories the agent may have replaced (docs/environments.md says so), and
    these two attacks then pass; the default fresh container is what stops them."""
    write(tmp_path, image={"dockerfile": "image/Dockerfile", "build_timeout": 900,
                           "verify": "same"})
    done = run_pytest(tmp_path, "--eval-environment=podman", "-n", "2", "attacks.eval.yaml",
                      "-k", "system")
    attacks = verdicts(tmp_path, "pycall-attacks")
    assert {k: v[0] for k, v in attacks.items()} == {
        (a, t): "passed" for a in ("site-in-system", "fake-python3-system")
        for t in ("verify", "reward")}, done.stdout[-3000:]


def test_an_image_without_python3_is_an_error_naming_image_and_task(
    tmp_path: Path, podman: str  # noqa: F811
) -> None:
    write(tmp_path, image={"image": BASE_IMAGE})
    done = run_pytest(tmp_path, "--eval-environment=podman", "behaviour.eval.yaml",
                      "-k", "fixer and verify and not py")
    seen = verdicts(tmp_path, "pycall-behaviour")
    assert {k: v[0] for k, v in seen.items()} == {("fixer", "verify"): "error"}, \
        done.stdout[-3000:]
    meta = next(iter(trials(tmp_path).values()))
    message = meta["message"] or ""
    assert "python3" in message and BASE_IMAGE in message and "'verify'" in message, message
    assert "Dockerfile" in message
    assert "Traceback" not in done.stdout
