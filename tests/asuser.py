"""Run tests again as an ordinary user (issue 19: every attack must fail as root *and* as an
ordinary user).

``ordinary_user`` (a session fixture; import it into a test module) gives a :class:`UserRun`:

* run by an ordinary user already: this process's own Python, in this checkout, unchanged;
* run as root: a user with uid >= 1000 (or ``EVALRUN_TEST_USER``), switched to with
  ``runuser`` or ``setpriv``, gets a copy of the project in a directory it owns and a venv of
  its own (``pip install -e .``, the package and its dependencies) made with a Python it can
  execute.

When no such user, tool or Python exists the fixture skips naming what is missing (and with
``EVALRUN_CI_NO_SKIPS=1`` conftest.py turns the skip into a failure).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
#: What of the project the copy needs to install and run its tests.
COPIED = ("pyproject.toml", "README.md", "LICENSE", "pytest_evalrun", "tests")
_INSTALL_TIMEOUT = 900.0


@dataclass
class UserRun:
    """Where and how to run a command as the ordinary user."""

    user: str
    uid: int
    project: Path
    python: str
    switch: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def run(
        self, argv: Sequence[str], *, timeout: float = 1800.0, extra: Mapping[str, str] = {}
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.switch, *argv],
            cwd=self.project,
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def pytest(self, *args: str, timeout: float = 1800.0) -> subprocess.CompletedProcess[str]:
        """``python -m pytest ARGS`` in the user's copy of the project."""
        return self.run(
            [self.python, "-m", "pytest", "-p", "no:cacheprovider", *args], timeout=timeout
        )


def _user() -> pwd.struct_passwd | str:
    """The ordinary user to switch to, or why there is none."""
    name = os.environ.get("EVALRUN_TEST_USER")
    if name:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            return f"EVALRUN_TEST_USER={name} is not a user here"
    for entry in sorted(pwd.getpwall(), key=lambda e: e.pw_uid):
        if 1000 <= entry.pw_uid < 60000 and not entry.pw_shell.endswith(("nologin", "false")):
            return entry
    return "no ordinary user (uid >= 1000 with a login shell) exists here"


def _switch(user: str) -> list[str] | None:
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--"]
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid", user, "--regid", user, "--init-groups", "--"]
    return None


def _python_for(switch: list[str], env: Mapping[str, str]) -> str | None:
    """A Python >= 3.10 with ``venv`` the user can run."""
    candidates = [
        os.path.realpath(os.path.join(sys.base_prefix, "bin", "python3")),
        *(shutil.which(n) or "" for n in ("python3", "python3.13", "python3.12", "python3.11")),
        "/usr/bin/python3",
        "/usr/local/bin/python3",
    ]
    check = "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))"
    for python in dict.fromkeys(c for c in candidates if c and os.path.isfile(c)):
        done = subprocess.run(
            [*switch, python, "-c", check], env=dict(env), capture_output=True, timeout=60,
            check=False,
        )  # fmt: skip
        if done.returncode == 0:
            return python
    return None


def _base_env(home: str, user: str) -> dict[str, str]:
    keep = (
        "PATH", "LANG", "LC_ALL", "TERM", "EVALRUN_CI_NO_SKIPS", "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONSTRAINT", "SSL_CERT_FILE",
        "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy",
    )  # fmt: skip
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(HOME=home, USER=user, LOGNAME=user)
    return env


def _make(tmp: Path) -> UserRun | str:
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        env = dict(os.environ)
        return UserRun(me, os.geteuid(), PROJECT, sys.executable, [], env)
    entry = _user()
    if isinstance(entry, str):
        return entry
    switch = _switch(entry.pw_name)
    if switch is None:
        return "neither runuser nor setpriv is installed (util-linux)"
    try:  # the user's own home when it has one (pip's cache there makes the install fast)
        own_home = os.stat(entry.pw_dir).st_uid == entry.pw_uid
    except OSError:
        own_home = False
    home = entry.pw_dir if own_home else str(tmp / "home")
    Path(home).mkdir(parents=True, exist_ok=True)
    project = tmp / "project"
    project.mkdir(parents=True)
    env = _base_env(home, entry.pw_name)
    for name in COPIED:
        src = PROJECT / name
        if src.is_dir():
            shutil.copytree(
                src, project / name,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", "*.egg-info"),
            )  # fmt: skip
        elif src.is_file():
            shutil.copy2(src, project / name)
    for dirpath, dirnames, filenames in os.walk(tmp):
        for name in (dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)):
            os.lchown(name, entry.pw_uid, entry.pw_gid)
    os.chmod(tmp, 0o755)
    python = _python_for(switch, env)
    if python is None:
        return f"no Python >= 3.10 with venv that user {entry.pw_name} can run"
    run = UserRun(entry.pw_name, entry.pw_uid, project, python, switch, env)
    venv = project / ".venv"
    for argv in (
        [python, "-m", "venv", str(venv)],
        # the package and its own dependencies (pytest, xdist, psutil, PyYAML: all the attack
        # files import); not the test extras (pandas, duckdb, mypy, ...: a third of the
        # fixture's time went to unpacking them)
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-e", "."],
    ):
        done = run.run(argv, timeout=_INSTALL_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed as {entry.pw_name}:\n{done.stderr}")
    run.python = str(venv / "bin" / "python")
    return run


@pytest.fixture(scope="session")
def ordinary_user() -> Iterator[UserRun]:
    """A :class:`UserRun` for an ordinary user (see the module's docstring)."""
    base = Path("/var/tmp") if os.access("/var/tmp", os.W_OK) else None
    tmp = Path(tempfile.mkdtemp(prefix="evalrun-asuser-", dir=base))
    try:
        made = _make(tmp)
        if isinstance(made, str):
            pytest.skip(f"cannot run tests as an ordinary user: {made}")
        yield made
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
