"""Container environments with real podman and real Docker, through real pytest sessions.

The tests taking the ``engine`` fixture run once with each runtime (``--eval-environment
podman`` and ``docker``):

- the same experiment run in the local bubblewrap sandbox and in a container gives the same
  outcomes, rewards and diffs;
- images from a Dockerfile are built once (a second session builds nothing), and a build
  failure is an error naming the task and the build's last lines;
- pytest killed with ``kill -9`` leaves no container behind, and a container whose owner died
  is removed when the next session starts;
- ``--eval-environment podman`` (or ``docker``) for a task without an image is an error that
  says so;
- bad ``environment:`` values are errors naming the file and line.

Needs podman and the base image ``localhost/evalrun-debian:bookworm``
(``tests/tools/install_podman.sh`` installs both; CI runs it first), and for the Docker runs
Docker's engine with the same image (``tests/tools/install_docker.sh``, run after it): skipped,
saying so, where they are missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import run_pytest

from pytest_evalrun.trial.bwrapprobe import probe
from pytest_evalrun.trial.containerreap import LABEL, OWNER_LABEL
from pytest_evalrun.trial.containerruntime import Runtime, detect_runtime

BASE_IMAGE = os.environ.get("EVALRUN_BASE_IMAGE", "localhost/evalrun-debian:bookworm")


@dataclass(frozen=True)
class Engine:
    """A container runtime the tests drive: ``name`` (``podman`` or ``docker``, as
    ``--eval-environment`` takes it) and its program."""

    runtime: Runtime

    @property
    def name(self) -> str:
        return self.runtime.name

    @property
    def program(self) -> str:
        return self.runtime.program

    @property
    def option(self) -> str:
        return f"--eval-environment={self.name}"

    def names(self, *filters: str) -> list[str]:
        """The names of our labelled containers, running or not, with extra filters."""
        args = [self.program, "ps", "-a", "--format", "{{.Names}}", "--filter",
                f"label={LABEL}=1"]
        for f in filters:
            args += ["--filter", f]
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
        return done.stdout.split()

    def owners(self) -> list[tuple[str, str]]:
        """(name, owner label) of our running containers."""
        label = self.runtime.label_template(OWNER_LABEL)
        listed = subprocess.run([self.program, "ps", "--format", "{{.Names}} " + label,
                                 "--filter", f"label={LABEL}=1"], capture_output=True,
                                text=True, check=True, timeout=60)
        return [(line.split()[0], line.split()[1] if line.split()[1:] else "")
                for line in listed.stdout.splitlines() if line.strip()]

    def remove(self, *names: str) -> None:
        self.runtime.force_remove(*names, timeout=120)


def engine_or_skip(name: str) -> Engine:
    """The runtime ``name`` with the base image in it, or skip naming what to run."""
    install = "tests/tools/install_podman.sh" + (
        "" if name == "podman" else " then tests/tools/install_docker.sh")
    runtime = detect_runtime(name)
    if runtime is None:
        pytest.skip(f"{name} is not installed or does not answer: run {install}")
    if not runtime.image_exists(BASE_IMAGE):
        pytest.skip(f"the base image {BASE_IMAGE} is not in {name}: run {install}")
    return Engine(runtime)


@pytest.fixture(scope="session")
def podman() -> str:
    """podman's program with the base image built, or skip naming what is missing."""
    return engine_or_skip("podman").program


