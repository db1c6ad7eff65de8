"""The clean step environment (pytest_evalrun.trial.stepenv)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pytest_evalrun.trial.stepenv import (
    inherited_secrets,
    is_forbidden,
    looks_secret,
    step_environment,
)

INHERITED = {
    "PATH": "/usr/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C",
    "TERM": "xterm",
    "TZ": "UTC",
    "https_proxy": "http://proxy:3128",
    "NO_PROXY": "localhost",
    "HOME": "/home/me",
    "PWD": "/home/me/suite",
    "OLDPWD": "/home/me",
    "TMPDIR": "/var/tmp/me",
    "PYTEST_CURRENT_TEST": "tests/x.py::t (call)",
    "PYTEST_XDIST_WORKER": "gw0",
    "PYTEST_ADDOPTS": "-x",
    "GITHUB_TOKEN": "ghp_abcdefghijklmnop",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI",
    "ANTHROPIC_API_KEY": "sk-ant-123456",
    "AWS_REGION": "eu-west-1",
    "MY_SETTING": "kept only when passed through",
    "EVALRUN_PROCESS_COOKIE": "outer",
}


def build(**kw: object) -> dict[str, str]:
    args: dict[str, object] = {
        "inherited": INHERITED,
        "home": "/tmp/home",
        "cwd": "/tmp/workspace",
        "tmpdir": "/tmp",
    }
    args.update(kw)
    return step_environment(**args)


def test_base_only_by_default() -> None:
    env = build()
    assert env == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "TERM": "xterm",
        "TZ": "UTC",
        "https_proxy": "http://proxy:3128",
        "NO_PROXY": "localhost",
        "HOME": "/tmp/home",
        "PWD": "/tmp/workspace",
        "TMPDIR": "/tmp",
        "EVALRUN_PROCESS_COOKIE": "outer",
    }


def test_passthrough_names_and_globs_but_never_pytest() -> None:
    env = build(env_passthrough=["ANTHROPIC_API_KEY", "AWS_*", "PYTEST_*", "*PWD"])
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-123456"
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["AWS_SECRET_ACCESS_KEY"] == "wJalrXUtnFEMI"
    assert not [k for k in env if k.startswith("PYTEST_")]
    assert env["PWD"] == "/tmp/workspace"
    assert "OLDPWD" not in env and "MY_SETTING" not in env and "GITHUB_TOKEN" not in env


def test_declared_and_evalrun_win() -> None:
    env = build(
        declared={"HOME": "/declared", "MODE": "x", "PYTEST_ADDOPTS": "-q"},
        evalrun={"EVALRUN_WORKSPACE": "/tmp/workspace", "MODE": "evalrun wins"},
    )
    assert env["HOME"] == "/declared"
    assert env["PYTEST_ADDOPTS"] == "-q"  # written by the user, not leaked
    assert env["MODE"] == "evalrun wins"
    assert env["EVALRUN_WORKSPACE"] == "/tmp/workspace"


def test_no_tmpdir_given_drops_inherited() -> None:
    env = build(tmpdir=None, env_passthrough=["TMPDIR"])
    assert "TMPDIR" not in env


def test_forbidden_names() -> None:
    for name in ("PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER", "pytest_addopts", "PWD"):
        assert is_forbidden(name)
    for name in ("PATH", "MY_PWD_HELPER", "XDIST"):
        assert not is_forbidden(name)


def test_inherited_secrets() -> None:
    found = inherited_secrets(
        {**INHERITED, "GH_HOST_PAT": "abcd1234", "AUTH_ENABLED": "true", "KEYBOARD": "1"}
    )
    assert found == {
        "GITHUB_TOKEN": "ghp_abcdefghijklmnop",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI",
        "ANTHROPIC_API_KEY": "sk-ant-123456",
        "GH_HOST_PAT": "abcd1234",
    }
    assert looks_secret("GH_ENTERPRISE_HOST") and looks_secret("npm_token")
    assert not looks_secret("AWS_REGION") and not looks_secret("PATH")


def test_a_real_step_sees_only_its_environment() -> None:
    inherited = {**os.environ, "MY_SETTING": "kept only when passed through"}
    env = build(inherited=inherited, env_passthrough=["MY_*"])
    out = subprocess.run(
        [sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "PYTEST_" not in out and "ghp_" not in out
    assert "kept only when passed through" in out
    assert os.environ.get("PYTEST_CURRENT_TEST")  # negative control: pytest does set it


def test_a_python_verifier_gets_the_workspace_last_an_agent_second() -> None:
    from pytest_evalrun.trial.pycall import import_path

    env = {"EVALRUN_PYCALL_PATH": "/exp", "PYTHONPATH": "/pp1:/pp2"}
    base = ["/usr/lib/python3.11", "/venv/site-packages"]
    assert import_path("verify", base, env, "/ws") == [
        "/exp",
        "/pp1",
        "/pp2",
        "/usr/lib/python3.11",
        "/venv/site-packages",
        "/ws",
    ]
    assert import_path("agent", base, env, "/ws")[:2] == ["/exp", "/ws"]


def test_a_python_verifier_gets_pythonpath_entries_inside_the_workspace_last_too() -> None:
    """An image's ``ENV PYTHONPATH=/app`` (its workdir) must not put the agent's modules
    ahead of the standard library; in a container the module directory follows the
    experiment's."""
    from pytest_evalrun.trial.pycall import import_path

    env = {"EVALRUN_PYCALL_PATH": "/exp", "EVALRUN_PYCALL_MODULES": "/opt/evalrun/python",
           "PYTHONPATH": "/ws:/opt/lib:/ws/src:/wsx"}
    base = ["/usr/lib/python3.11"]
    assert import_path("verify", base, env, "/ws") == [
        "/exp", "/opt/evalrun/python", "/opt/lib", "/wsx", "/usr/lib/python3.11", "/ws",
        "/ws/src"]
    assert import_path("agent", base, env, "/ws") == [
        "/exp", "/opt/evalrun/python", "/ws", "/opt/lib", "/ws/src", "/wsx",
        "/usr/lib/python3.11"]


