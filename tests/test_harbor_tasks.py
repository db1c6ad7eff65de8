"""Harbor task directories as tasks (``tasks: {harbor: PATH}``), in podman, through a real
pytest session (two xdist workers) over our own Harbor-format tasks
(``tests/data/harbor_tasks``: a Python bug fix, a shell task, a C build):

- the ``oracle`` agent (their solution/solve.sh) passes every task, an agent that does
  nothing fails every one;
- the agent's phase sees neither tests/ nor solution/, keeps no host capability (its root is
  an unprivileged host uid), has no network and the task's limits;
- results/ and jobs/ hold what a person and Harbor expect, and Harbor 0.25.0's own models
  and viewer accept that jobs/ (``tests/harbor_check.py``);
- what pytest-evalrun does not run (docker-compose services, GPUs, ...) is an error naming
  the task and the feature; ``-k`` selects Harbor tasks by name.

The session runs once for the module (it builds the three images the first time: about a
minute; later sessions reuse them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import run_pytest
from filelock import FileLock
from test_harbor_real import harbor_python, run_harbor_check  # noqa: F401
from test_podman import engine_or_skip, podman, trials  # noqa: F401

TASKS = Path(__file__).resolve().parent / "data" / "harbor_tasks"
NAMES = ["c-build-fix", "py-fix-median", "sh-count-errors"]

#: What the agent's phase can see and do, written into the workspace (the probe variant).
PROBE = r"""
{
  echo "tests: $(ls -d /tests 2>&1 | head -1)"
  echo "solution: $(ls -d /solution 2>&1 | head -1)"
  echo "uid_map: $(head -1 /proc/self/uid_map | tr -s ' ')"
  grep -E '^(NoNewPrivs|CapBnd)' /proc/self/status
  if mount -t tmpfs none /mnt 2>/dev/null; then m=allowed; else m=refused; fi
  echo "mount: $m"
  cg=/sys/fs/cgroup
  echo "pids.max: $(cat $cg/pids/pids.max $cg/pids.max 2>/dev/null | head -1)"
  echo "memory: $(cat $cg/memory/memory.limit_in_bytes $cg/memory.max 2>/dev/null | head -1)"
  echo "interfaces: $(ls /sys/class/net | tr '\n' ' ')"
  echo "prompt: $(head -c 40 $EVALRUN_PROMPT_FILE)"
  a=$(head -1 /proc/1/maps | cut -d- -f1)
  echo "pid1mem: $(dd if=/proc/1/mem bs=1 count=4 skip=$((0x$a)) 2>/dev/null | wc -c)"
  echo "ptrace: $(perl -e 'print syscall(101, 16, 1, 0, 0) == -1 ? "refused" : "allowed"')"
} > probe.txt 2>&1
"""


@pytest.fixture(scope="session")
def harbor_run(tmp_path_factory: pytest.TempPathFactory, podman: str) -> Path:  # noqa: F811
    """The session's one run (shared by xdist workers through a lock, as xdist's docs
    suggest for expensive session fixtures)."""
    shared = tmp_path_factory.getbasetemp().parent
    root = shared / "harbor-run"
    with FileLock(str(shared / "harbor-run.lock")):
        if (root / "done").is_file():
            return root
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        _run(root)
        (root / "done").write_text("")
    return root


def _run(root: Path) -> None:
    spec: dict[str, Any] = {
        "experiment": "harbor-own",
        "variants": {
            "oracle": {"agent": {"preset": "oracle"}},
            "nothing": {"agent": "true"},
            "probe": {"agent": PROBE},
        },
        "tasks": {"harbor": str(TASKS)},
    }
    (root / "harbor.eval.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    done = run_pytest(root, "-n", "2")
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-2000:]


def test_oracle_passes_every_task_and_doing_nothing_fails_every_one(harbor_run: Path) -> None:
    found = trials(harbor_run)
    assert sorted({t for _, t, _ in found}) == NAMES
    for name in NAMES:
        oracle, nothing = found[("oracle", name, 1)], found[("nothing", name, 1)]
        assert oracle["status"] == "passed", (name, oracle.get("message"))
        assert oracle["reward"] == 1.0
        assert nothing["status"] == "failed", (name, nothing.get("message"))
        assert nothing["reward"] == 0.0
        assert oracle["isolation"]["environment"] == "podman"
        assert oracle["isolation"]["network"] is False  # network_mode = "no-network"
    # the task's settings from task.toml
    median = found[("oracle", "py-fix-median", 1)]
    assert median["isolation"]["limits"]["memory_mb"] == 512
    assert median["isolation"]["workdir"] == "/app"
    assert found[("oracle", "sh-count-errors", 1)]["isolation"]["workdir"] == "/work"
    # results/: the agent's change as a diff, Harbor's verifier files, the reward
    trial = median["_dir"]
    diff = (trial / "workspace.diff").read_text()
    assert "stats.py" in diff and "+    if len(ordered) % 2:" in diff
    assert (trial / "verifier" / "reward.txt").read_text().strip() == "1"
    assert "all checks pass" in (trial / "verifier" / "test-stdout.txt").read_text()
    assert (trial / "workspace" / "stats.py").is_file()
    rewards = json.loads((found[("oracle", "sh-count-errors", 1)]["_dir"] / "verify.json")
                         .read_text())["rewards"]
    assert rewards == {"reward": 1.0, "exact": 1.0}


def test_a_harbor_task_set_runs_with_docker_too(tmp_path: Path) -> None:
    """The same task set with ``--eval-environment docker``: the oracle passes every task,
    doing nothing fails every one, each trial in a Docker container."""
    docker = engine_or_skip("docker")
    spec = {"experiment": "harbor-docker",
            "variants": {"oracle": {"agent": {"preset": "oracle"}}, "nothing": {"agent": "true"}},
            "tasks": {"harbor": str(TASKS)}}
    (tmp_path / "harbor.eval.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    done = run_pytest(tmp_path, "-n", "2", docker.option)
    found = trials(tmp_path)
    assert {(v, t): m["status"] for (v, t, _), m in found.items()} == {
        **{("oracle", name): "passed" for name in NAMES},
        **{("nothing", name): "failed" for name in NAMES}}, done.stdout[-3000:]
    assert {m["isolation"]["environment"] for m in found.values()} == {"docker"}


def test_the_agent_sees_no_tests_or_solution_and_keeps_no_host_capability(
    harbor_run: Path,
) -> None:
    found = trials(harbor_run)
    for name in NAMES:
        meta = found[("probe", name, 1)]
        assert meta["status"] == "failed"  # it solved nothing
        probe = (meta["_dir"] / "workspace" / "probe.txt").read_text()
        lines = dict(line.split(":", 1) for line in probe.splitlines() if ":" in line)
        assert "No such file" in lines["tests"], probe
        assert "No such file" in lines["solution"], probe
        host_uid = lines["uid_map"].split()[1]
        assert host_uid != "0", probe  # container root is an unprivileged host user
        assert lines["NoNewPrivs"].strip() == "1", probe
        assert lines["mount"].strip() == "refused", probe
        assert lines["interfaces"].split() == ["lo"], probe
        assert lines["pids.max"].strip() == "4096", probe
        assert lines["prompt"].strip(), probe
        # the container's first process outlives every step: its memory is out of reach
        assert lines["pid1mem"].strip() == "0", probe
        assert lines["ptrace"].strip() == "refused", probe
    memory = (found[("probe", "py-fix-median", 1)]["_dir"] / "workspace" / "probe.txt").read_text()
    assert "memory: 536870912" in memory or "memory: 536870912\n" in memory, memory


def test_harbor_task_jobs_are_what_harbor_writes_and_harbor_accepts_them(
    harbor_run: Path, harbor_python: Path  # noqa: F811
) -> None:
    jobs = harbor_run / "jobs"
    (job,) = [p for p in jobs.iterdir() if p.is_dir()]
    configs = [json.loads(p.read_text()) for p in job.glob("*/config.json")]
    assert len(configs) == 3 * len(NAMES)
    # each trial names its Harbor task directory, as Harbor's own job would
    assert {c["task"]["path"] for c in configs} == {str(TASKS / n) for n in NAMES}
    results = [json.loads(p.read_text()) for p in job.glob("*/result.json")]
    oracle = [r for r in results if r["agent_info"]["name"] == "oracle"]
    assert sorted(r["task_name"] for r in oracle) == NAMES
    assert all(r["verifier_result"]["rewards"]["reward"] == 1.0 for r in oracle)
    report = run_harbor_check(harbor_python, jobs)
    assert report["problems"] == [], "\n".join(report["problems"])
    assert report["counts"]["trial_results"] == 3 * len(NAMES)


def test_k_selects_harbor_tasks_by_name(tmp_path: Path, podman: str) -> None:  # noqa: F811
    spec = {"variants": {"oracle": {"agent": {"preset": "oracle"}}},
            "tasks": [{"harbor": str(TASKS / "sh-count-errors")},
                      {"name": "own", "prompt": "p", "verify": "true"}]}
    (tmp_path / "k.eval.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    done = run_pytest(tmp_path, "-k", "count", "--co", "-q")
    assert done.returncode == 0, done.stdout
    assert "k.eval.yaml::oracle::sh-count-errors::trial-001" in done.stdout
    assert "own" not in done.stdout.replace("k.eval.yaml", "")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: (d / "environment" / "docker-compose.yaml").write_text("services: {}\n"),
         "docker-compose services (environment/docker-compose.yaml)"),
        (lambda d: (d / "task.toml").write_text("[environment]\ngpus = 1\n"), "GPUs"),
        (lambda d: (d / "task.toml").write_text("[[steps]]\nname = 'one'\n"), "several steps"),
        (lambda d: (d / "tests" / "test.sh").unlink(), "has no tests/test.sh"),
        (lambda d: (d / "task.toml").write_text("[agent\n"), "task.toml is not valid TOML"),
        (lambda d: (d / "task.toml").write_text("[environment]\nenv = {K = '${NOPE_XYZ}'}\n"),
         "${NOPE_XYZ}, which is not set"),
        # Harbor's network settings that a trial cannot honour (its allowlist is honoured:
        # tests/test_harbor_network.py)
        (lambda d: (d / "task.toml").write_text(
            "[environment]\nnetwork_mode = 'allowlist'\nallowed_hosts = ['10.0.0.0/8']\n"),
         "an IP range in the network allowlist ([environment] allowed_hosts entry '10.0.0.0/8'"),
        (lambda d: (d / "task.toml").write_text("[agent]\nnetwork_mode = 'no-network'\n"),
         "a network policy of its own for one phase ([agent] network_mode"),
        (lambda d: (d / "task.toml").write_text(
            "[environment]\nnetwork_mode = 'allowlist'\nallowed_hosts = ['pypi.org:443']\n"),
         "allowed_hosts entry 'pypi.org:443'"),
        (lambda d: (d / "task.toml").write_text("[environment]\nallowed_hosts = ['pypi.org']\n"),
         "allowed_hosts is only valid with network_mode = 'allowlist'"),
    ],
)
def test_what_is_not_run_is_named_with_the_task(
    pytester: pytest.Pytester, change: Any, expected: str
) -> None:
    task = pytester.path / "tasks" / "sh-count-errors"
    shutil.copytree(TASKS / "sh-count-errors", task)
    change(task)
    pytester.makefile(".eval.yaml", h=(
        "variants:\n  v: {agent: 'true'}\n"
        "tasks:\n  harbor: tasks\n"))
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret != 0
    text = result.stdout.str()
    assert "h.eval.yaml:4" in text, text[-2000:]
    assert "'sh-count-errors'" in text and expected in text, text[-2000:]


def test_a_harbor_task_in_the_local_sandbox_is_an_error_that_says_why(
    tmp_path: Path, podman: str  # noqa: F811
) -> None:
    spec = {"variants": {"v": {"agent": "true"}}, "tasks": {"harbor": str(TASKS / "c-build-fix")}}
    (tmp_path / "l.eval.yaml").write_text(yaml.safe_dump(spec))
    done = run_pytest(tmp_path, "--eval-environment=none")
    assert done.returncode == 1
    (meta,) = trials(tmp_path).values()
    assert meta["status"] == "error"
    assert "runs in its container" in meta["message"]
