"""``evalrun`` piped (a CI log, a file) uses the full width: no value a log reader needs is
cut; ``--width N`` fits the tables to N columns; a real terminal (a pty) still gets tables
fitted to its width."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
from pathlib import Path
from types import SimpleNamespace

import pytest
from cli_helpers import EVALRUN, run_pytest
from conftest import Suite

#: Long variant names, as a CI matrix writes them.
VARIANTS = [f"with-skills-and-the-long-system-prompt-{k}-of-the-nightly-matrix" for k in range(4)]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("width")
    suite = Suite(SimpleNamespace(path=path))  # type: ignore[arg-type]
    suite.experiment(variants={v: {} for v in VARIANTS})
    for run_id in ("r1", "r2"):
        r = run_pytest(path, "-n", "2", "--eval-run-id", run_id)
        assert r.returncode == 1, r.stdout[-3000:]
    return path


def piped(*args: str, cwd: Path, columns: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EVALRUN_RESULTS", "COLUMNS")}
    if columns is not None:
        env["COLUMNS"] = columns  # what some CI runners export
    return subprocess.run(
        [EVALRUN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


COMMANDS = [("show",), ("show", "--failed", "0"), ("runs",), ("compare", "r1", "r2")]


@pytest.mark.parametrize("columns", [None, "80"])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_piped_output_cuts_nothing(root: Path, command: tuple[str, ...], columns: str) -> None:
    r = piped(*command, cwd=root, columns=columns)
    assert r.returncode in (0, 1), r.stderr
    assert "…" not in r.stdout
    for name in VARIANTS:
        assert name in r.stdout, (name, r.stdout)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_width_option_fits_the_tables(root: Path, command: tuple[str, ...]) -> None:
    r = piped(*command, "--width", "60", cwd=root, columns=None)
    assert r.returncode in (0, 1), r.stderr
    assert "…" in r.stdout  # a column was cut to fit
    if command[0] == "show":  # the variants table fits (trial paths are never cut)
        rows = [line for line in r.stdout.splitlines() if line.startswith("with-skills")]
        assert rows and max(len(line) for line in rows) <= 60
    before = piped("--width", "60", *command, cwd=root, columns=None)
    assert before.stdout == r.stdout  # before or after the subcommand
    bad = piped(*command, "--width", "5", cwd=root, columns=None)
    assert bad.returncode == 2 and "--width" in bad.stderr


def test_a_terminal_still_gets_tables_fitted_to_its_width(root: Path) -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 72, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("EVALRUN_RESULTS", "COLUMNS")}
    proc = subprocess.Popen(
        [EVALRUN, "show"], cwd=root, env=env, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) in (0, 1)
    out = b"".join(chunks).decode()
    rows = [line for line in out.replace("\r\n", "\n").splitlines() if line.startswith("with-")]
    assert "…" in out and rows and max(len(line) for line in rows) <= 72