@pytest.fixture(scope="session", params=["podman", "docker"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """Each container runtime in turn (a test that must hold in both): podman, then Docker
    (its daemon started and the base image loaded by tests/tools/install_docker.sh)."""
    return engine_or_skip(str(request.param))


def trials(root: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Every trial's meta.json under ``root/results``, by (variant, task, trial)."""
    out = {}
    for meta in (root / "results").glob("*/*/variants/*/tasks/*/trials/*/meta.json"):
        data = json.loads(meta.read_text())
        data["_dir"] = meta.parent
        out[(data["variant"], data["task"], data["trial"])] = data
    return out


def _start_time_of(names: list[str], program: str) -> str:
    """The owner label's start-time part of the first of ``names``."""
    done = subprocess.run([program, "inspect", "--format",
                           '{{index .Config.Labels "' + OWNER_LABEL + '"}}', names[0]],
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip().partition(":")[2]


SAME_EXPERIMENT: dict[str, Any] = {
    "experiment": "same-outcomes",
    "environment": {"image": BASE_IMAGE},
    "timeout": 60,
    "variants": {
        "fixer": {"agent": "sed -i 's/return a - b/return a + b/' calc.txt && "
                           "echo note > $EVALRUN_ARTIFACTS_DIR/note.txt"},
        # leaves two processes behind, killed after the step (and counted where they can be)
        "idle": {"agent": "sleep 300 & sleep 300 & true"},
        "vandal": {"agent": "rm calc.txt"},
    },
    "tasks": [
        {"name": "fix-add", "prompt": "fix add", "fixture": "fixtures/calc",
         "verify": "sh {experiment_dir}/checks/check.sh"},
        {"name": "partial", "prompt": "anything", "fixture": "fixtures/calc",
         "verify": "sh {experiment_dir}/checks/partial.sh"},
    ],
}
CHECK = "grep -q 'return a + b' calc.txt\n"
PARTIAL = ("if grep -q 'return a + b' calc.txt 2>/dev/null; then r=1; else r=0.5; fi\n"
           'printf \'{"reward": %s, "half": 0.5}\' "$r" > "$EVALRUN_VERIFIER_DIR/reward.json"\n')


def write_same(root: Path) -> None:
    (root / "fixtures" / "calc").mkdir(parents=True)
    (root / "fixtures" / "calc" / "calc.txt").write_text("def add(a, b):\n    return a - b\n")
    (root / "checks").mkdir()
    (root / "checks" / "check.sh").write_text(CHECK)
    (root / "checks" / "partial.sh").write_text(PARTIAL)
    (root / "same.eval.yaml").write_text(yaml.safe_dump(SAME_EXPERIMENT, sort_keys=False))


@pytest.mark.skipif(not probe().available, reason="bubblewrap does not work here")
def test_same_experiment_same_outcomes_in_bwrap_and_a_container(
    tmp_path: Path, engine: Engine
) -> None:
    seen: dict[str, dict[tuple[str, str, int], dict[str, Any]]] = {}
    for where in ("bwrap", engine.name):
        root = tmp_path / where
        root.mkdir()
        write_same(root)
        # a run id of its own (one from the clock may be another session's: the containers'
        # run label must be this run's alone)
        done = run_pytest(root, "-n", "2", f"--eval-environment={where}",
                          f"--eval-run-id=same-{uuid.uuid4().hex[:12]}")
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
        seen[where] = trials(root)
    bwrap, pod = seen["bwrap"], seen[engine.name]
    assert len(bwrap) == len(pod) == 6
    for key, local in bwrap.items():
        there = pod[key]
        assert (there["status"], there["reward"]) == (local["status"], local["reward"]), key
        assert local["isolation"]["environment"] == "bwrap"
        assert there["isolation"]["environment"] == engine.name
        assert there["isolation"]["image"] == BASE_IMAGE
        diff_here = (local["_dir"] / "workspace.diff").read_text()
        diff_there = (there["_dir"] / "workspace.diff").read_text()
        assert diff_here == diff_there, key
        # the workspace the agent left is kept on the host in both
        assert sorted(p.name for p in (there["_dir"] / "workspace").iterdir()) == sorted(
            p.name for p in (local["_dir"] / "workspace").iterdir())
    assert pod[("fixer", "fix-add", 1)]["status"] == "passed"
    assert pod[("idle", "partial", 1)]["reward"] == 0.5
    # what a step left is killed after it; counted where the container is reached from the
    # host (podman with runc: the count the step's own process makes before killing them)
    left = pod[("idle", "partial", 1)]["steps"]["agent"]["killed_leftovers"]
    assert left == (2 if engine.name == "podman" and os.geteuid() == 0 else 0), left
    assert pod[("fixer", "partial", 1)]["steps"]["agent"]["killed_leftovers"] == 0
    assert (pod[("fixer", "fix-add", 1)]["_dir"] / "artifacts" / "note.txt").read_text() == "note\n"
    run_id = pod[("idle", "fix-add", 1)]["run_id"]
    assert engine.names(f"label=io.evalrun.run={run_id}") == []


def test_dockerfile_built_once_and_a_failed_build_names_the_task(
    tmp_path: Path, engine: Engine
) -> None:
    marker = uuid.uuid4().hex
    good, bad = tmp_path / "img" / "good", tmp_path / "img" / "bad"
    good.mkdir(parents=True)
    bad.mkdir(parents=True)
    (good / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nRUN echo {marker} > /marker\n")
    (bad / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nRUN echo broken-{marker} && exit 3\n")
    spec = {
        "experiment": "built",
        "variants": {"v": {"agent": "cat /marker > seen.txt"}},
        "tasks": [
            {"name": "good-image", "prompt": "p", "trials": 2,
             "environment": {"dockerfile": "img/good/Dockerfile"},
             "verify": f"grep -q {marker} seen.txt"},
            {"name": "bad-image", "prompt": "p",
             "environment": {"dockerfile": "img/bad/Dockerfile"}, "verify": "true"},
        ],
    }
    (tmp_path / "b.eval.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    first = run_pytest(tmp_path, engine.option)
    found = trials(tmp_path)
    good_meta = found[("v", "good-image", 1)]
    assert good_meta["status"] == "passed", first.stdout[-3000:]
    assert found[("v", "good-image", 2)]["status"] == "passed"
    tag = good_meta["isolation"]["image"]
    assert tag.startswith("localhost/evalrun-build:")
    inspect = [engine.program, "image", "inspect", "--format", "{{.Id}} {{.Created}}", tag]
    created = subprocess.run(inspect, capture_output=True, text=True, check=True).stdout
    failed = found[("v", "bad-image", 1)]
    assert failed["status"] == "error"
    assert "'bad-image'" in failed["message"] and f"broken-{marker}" in failed["message"]
    try:
        # a second session: same tag, the image not rebuilt (same id and creation time)
        second = run_pytest(tmp_path, "-k", "good", engine.option)
        assert second.returncode == 0, second.stdout[-3000:]
        again = subprocess.run(inspect, capture_output=True, text=True, check=True).stdout
        assert again == created
    finally:
        subprocess.run([engine.program, "rmi", "-f", tag], capture_output=True, check=False)


def test_no_container_left_after_kill_9_and_stale_ones_reaped(
    tmp_path: Path, engine: Engine
) -> None:
    spec = {
        "experiment": "killed",
        "environment": {"image": BASE_IMAGE},
        "timeout": 300,
        "variants": {"sleeper": {"agent": "sleep 300"}},
        "tasks": [{"name": "t", "prompt": "p", "verify": "true"}],
    }
    (tmp_path / "k.eval.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                             engine.option],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        owner = f"{proc.pid}:"
        deadline = time.monotonic() + 120
        mine: list[str] = []
        while time.monotonic() < deadline and not mine:
            mine = [name for name, label in engine.owners() if label.startswith(owner)]
            time.sleep(0.2)
        assert mine, "the trial's container never started"
        # none of its containers may outlive it: the trial's, verify's started beside it,
        # those started ahead for a next trial (all labelled with their owner)
        owner_filter = f"label={OWNER_LABEL}={owner}{_start_time_of(mine, engine.program)}"
        # the agent is running in it: now kill pytest outright
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            names = engine.names()
            if not set(mine) & set(names) and not engine.names(owner_filter):
                break
            time.sleep(0.5)
        assert not set(mine) & set(engine.names()), "a container outlived pytest"
        assert engine.names(owner_filter) == [], "a container outlived pytest"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # A container whose owner is gone (its runtime client killed as well) is removed when the
    # next session starts.
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"evalrun-stale-{uuid.uuid4().hex[:8]}"
    subprocess.run([engine.program, "run", "-d", "--name", name, "--label", f"{LABEL}=1",
                    "--label", f"{OWNER_LABEL}={dead.pid}:1", BASE_IMAGE, "sleep", "300"],
                   capture_output=True, check=True, timeout=120)
    try:
        assert name in engine.names()
        spec["variants"] = {"quick": {"agent": "true"}}
        (tmp_path / "k.eval.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        done = run_pytest(tmp_path, engine.option)
        assert done.returncode == 0, done.stdout[-2000:]
        assert name not in engine.names()
    finally:
        engine.remove(name)


def test_a_container_runtime_without_an_image_is_an_error_that_says_so(
    tmp_path: Path, engine: Engine
) -> None:
    spec = {"experiment": "no-image", "variants": {"v": {"agent": "true"}},
            "tasks": [{"name": "t", "prompt": "p", "verify": "true"}]}
    (tmp_path / "n.eval.yaml").write_text(yaml.safe_dump(spec))
    done = run_pytest(tmp_path, engine.option)
    assert done.returncode == 1
    (meta,) = trials(tmp_path).values()
    assert meta["status"] == "error"
    assert "environment: {image: NAME}" in meta["message"]


def test_network_in_a_container_never_wider_than_asked(tmp_path: Path, engine: Engine) -> None:
    """Every container has no interface but ``lo`` (``--network none``); with a network, its
    way out is the trial's egress proxy (its allow list applied); meta.json says what the
    container's network was (the attacks: tests/test_podman_network.py)."""
    probe_net = ("if cat /proc/net/dev | grep -v ' lo:' | tail -n +3 | grep -q ':'; "
                 "then echo net > $EVALRUN_ARTIFACTS_DIR/net.txt; "
                 "else echo none > $EVALRUN_ARTIFACTS_DIR/net.txt; fi; "
                 'echo "$HTTPS_PROXY" > $EVALRUN_ARTIFACTS_DIR/proxy.txt')
    spec = {"experiment": "container-net", "environment": {"image": BASE_IMAGE},
            "variants": {"open": {"agent": probe_net},
                         "offline": {"agent": probe_net, "network": False},
                         "listed": {"agent": probe_net,
                                    "network": {"allow": ["example.org"]}}},
            "tasks": [{"name": "t", "prompt": "p", "verify": "true"}]}
    (tmp_path / "n.eval.yaml").write_text(yaml.safe_dump(spec))
    done = run_pytest(tmp_path, engine.option)
    assert done.returncode == 0, done.stdout[-3000:]
    found = {v: meta for (v, _, _), meta in trials(tmp_path).items()}
    for variant, meta in found.items():
        assert meta["status"] == "passed", variant
        assert (meta["_dir"] / "artifacts" / "net.txt").read_text() == "none\n", variant
        assert meta["isolation"]["network_isolated"] is True
        assert meta["isolation"]["network"] is (variant != "offline")
    assert found["offline"]["isolation"]["egress"] is None
    assert (found["offline"]["_dir"] / "artifacts" / "proxy.txt").read_text() == "\n"
    assert found["open"]["isolation"]["egress"]["allow"] is None
    assert found["listed"]["isolation"]["egress"]["allow"] == ["example.org"]
    for variant in ("open", "listed"):
        proxy = (found[variant]["_dir"] / "artifacts" / "proxy.txt").read_text()
        assert proxy.startswith("http://127.0.0.1:"), (variant, proxy)


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ("{image: x, dockerfile: Dockerfile}", "exactly one of 'image'"),
        ("{image: x, cpus: many}", "'cpus' in 'environment' at the top level must be a number"),
        ("{image: x, memroy_mb: 5}", "did you mean 'memory_mb'"),
        ("{dockerfile: nowhere/Dockerfile}", "dockerfile 'nowhere/Dockerfile'"),
        ("{image: x, workdir: relative}", "must be an absolute path"),
        ("debian", "must be a mapping {image: NAME}"),
    ],
)
def test_bad_environment_values_name_the_file_and_line(
    pytester: pytest.Pytester, environment: str, expected: str
) -> None:
    pytester.makefile(".eval.yaml", bad=(
        "variants:\n  v: {agent: 'true'}\n"
        f"environment: {environment}\n"
        "tasks:\n  - {name: t, prompt: p, verify: 'true'}\n"))
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret != 0
    text = result.stdout.str()
    assert "bad.eval.yaml:3" in text, text[-2000:]
    assert expected in text, text[-2000:]


LINKER = ("cd / && rm -rf /logs/artifacts /tmp/workspace && ln -s /etc /logs/artifacts && "
          "ln -s /etc /tmp/workspace")


def test_links_the_agent_leaves_inside_are_never_followed_on_the_host(
    tmp_path: Path, engine: Engine
) -> None:
    """The agent replaces its workspace and the artifacts directory by links to /etc: what
    comes out is no link to follow, and nothing of the host's /etc is read or moved."""
    spec = {
        "experiment": "links",
        "environment": {"image": BASE_IMAGE},
        "variants": {"linker": {"agent": LINKER}},
        "tasks": [{"name": "t", "prompt": "p", "fixture": "fix", "verify": "true"}],
    }
    (tmp_path / "fix").mkdir()
    (tmp_path / "fix" / "a.txt").write_text("a\n")
    (tmp_path / "l.eval.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    before = sorted(os.listdir("/etc"))
    done = run_pytest(tmp_path, engine.option)
    (meta,) = trials(tmp_path).values()
    assert meta["status"] in ("passed", "failed"), done.stdout[-2000:]
    trial = meta["_dir"]
    assert sorted(os.listdir("/etc")) == before
    for path in trial.rglob("*"):
        assert path.name not in ("passwd", "hostname", "os-release"), path
    assert (trial / "workspace").is_dir() and not (trial / "workspace").is_symlink()
    assert "a.txt" in (trial / "workspace.diff").read_text()  # its deletion
