"""Helpers for the tests of the ``evalrun`` command: the real console script, real results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: The console script installed in this environment (``pip install -e .``).
EVALRUN = str(Path(sys.executable).parent / "evalrun")


def evalrun(*args: str, cwd: Path, columns: int = 200) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EVALRUN_RESULTS"}
    env["COLUMNS"] = str(columns)
    return subprocess.run(
        [EVALRUN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def evalrun_json(*args: str, cwd: Path) -> Any:
    r = evalrun(*args, "--json", cwd=cwd)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def run_pytest(
    root: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """A real pytest session over the experiment files in ``root`` (``env``: its whole
    environment; default: this process's)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=root,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """The reason of an exit-2 error: a single line on stderr."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]
