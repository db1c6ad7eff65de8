"""Verifiers hijacked by what the agent leaves (issue 19): each attack through a real pytest
session (serially and with ``-n 2``; sandboxed and not), judged by what a user sees: the
trial's status and reward in meta.json.

The agent of these tests writes its prompt into ``solution.py`` (or follows ``FILE`` lines);
the verifiers import the agent's code or run hidden tests against it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import Suite

from pytest_evalrun.trial.bwrapprobe import probe

SANDBOXES = ["auto", "none"] if probe().available else ["none"]

#: An agent that writes the files its prompt lists: blocks of "FILE <path>" then the content.
WRITER = r"""
import os, pathlib, stat
prompt = pathlib.Path(os.environ["EVALRUN_PROMPT_FILE"]).read_text()
if prompt.startswith("EXEC\n"):
    exec(prompt[5:])
for block in prompt.split("FILE ")[1:]:
    name, _, body = block.partition("\n")
    path = pathlib.Path(name.strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    if path.parent.name in ("bin", ".bin") or path.name in ("python3", "bash", "grep"):
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
"""

#: The agent's answer is wrong: an honest verifier rejects every trial below.
WRONG = "def answer():\n    return 7\n"


def files(**content: str) -> str:
    return "".join(f"FILE {name}\n{body}" for name, body in content.items())


def run(suite: Suite, xdist: bool) -> pytest.RunResult:
    return suite.pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", *(["-n", "2"] if xdist else []), "exp.eval.yaml"
    )


def statuses(suite: Suite, names: list[str]) -> dict[str, tuple[str, float | None]]:
    out = {}
    for name in names:
        meta = suite.meta("base", name)
        out[name] = (meta["status"], meta["reward"])
    return out


# --------------------------------------------------------------- python: verifiers

#: solution.py contents: what the agent's module does when the verifier imports it.
PYCALL_ATTACKS: dict[str, str] = {
    "os-exit-0": "import os\nos._exit(0)\n",
    "system-exit-0": "raise SystemExit(0)\n",
    "sys-exit-none": "import sys\nsys.exit()\n",
    "kill-self": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    "kill-parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos._exit(0)\n",
    "kill-parent-planted": (
        "import os, pathlib, signal\n"
        "(pathlib.Path(os.environ['EVALRUN_VERIFIER_DIR']) / 'reward.json').write_text("
        "'{\"reward\": 1.0}')\n"
        "for target in (os.getppid(), 0, -os.getpgid(os.getppid()), -1):\n"
        "    try:\n"
        "        os.kill(target, signal.SIGKILL)\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)\n"
    ),
    "link-in-verifier-dir": (
        "import os, pathlib\n"
        "v = pathlib.Path(os.environ['EVALRUN_VERIFIER_DIR'])\n"
        "os.symlink('/etc/passwd', v / 'passwd')\n"
    ),
    "patch-harness": (
        "import sys\n"
        "for name, mod in list(sys.modules.items()):\n"
        "    if name.startswith('pytest_evalrun'):\n"
        "        for attr, obj in list(vars(mod).items()):\n"
        "            if callable(obj) and not isinstance(obj, type) and attr != 'main':\n"
        "                setattr(mod, attr, lambda *a, **k: 0)\n"
    ),
    "fake-result-line": (
        "import os\n"
        "print(json_line := '{\"outcome\": \"return\", \"value\": true, \"reward\": 1.0}')\n"
        "print('verification passed')\n"
        "os._exit(0)\n"
    ),
    "fd-spray": (
        "import os, json\n"
        "fake = json.dumps({'outcome': 'return', 'value': True}).encode()\n"
        "for fd in range(3, 64):\n"
        "    for data in (fake, len(fake).to_bytes(4, 'big') + fake, fake + b'\\n'):\n"
        "        try:\n"
        "            os.write(fd, data)\n"
        "        except OSError:\n"
        "            pass\n"
        "os._exit(0)\n"
    ),
    "thread-exit-0": (
        "import os, threading, time\n"
        "def later():\n"
        "    time.sleep(0.5)\n"
        "    os._exit(0)\n"
        "threading.Thread(target=later).start()\n"
    ),
    "atexit-exit-0": "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    "plant-reward": (
        "import os, pathlib\n"
        "v = pathlib.Path(os.environ['EVALRUN_VERIFIER_DIR'])\n"
        "(v / 'reward.json').write_text('{\"reward\": 1.0}')\n"
        "(v / 'reward.txt').write_text('1.0')\n"
    ),
}
#: What the user must see for each attack: never ``passed``, and never unjudged: a verifier
#: the agent's module ended is a judged failure (``verify_crashed``, reward 0; contract
#: section 11).
PYCALL_EXPECTED: dict[str, set[str]] = {
    "os-exit-0": {"failed"},
    "system-exit-0": {"failed"},
    "sys-exit-none": {"failed"},
    "kill-self": {"failed"},
    "kill-parent": {"failed"},
    "kill-parent-planted": {"failed"},
    "patch-harness": {"failed"},
    "link-in-verifier-dir": {"failed"},
    "fake-result-line": {"failed"},
    "fd-spray": {"failed"},
    "thread-exit-0": {"failed"},
    "atexit-exit-0": {"failed"},
    "plant-reward": {"failed"},
}


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "n2"])
@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_python_verifier_is_not_ended_or_steered_by_the_agents_module(
    suite: Suite, sandbox: str, xdist: bool
) -> None:
    suite.write("writer.py", WRITER)
    suite.write(
        "checks.py",
        """
        def verify(ctx):
            import solution
            return solution.answer() == 42

        def reward(ctx):
            import solution
            return 1.0 if solution.answer() == 42 else 0.25
        """,
    )
    tasks = [
        {
            "name": name,
            "prompt": files(**{"solution.py": attack + WRONG}),
            "verify": {"python": "checks:reward" if name == "plant-reward" else "checks:verify"},
        }
        for name, attack in PYCALL_ATTACKS.items()
    ]
    tasks.append(
        {
            "name": "honest",
            "prompt": files(**{"solution.py": "def answer():\n    return 42\n"}),
            "verify": {"python": "checks:verify"},
        }
    )
    suite.experiment(
        defaults={"agent": {"command": [sys.executable, str(suite.root / "writer.py")]}},
        tasks=tasks,
        sandbox=sandbox,
    )
    run(suite, xdist)
    seen = statuses(suite, [*PYCALL_ATTACKS, "honest"])
    assert seen.pop("honest") == ("passed", 1.0)
    wrong = {
        name: got
        for name, got in seen.items()
        if got[0] not in PYCALL_EXPECTED[name] or got[1] == 1.0
    }
    assert wrong == {}, json.dumps(seen)
    assert seen["plant-reward"] == ("failed", 0.25)
    linked = suite.trial_dir("base", "link-in-verifier-dir", 1) / "verifier" / "passwd"
    assert linked.is_file() and not linked.is_symlink() and "/etc/passwd" in linked.read_text()
    crashed = suite.meta("base", "os-exit-0")
    assert crashed["failure_kind"] == "verify_crashed" and crashed["error_kind"] is None
    assert crashed["reward"] == 0.0
    assert "did not return" in crashed["verify_tail"]


# --------------------------------------------------------------- {pytest} and PATH

CALC_BUGGY = "def add(a, b):\n    return a - b\n"
HIDDEN_TEST = "from calc import add\n\ndef test_add():\n    assert add(2, 3) == 5\n"


PYC_AGENT = r"""
import importlib.util, marshal, os, pathlib, sys
src = pathlib.Path("calc.py")
st = src.stat()
code = compile("def add(a, b):\n    return a + b\n", str(src.resolve()), "exec")
header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
header += int(st.st_mtime).to_bytes(4, "little") + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
cache = pathlib.Path(importlib.util.cache_from_source(str(src.resolve())))
cache.parent.mkdir(exist_ok=True)
cache.write_bytes(header + marshal.dumps(code))
"""

#: name -> (files the agent leaves, verify command).  Every verify below, run honestly, fails:
#: calc.add is still wrong.
PYTEST_ATTACKS: dict[str, tuple[dict[str, str], str]] = {
    "pytest-py-hidden": (
        {"pytest.py": "import sys\nsys.exit(0)\n"},
        "cd {workspace} && {pytest} {experiment_dir}/hidden",
    ),
    "pytest-py-fixture-tests": (
        {"pytest.py": "import sys\nsys.exit(0)\n", "_pytest/__init__.py": "raise SystemExit(0)\n"},
        "cd {workspace} && {pytest} tests",
    ),
    "root-conftest-exit": (
        {"conftest.py": "import os\nos._exit(0)\n"},
        "cd {workspace} && {pytest} tests",
    ),
    "root-conftest-pass-all": (
        {
            "conftest.py": (
                "import pytest\n"
                "@pytest.hookimpl(wrapper=True)\n"
                "def pytest_runtest_makereport(item, call):\n"
                "    report = yield\n"
                "    report.outcome = 'passed'\n"
                "    report.longrepr = None\n"
                "    return report\n"
            )
        },
        "cd {workspace} && {pytest} tests",
    ),
    "changed-fixture-conftest": (
        {"tests/conftest.py": "import os\nos._exit(0)\n"},
        "cd {workspace} && {pytest} tests",
    ),
    "ini-collect-only": (
        {"pytest.ini": "[pytest]\naddopts = --collect-only -p no:terminal\n"},
        "cd {workspace} && {pytest} tests",
    ),
    "pyproject-plugin": (
        {
            "pyproject.toml": "[tool.pytest.ini_options]\naddopts = '-p evilplugin'\n",
            "evilplugin.py": "import os\nos._exit(0)\n",
        },
        "cd {workspace} && {pytest} tests",
    ),
    "test-dir-shadow": (
        {"tests/calc.py": "def add(a, b):\n    return a + b\n"},
        "cd {workspace} && {pytest} tests",
    ),
    "sitecustomize-pth": (
        {
            "sitecustomize.py": "import os\nos._exit(0)\n",
            "usercustomize.py": "import os\nos._exit(0)\n",
            "evil.pth": "import os; os._exit(0)\n",
        },
        "cd {workspace} && {pytest} {experiment_dir}/hidden",
    ),
    "script-beside-the-yaml": (
        {"pytest.py": "import sys\nsys.exit(0)\n", "conftest.py": "import os\nos._exit(0)\n"},
        "bash {experiment_dir}/run_tests.sh {pytest}",
    ),
    "fake-python3-relative-path": (
        {"node_modules/.bin/python3": "#!/bin/sh\nexit 0\n", "python3": "#!/bin/sh\nexit 0\n"},
        "python3 {experiment_dir}/check.py",
    ),
}


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "n2"])
@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_hidden_tests_run_with_the_pytest_placeholder_cannot_be_hijacked(
    suite: Suite, sandbox: str, xdist: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The user's PATH starts with an empty entry (the working directory), as `:$PATH` does.
    monkeypatch.setenv("PATH", ":" + str(Path(sys.executable).parent) + ":" + "/usr/bin:/bin")
    suite.write("writer.py", WRITER)
    fixture = suite.root / "fixtures" / "calc"
    suite.write("fixtures/calc/calc.py", CALC_BUGGY)
    suite.write("fixtures/calc/tests/test_calc.py", HIDDEN_TEST)
    suite.write("fixtures/calc/tests/conftest.py", "# the fixture's own conftest\n")
    # Hidden tests with a helper module beside them (must stay importable).
    suite.write("hidden/hidden_helper.py", "EXPECTED = 5\n")
    suite.write(
        "hidden/test_hidden.py",
        "from calc import add\nfrom hidden_helper import EXPECTED\n\n"
        "def test_add():\n    assert add(2, 3) == EXPECTED\n",
    )
    suite.write("run_tests.sh", 'cd "$EVALRUN_WORKSPACE" && "$@" -q tests\n')
    suite.write(
        "check.py",
        "import os, sys\nsys.path.append(os.getcwd())\nfrom calc import add\n"
        "sys.exit(0 if add(2, 3) == 5 else 1)\n",
    )
    tasks = [
        {
            "name": name,
            "prompt": files(**planted),
            "fixture": str(fixture.relative_to(suite.root)),
            "verify": verify,
        }
        for name, (planted, verify) in PYTEST_ATTACKS.items()
    ]
    tasks.append(
        {
            "name": "pyc-planted",
            "prompt": "EXEC\n" + PYC_AGENT,
            "fixture": "fixtures/calc",
            "verify": "cd {workspace} && {pytest} tests",
        }
    )
    honest = files(**{"calc.py": "def add(a, b):\n    return a + b\n"})
    for name, verify in (
        ("honest-hidden", "cd {workspace} && {pytest} {experiment_dir}/hidden"),
        ("honest-tests", "cd {workspace} && {pytest} tests"),
        ("honest-script", "python3 {experiment_dir}/check.py"),
        ("honest-shell-script", "bash {experiment_dir}/run_tests.sh {pytest}"),
    ):
        tasks.append({"name": name, "prompt": honest, "fixture": "fixtures/calc", "verify": verify})
    suite.experiment(
        defaults={"agent": {"command": [sys.executable, str(suite.root / "writer.py")]}},
        variants={"base": {"env": {"PATH": "node_modules/.bin:${PATH}"}}},
        tasks=tasks,
        sandbox=sandbox,
    )
    r = run(suite, xdist)
    names = [*PYTEST_ATTACKS, "pyc-planted"]
    honest_names = ["honest-hidden", "honest-tests", "honest-script", "honest-shell-script"]
    seen = statuses(suite, [*names, *honest_names])
    for name in honest_names:
        assert seen.pop(name)[0] == "passed", (name, r.stdout.str()[-3000:])
    assert {n: s for n, s in seen.items() if s[0] == "passed"} == {}, json.dumps(seen)


def test_the_pytest_placeholder_is_several_words_in_both_command_forms() -> None:
    import shlex

    from pytest_evalrun.trial.placeholders import pytest_words, render_command

    words = pytest_words("/venv/bin/python", "/tmp/my workspace", [("tests/conftest.py", "ab")])
    values = {"pytest": shlex.join(words), "workspace": "/tmp/my workspace"}
    assert render_command(["{pytest}", "-x", "{workspace}/t"], values) == [
        *words,
        "-x",
        "/tmp/my workspace/t",
    ]
    assert shlex.split(str(render_command("cd {workspace} && {pytest} -q", values))) == [
        "cd", "/tmp/my workspace", "&&", *words, "-q"
    ]  # fmt: skip
    assert words[:4] == ["/venv/bin/python", "-I", "-m", "pytest"]
    assert words[8:10] == ["--evalrun-conftest", "tests/conftest.py=ab"]
