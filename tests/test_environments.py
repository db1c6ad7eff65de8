"""The Environment seam (issue 19): every process of every step starts through the trial's
environment, a plugin's step kind cannot start one outside it, a plugin adds an environment
with ``pytest_evalrun_environments``, and a program the sandbox cannot start is an ``error``
of kind ``sandbox`` (never the program's verdict).

Real pytest sessions with real processes (and the real bubblewrap where the test says so),
judged by what a user sees: the trial's status, error kind and message, and files."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import pytest
from conftest import Suite

from pytest_evalrun.trial.bwrapprobe import probe
from pytest_evalrun.trial.environments.local import interpreter_links

needs_bwrap = pytest.mark.skipif(
    not probe().available, reason=f"bubblewrap cannot run here: {probe().reason}"
)


def run(suite: Suite, *args: str) -> pytest.RunResult:
    return suite.pytester.runpytest("-p", "no:cacheprovider", *args)


def task(verify: object = "grep -q ok answer.txt", **extra: object) -> dict[str, object]:
    return {"name": "t", "prompt": "x", "fixture": "fixtures/basic", "verify": verify, **extra}


PLUGIN_KINDS = '''
import json, os
from pathlib import Path

PROBE = """
out=$EVALRUN_ARTIFACTS_DIR/probe.json
if cat "$1/grader.txt" >/dev/null 2>&1; then grader=READ; else grader=DENIED; fi
if [ -n "$(find "$2" -name run.json 2>/dev/null)" ]; then results=SEEN; else results=HIDDEN; fi
printf '{"pwd": "%s", "grader": "%s", "results": "%s", "pid": %s}' \\
    "$(pwd)" "$grader" "$results" "$$" > "$out"
