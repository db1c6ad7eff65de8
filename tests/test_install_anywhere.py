"""The plugin works wherever it is installed (issue 19): a fresh checkout under /tmp (which
every sandboxed step sees replaced by a private one), installed with ``pip install -e .``,
runs ``python:`` agents and verifiers inside the sandbox."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_evalrun.trial.bwrapprobe import probe

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not probe().available, reason=f"bubblewrap cannot run here: {probe().reason}"
    ),
]

PROJECT = Path(__file__).resolve().parent.parent
COPIED = ("pyproject.toml", "README.md", "LICENSE", "pytest_evalrun")


@pytest.fixture(scope="module")
def checkout_in_tmp() -> Iterator[Path]:
    """A copy of the project in /tmp with a venv in it and the plugin installed editable;
    yields the venv's python."""
    root = Path(tempfile.mkdtemp(prefix="evalrun-clone-", dir="/tmp"))
    try:
        clone = root / "pytest-evalrun"
        clone.mkdir()
        for name in COPIED:
            src = PROJECT / name
            if src.is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
                shutil.copytree(src, clone / name, ignore=ignore)
            elif src.is_file():
                shutil.copy2(src, clone / name)
        venv = clone / ".venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        python = venv / "bin" / "python"
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-e", str(clone)],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield python
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_python_steps_run_in_the_sandbox_from_an_editable_checkout_under_tmp(
    checkout_in_tmp: Path, tmp_path: Path
) -> None:
    python = checkout_in_tmp
    where = subprocess.run(
        [str(python), "-c", "import pytest_evalrun; print(pytest_evalrun.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert where.startswith(str(python.parent.parent.parent)), where  # the editable source
    suite = tmp_path / "suite"
    (suite / "fixtures" / "basic").mkdir(parents=True)
    (suite / "fixtures" / "basic" / "README.md").write_text("a fixture\n")
    (suite / "steps.py").write_text(
        textwrap.dedent(
            """
            def agent(ctx):
                (ctx.workspace / "answer.txt").write_text("ok\\n")

            def verify(ctx):
                assert (ctx.workspace / "answer.txt").read_text() == "ok\\n"
            """
        )
    )
    spec = {
        "experiment": "anywhere",
        "sandbox": "bwrap",
        "defaults": {"agent": {"python": "steps:agent"}},
        "variants": {"base": {}},
        "tasks": [{"name": "t", "prompt": "x", "fixture": "fixtures/basic",
                   "verify": {"python": "steps:verify"}}],
    }  # fmt: skip
    (suite / "anywhere.eval.yaml").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=suite, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "No module named" not in out
    meta = next((suite / "results").rglob("meta.json"))
    data = json.loads(meta.read_text())
    assert data["status"] == "passed", data
    assert data["isolation"]["sandbox"] == "bwrap"
