"""Helpers for end-to-end tests: real experiment files, real agent scripts, real pytest runs."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

pytest_plugins = ["pytester"]

#: An agent script: follows "WRITE <file> <text>" lines of the prompt, can sleep, fail, etc.
AGENT = r"""
import json, os, sys, time, pathlib
prompt = pathlib.Path(os.environ["EVALRUN_PROMPT_FILE"]).read_text()
counter = os.environ.get("AGENT_COUNTER")
if counter:
    me = "/".join(os.environ["EVALRUN_" + k] for k in ("VARIANT", "TASK", "TRIAL"))
    with open(counter, "a") as fh:
        fh.write(me + "\n")
for line in prompt.splitlines():
    words = line.split(" ", 2)
    if words[0] == "WRITE":
        pathlib.Path(words[1]).write_text(words[2] + "\n")
    elif words[0] == "SLEEP" and not os.environ.get("AGENT_NO_SLEEP"):
        time.sleep(float(words[1]))
    elif words[0] == "SAY":
        print(words[1] + (" " + words[2] if len(words) > 2 else ""), flush=True)
    elif words[0] == "EXIT":
        sys.exit(int(words[1]))
    elif words[0] == "ENV":
        mine = {k: v for k, v in os.environ.items() if k.startswith(("EVALRUN_", "MY_"))}
        print(json.dumps(mine))
art = os.environ.get("EVALRUN_ARTIFACTS_DIR")
if art:
    event = {"type": "message", "role": "assistant", "content": "done"}
    pathlib.Path(art, "events.jsonl").write_text(json.dumps(event) + "\n")
    usage = {"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 7,
             "gen_ai.request.model": "m1"}
    pathlib.Path(art, "otel.jsonl").write_text(json.dumps({"attributes": usage}) + "\n")
"""

#: A verifier: passes when answer.txt says "ok".
VERIFY = "grep -q ok answer.txt"

#: The tasks of :meth:`Suite.experiment` when none are given: one the test agent passes, one
#: it fails.
GOOD_AND_BAD: list[dict[str, Any]] = [
    {"name": name, "prompt": f"WRITE answer.txt {word}", "fixture": "fixtures/basic",
     "verify": VERIFY}
    for name, word in (("good", "ok"), ("bad", "nope"))
]  # fmt: skip


class Suite:
    """Builds an experiment directory inside pytester's tmp dir."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.root = pytester.path
        (self.root / "agent.py").write_text(textwrap.dedent(AGENT))
        (self.root / "fixtures" / "basic").mkdir(parents=True)
        (self.root / "fixtures" / "basic" / "README.md").write_text("a fixture\n")
        #: A directory agents may write (counters, flags): the only place outside their
        #: workspace and artifacts the sandbox lets them write.
        self.shared = self.root / "shared"
        self.shared.mkdir()

    @property
    def agent_cmd(self) -> list[str]:
        return [sys.executable, str(self.root / "agent.py")]

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def experiment(
        self,
        name: str = "exp",
        *,
        tasks: list[dict[str, Any]] | None = None,
        variants: dict[str, Any] | None = None,
        **top: Any,
    ) -> Path:
        data: dict[str, Any] = {"experiment": name, **top}
        # Steps get a clean environment and a read-only host: the test agent's switches are
        # passed through, and shared/ is writable (counters, flags).
        data.setdefault("env_passthrough", ["AGENT_COUNTER", "AGENT_NO_SLEEP"])
        data.setdefault("sandbox", {"write": [str(self.shared)]})
        data.setdefault("defaults", {"agent": {"command": self.agent_cmd}})
        data["variants"] = variants if variants is not None else {"base": {}}
        data["tasks"] = tasks if tasks is not None else [dict(t) for t in GOOD_AND_BAD]
        path = self.root / f"{name}.eval.yaml"
        path.write_text(json.dumps(data, indent=2))  # JSON is YAML
        return path

    def results(self) -> Path:
        return self.root / "results"

    def run_dirs(self, experiment: str = "exp") -> list[Path]:
        base = self.results() / experiment
        return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def trial_dir(self, variant: str, task: str, n: int, experiment: str = "exp") -> Path:
        run = self.run_dirs(experiment)[-1]
        return run / "variants" / variant / "tasks" / task / "trials" / f"{n:03d}"

    def meta(self, variant: str, task: str, n: int = 1, experiment: str = "exp") -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            (self.trial_dir(variant, task, n, experiment) / "meta.json").read_text()
        )
        return data


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Suite:
    return Suite(pytester)


def is_dead(pid: int, timeout: float = 30.0, poll: float = 0.05) -> bool:
    """Gone, or a zombie nobody has reaped yet (dead all the same); polls up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)


def all_json_files(*roots: Path) -> Iterator[Path]:
    for root in roots:
        if root.exists():
            yield from (p for p in root.rglob("*.json") if "workspace" not in p.parts)


def assert_all_json_parse(*roots: Path) -> int:
    n = 0
    for path in all_json_files(*roots):
        json.loads(path.read_text())
        n += 1
    return n


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """With EVALRUN_CI_NO_SKIPS=1 (set by .ci/run) a skipped test fails: CI has every tool a
    test needs (Harbor, the agent CLIs, bubblewrap, Chromium), so a skip there hides a gap."""
    report = yield
    if (
        report.skipped
        and os.environ.get("EVALRUN_CI_NO_SKIPS") == "1"
        and not hasattr(report, "wasxfail")
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, but CI must have every tool a test needs: {reason}"
    return report


# -- how ``-n 2`` shares the suite out -----------------------------------------------------------
#: Test files each run whole by one xdist worker, and before every other test, longest first:
#: their tests share a module or session fixture that is expensive to build (one worker builds
#: it once, instead of each worker that gets one of its tests building its own, and a module's
#: tests split across workers rebuilding it), or they are the suite's longest tests, which
#: should not start last while the other worker idles. Every other test is a unit of its own.
WHOLE_FILES = (
    "test_gateway_runs.py",
    "test_presets_no_model.py",
    "test_attacks_as_user.py",
    "test_merge.py",
    "test_regression_gate.py",
    "test_harbor_real.py",
    "test_podman.py",
    "test_harbor_tasks.py",
    "test_install_anywhere.py",
    "test_html_report.py",
    "test_cli_read.py",
    "test_cli_export.py",
    "test_cli_width.py",
)


def _whole_file_rank(nodeid: str) -> int:
    name = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return WHOLE_FILES.index(name) if name in WHOLE_FILES else len(WHOLE_FILES)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of :data:`WHOLE_FILES` first, in that order (each file's own order kept)."""
    items.sort(key=lambda item: _whole_file_rank(item.nodeid))


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # no hook without xdist (-p no:xdist)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With xdist's default ``--dist load``: each file of :data:`WHOLE_FILES` is one unit of
    work, every other test one unit, given out in collection order as workers free up
    (xdist's ``loadgroup`` would do this, but its groups are lost with pytest 9: it renames
    ``item._nodeid``, which pytest 9 no longer reads). Another ``--dist`` is left to xdist."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WholeFiles(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid.split("::", 1)[0] if _whole_file_rank(nodeid) < len(WHOLE_FILES) \
                else nodeid

    config.option.loadscopereorder = False  # collection order: the whole files first
    return WholeFiles(config, log)