echo ok > answer.txt
"""

def run_probe(step, ctx):
    return ctx.run(["/bin/sh", "-c", PROBE, "probe", str(ctx.experiment_dir),
                    str(ctx.experiment_dir / "results")])

def run_grade(step, ctx):
    # a verify kind: reads the grader file beside the YAML, inside its own sandbox
    return ctx.run(["/bin/sh", "-c",
                    'test "$(cat answer.txt)" = "$(cat "$0/grader.txt")"',
                    str(ctx.experiment_dir)])

def pytest_evalrun_agent_kinds():
    return {"probe": run_probe}

def pytest_evalrun_verify_kinds():
    return {"grade": run_grade}
'''


@needs_bwrap
def test_a_plugin_kind_runs_its_processes_in_the_phase_s_sandbox(suite: Suite) -> None:
    suite.write("conftest.py", PLUGIN_KINDS)
    suite.write("grader.txt", "ok\n")
    suite.experiment(
        sandbox="bwrap", defaults={"agent": {"probe": {}}}, tasks=[task({"grade": {}})]
    )
    r = run(suite)
    r.assert_outcomes(passed=1)  # the verify kind saw the grader file and the agent's answer
    meta = suite.meta("base", "t")
    assert meta["isolation"]["environment"] == "bwrap"
    probe_json = json.loads(
        (suite.trial_dir("base", "t", 1) / "artifacts" / "probe.json").read_text()
    )
    assert probe_json["pwd"] == "/tmp/workspace"
    assert probe_json["grader"] == "DENIED"  # the agent's view: no experiment directory
    assert probe_json["results"] == "HIDDEN"  # no run.json of the results root
    assert list(suite.results().rglob("run.json"))  # which is there
    assert probe_json["pid"] < 10  # a PID namespace of its own


BYPASS = '''
import sys
from pytest_evalrun.trial.process import run_step

def run_bypass(step, ctx):
    # the 0.2 way, forgetting ctx.wrap: would run unsandboxed in the real workspace
    return run_step([sys.executable, "-c", "open(%r, 'w').write('ran')" % step.value],
                    cwd=ctx.cwd, env=ctx.env, timeout=ctx.timeout, output=ctx.output)

def pytest_evalrun_agent_kinds():
    return {"bypass": run_bypass}

def pytest_evalrun_verify_kinds():
    return {"bypass": run_bypass}
'''


@pytest.mark.parametrize("mode", [pytest.param("bwrap", marks=needs_bwrap), "none"])
@pytest.mark.parametrize("role", ["agent", "verify"])
def test_a_plugin_kind_that_starts_a_process_itself_starts_nothing(
    suite: Suite, mode: str, role: str
) -> None:
    marker = suite.shared / "ran.txt"
    suite.write("conftest.py", BYPASS)
    if role == "agent":
        suite.experiment(sandbox=mode, defaults={"agent": {"bypass": str(marker)}},
                         tasks=[task()])
    else:
        suite.experiment(sandbox=mode, tasks=[task({"bypass": str(marker)})])
    r = run(suite)
    r.assert_outcomes(errors=1)
    meta = suite.meta("base", "t")
    assert meta["status"] == "error"
    assert meta["error_kind"] == ("agent_missing" if role == "agent" else "verify_missing")
    assert "ctx.run" in meta["message"]
    assert not marker.exists()


RECORDING = '''
import json
from pytest_evalrun.trial.environments.local import LocalNone

LOG = {log!r}

class Recording(LocalNone):
    """The unsandboxed environment, writing down every process it starts."""

    def run(self, call):
        with open(LOG, "a") as fh:
            fh.write(json.dumps({{"phase": call.view.phase, "argv": list(call.argv)}}) + "\\n")
        return super().run(call)

def pytest_evalrun_environments():
    return {{"none": Recording}}
'''


def test_an_environment_from_the_hook_runs_setup_agent_python_steps_and_verify(
    suite: Suite,
) -> None:
    log = suite.shared / "runs.jsonl"
    suite.write("conftest.py", RECORDING.format(log=str(log)))
    suite.write("steps.py", """
        def verify(ctx):
            assert (ctx.workspace / "answer.txt").is_file()
        """)
    suite.experiment(
        sandbox="none",
        defaults={"agent": {"command": suite.agent_cmd}, "setup": "echo set > seed.txt"},
        tasks=[{"name": "t", "prompt": "WRITE answer.txt ok", "fixture": "fixtures/basic",
                "verify": {"python": "steps:verify"}}],
    )  # fmt: skip
    r = run(suite)
    r.assert_outcomes(passed=1)
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert [x["phase"] for x in runs] == ["setup", "agent", "verify"]
    assert "pytest_evalrun.trial.pycall" in runs[2]["argv"]
    meta = suite.meta("base", "t")
    assert meta["isolation"]["environment"] == "none"


def test_an_unknown_or_unavailable_environment_is_a_sandbox_error(suite: Suite) -> None:
    suite.write(
        "conftest.py",
        """
        from pytest_evalrun.trial.environments import EnvironmentUnavailable

        def nowhere(place):
            raise EnvironmentUnavailable("the nowhere environment is switched off")

        def pytest_evalrun_environments():
            return {"none": nowhere}
        """,
    )
    suite.experiment(sandbox="none", tasks=[task()])
    r = run(suite)
    r.assert_outcomes(errors=1)
    meta = suite.meta("base", "t")
    assert meta["error_kind"] == "sandbox"
    assert "switched off" in meta["message"]


@needs_bwrap
@pytest.mark.parametrize("role", ["agent", "verify"])
@pytest.mark.parametrize("network", ["compiled starter", "python starter", False])
def test_a_program_the_sandbox_cannot_start_is_an_error_not_a_verdict(
    suite: Suite, role: str, network: str | bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a script beside the YAML whose interpreter lives where no step sees it: it exists on
    # the host, but inside the sandbox execve fails and bubblewrap exits 1 (once judged
    # "verify rejected the result"); with a network the starter in front of the command
    # execs it (and says so on its pipe), without one bubblewrap itself
    if network == "python starter":
        monkeypatch.setenv("EVALRUN_PY_STARTER", "1")
    hidden = suite.root.parent / f"elsewhere-{uuid.uuid4().hex[:8]}"
    hidden.mkdir()
    (hidden / "mysh").symlink_to("/bin/sh")
    script = suite.write("check.sh", f"#!{hidden}/mysh\nexit 0\n")
    script.chmod(0o755)
    if role == "agent":
        suite.experiment(sandbox="bwrap", defaults={"agent": {"command": [str(script)]}},
                         tasks=[task()], network=bool(network))
    else:
        suite.experiment(sandbox="bwrap", tasks=[task({"command": [str(script)]},
                                                      prompt="WRITE answer.txt ok")],
                         network=bool(network))
    r = run(suite)
    r.assert_outcomes(errors=1)
    meta = suite.meta("base", "t")
    assert meta["status"] == "error" and meta["error_kind"] == "sandbox", meta
    assert "could not start" in meta["message"]
    assert str(script) in meta["message"]


def test_every_link_from_the_interpreter_to_its_file_is_named(tmp_path: Path) -> None:
    # a venv made from a venv (Python 3.10): venv/bin/python -> outer/bin/python -> real
    real = Path(os.path.realpath(sys.executable))
    (tmp_path / "outer" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    outer = tmp_path / "outer" / "bin" / "python"
    outer.symlink_to(real)
    inner = tmp_path / "venv" / "bin" / "python"
    inner.symlink_to("../../outer/bin/python")
    assert interpreter_links(str(inner)) == (inner, outer)
    assert interpreter_links(str(real)) == ()


@needs_bwrap
def test_verify_starts_when_nothing_of_the_agent_runs_even_a_daemon_without_its_cookie(
    suite: Suite,
) -> None:
    # the agent leaves a daemon in a new session with an empty environment (no process cookie
    # to find it by) that ignores SIGTERM and keeps writing into the workspace
    marker = f"1{uuid.uuid4().int % 10**6}.5"
    daemon = (
        "trap '' TERM; while :; do echo beat >> /tmp/workspace/beat.txt; "
        f"sleep 0.01; done & exec sleep {marker}"
    )
    agent = ["setsid", "env", "-i", "/bin/sh", "-c", daemon]
    suite.write("agent.sh", f"#!/bin/sh\n{' '.join(map(repr, agent))} &\n"
                            "while [ ! -s beat.txt ]; do sleep 0.01; done\necho ok > answer.txt\n")
    (suite.root / "agent.sh").chmod(0o755)
    check = ("test -s beat.txt && a=$(wc -c < beat.txt) && sleep 0.3 && "
             "b=$(wc -c < beat.txt) && test \"$a\" = \"$b\"")
    suite.experiment(sandbox="bwrap", tasks=[task(check)],
                     defaults={"agent": {"command": [str(suite.root / "agent.sh")]}})
    r = run(suite)
    r.assert_outcomes(passed=1)  # nothing wrote to the workspace while verify ran
    alive = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p).endswith(marker)]
    assert alive == []


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def test_container_environments_are_known_without_importing_their_code() -> None:
    """The plugin knows the container environments by name without importing their code (a
    session that runs no container trial needs none of it, nor ctypes or the TOML parser
    of Harbor tasks); the names are the container module's own."""
    import subprocess

    from pytest_evalrun import plugin
    from pytest_evalrun.trial.environments.container import CONTAINERS

    assert set(plugin._CONTAINER_ENVIRONMENTS) == set(CONTAINERS)
    code = (
        "import sys, pytest_evalrun.plugin\n"
        "print(sorted(m for m in sys.modules if m.startswith("
        "('pytest_evalrun.trial.containe', 'pytest_evalrun.trial.environments.containe',"
        " 'pytest_evalrun.trial.nsforward', 'pytest_evalrun.store.pier.trial', 'ctypes',"
        " 'tomllib', 'tomli'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
