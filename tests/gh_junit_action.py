"""Run the real mikepenz/action-junit-report (tests/vendor/action-junit-report, its bundled
``dist/index.js``) with node, as the GitHub Actions runner runs a ``uses:`` step, against a
GitHub API served on 127.0.0.1 that records the check runs the action creates.

What CI shows is then known exactly: the check run's name and conclusion (green ``success`` or
red ``failure``), its annotations, the workflow-command annotations (``::error``) of
``annotate_only``, the step's exit status and its outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

ACTION = Path(__file__).resolve().parent / "vendor" / "action-junit-report"
#: The ``uses:`` the recipes name, and the version vendored.
USES = "mikepenz/action-junit-report@v6"


@dataclass
class ActionRun:
    """What one step of the action did."""

    exit_code: int
    stdout: str
    #: The check runs it created (the API requests' bodies).
    check_runs: list[dict[str, Any]] = field(default_factory=list)
    #: ``core.setOutput`` values.
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def error_annotations(self) -> list[str]:
        """Workflow-command annotations (``annotate_only``): ``::error ...`` lines."""
        return [line for line in self.stdout.splitlines() if line.startswith("::error")]


def node() -> str:
    """The node executable; skips the test (naming node) when there is none."""
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is not installed (needed to run action-junit-report's code)")
    return found


class _Api(BaseHTTPRequestHandler):
    created: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path.endswith("/check-runs"):
            self.server.created.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(201)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"id": 1, "html_url": "http://127.0.0.1/run/1"}).encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _github_api() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    server.created = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.created  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _defaults() -> dict[str, str]:
    """The inputs' defaults from action.yml (the runner passes them; expressions left out)."""
    spec = yaml.safe_load((ACTION / "action.yml").read_text())
    return {
        name: str(value["default"])
        for name, value in spec["inputs"].items()
        if "default" in value and "${{" not in str(value["default"])
    }


def _outputs(path: Path) -> dict[str, str]:
    """``name<<DELIMITER`` ... ``DELIMITER`` blocks of $GITHUB_OUTPUT."""
    out: dict[str, str] = {}
    lines = path.read_text().splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        name, _, delimiter = lines[i].partition("<<")
        j = lines.index(delimiter, i + 1)
        out[name] = "\n".join(lines[i + 1 : j])
        i = j + 1
    return out


def run_action(inputs: Mapping[str, Any], cwd: Path) -> ActionRun:
    """One ``uses: mikepenz/action-junit-report`` step with ``with: inputs``, in ``cwd`` (the
    workspace, where ``report_paths`` globs are matched)."""
    exe = node()
    work = cwd / ".action-junit-report"
    work.mkdir(exist_ok=True)
    with _github_api() as (url, created):
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(work)}
        for name, value in {**_defaults(), **inputs, "token": "test-token"}.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            env[f"INPUT_{name.replace(' ', '_').upper()}"] = text
        env.update(
            GITHUB_ACTIONS="true",
            GITHUB_API_URL=url,
            GITHUB_SERVER_URL="http://127.0.0.1",
            GITHUB_REPOSITORY="owner/repo",
            GITHUB_SHA="0" * 40,
            GITHUB_REF="refs/heads/main",
            GITHUB_EVENT_NAME="workflow_dispatch",
            GITHUB_JOB="evals",
            GITHUB_WORKSPACE=str(cwd),
            GITHUB_OUTPUT=str(work / "output"),
            GITHUB_STEP_SUMMARY=str(work / "step-summary.md"),
        )
        (work / "output").write_text("")
        (work / "step-summary.md").write_text("")
        done = subprocess.run(
            [exe, str(ACTION / "dist" / "index.js")],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        runs = list(created)
    return ActionRun(done.returncode, done.stdout + done.stderr, runs, _outputs(work / "output"))
