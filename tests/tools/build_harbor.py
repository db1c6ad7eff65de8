"""Build (once) a virtual environment holding Harbor 0.25.0, to check our ``jobs/`` with Harbor.

Harbor needs Python 3.12; this script finds one (``$EVALRUN_PYTHON312``, ``python3.12`` on PATH,
or pyenv's ``versions/3.12*``), makes a venv in ``$EVALRUN_TOOLS/harbor-venv`` (default
``~/.cache/pytest-evalrun-tools``), installs ``harbor==0.25.0`` without its dependencies, then the
requirements Harbor declares (``harbor-requirements.txt`` beside this file) with litellm pinned.
Idempotent: a venv whose stamp matches is left as it is. ``tests/test_harbor_real.py`` imports
:func:`harbor_python` to find the result; CI runs this script before the tests.

Usage: ``python tests/tools/build_harbor.py [--force]``. Exit 0 when the venv is ready, 3 when no
Python 3.12 is found (printed, not an error in CI: the test then skips with that reason).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pytest_evalrun.store.pier import HARBOR_VERSION  # the Harbor whose layout we write

LITELLM_VERSION = "1.106.2"
REQUIREMENTS = Path(__file__).with_name("harbor-requirements.txt")
STAMP = f"harbor=={HARBOR_VERSION} litellm=={LITELLM_VERSION}\n"
NO_PYTHON = 3


def tools_dir() -> Path:
    """Where built tools live (``$EVALRUN_TOOLS``, else ``~/.cache/pytest-evalrun-tools``)."""
    configured = os.environ.get("EVALRUN_TOOLS")
    return Path(configured) if configured else Path.home() / ".cache" / "pytest-evalrun-tools"


def venv_dir() -> Path:
    return tools_dir() / "harbor-venv"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _is_312(python: str) -> bool:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
            capture_output=True, text=True, timeout=60, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == "True"


def _pyenv_root() -> Path | None:
    configured = os.environ.get("PYENV_ROOT")
    if configured:
        return Path(configured)
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        default = Path.home() / ".pyenv"
        return default if default.is_dir() else None
    done = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
    return Path(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else None


def find_python312() -> str | None:
    """A working Python 3.12 interpreter, or None (a pyenv shim that refuses counts as none)."""
    candidates: list[str] = []
    configured = os.environ.get("EVALRUN_PYTHON312")
    if configured:
        candidates.append(configured)
    on_path = shutil.which("python3.12")
    if on_path:
        candidates.append(on_path)
    root = _pyenv_root()
    if root is not None:
        candidates += sorted(glob.glob(str(root / "versions" / "3.12*" / "bin" / "python3.12")),
                             reverse=True)
    for candidate in candidates:
        if _is_312(candidate):
            return candidate
    return None


def harbor_python() -> Path | None:
    """The built venv's Python when its stamp says it holds this Harbor, else None."""
    venv = venv_dir()
    stamp = venv / "evalrun-stamp.txt"
    python = _venv_python(venv)
    if python.exists() and stamp.exists() and stamp.read_text() == STAMP:
        return python
    return None


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "-q", *args], check=True)


def build(force: bool = False) -> Path:
    ready = harbor_python()
    if ready is not None and not force:
        print(f"harbor venv ready: {ready.parent.parent}")
        return ready
    python312 = find_python312()
    if python312 is None:
        raise LookupError("no Python 3.12 found (python3.12 on PATH or pyenv versions/3.12*)")
    venv = venv_dir()
    started = time.monotonic()
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([python312, "-m", "venv", str(venv)], check=True)
    python = _venv_python(venv)
    _pip(python, "--no-deps", f"harbor=={HARBOR_VERSION}")
    _pip(python, "-r", str(REQUIREMENTS), f"litellm=={LITELLM_VERSION}")
    subprocess.run([str(python), "-c", "import harbor.models.job.config"], check=True)
    (venv / "evalrun-stamp.txt").write_text(STAMP)
    print(f"harbor venv built in {time.monotonic() - started:.0f} s: {venv}")
    return python


def main(argv: list[str]) -> int:
    try:
        build(force="--force" in argv)
    except LookupError as exc:
        print(f"build_harbor: {exc}; the Harbor test will skip", file=sys.stderr)
        return NO_PYTHON
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