def test_a_tasks_allow_list_and_the_variants_together_allow_what_either_names() -> None:
    from pytest_evalrun.experiment.allowlist import Allow, combined, parse_allow

    def allow(*entries: str) -> tuple[Allow, ...]:
        return tuple(parse_allow(e) for e in entries)

    task = allow("pypi.org", "*.pythonhosted.org", "10.0.0.7")
    assert combined(None, task) == task
    assert combined(task, None) == task
    assert combined(None, None) is None
    assert combined(allow("api.openai.com:443", "pypi.org"), task) == allow(
        "pypi.org", "*.pythonhosted.org", "10.0.0.7", "api.openai.com:443")
    assert combined(allow("a.example"), ()) == allow("a.example")


def test_search_paths_keep_only_absolute_entries_and_the_workspace_last() -> None:
    inherited = {**INHERITED, "PATH": ":/usr/local/bin:bin:/usr/bin:/usr/bin:./x"}
    env = build(
        inherited=inherited,
        declared={
            "PATH": "node_modules/.bin:/tmp/workspace/.venv/bin:/tmp/workspace:"
            + inherited["PATH"],
            "PYTHONPATH": "src::/opt/lib:.",
        },
    )
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/tmp/workspace/.venv/bin:/tmp/workspace"
    assert env["PYTHONPATH"] == "/opt/lib"
    assert "PYTHONPATH" not in build(declared={"PYTHONPATH": "src:"})


def test_a_relative_path_entry_does_not_run_the_agents_program(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    (workspace / "node_modules" / ".bin").mkdir(parents=True)
    for fake in (workspace / "node_modules" / ".bin" / "uname", workspace / "uname"):
        fake.write_text("#!/bin/sh\necho FAKE\n")
        fake.chmod(0o755)
    env = build(
        inherited={**INHERITED, "PATH": ":/usr/bin:/bin"},
        declared={"PATH": "node_modules/.bin:${PATH}".replace("${PATH}", ":/usr/bin:/bin")},
        cwd=str(workspace),
    )
    out = subprocess.run(
        ["/bin/sh", "-c", "uname -s"], cwd=workspace, env=env, capture_output=True
    )
    assert out.stdout.decode().split() == [os.uname().sysname]
