"""pytest's JUnit XML schema (``junit-10.xsd``), found without committing it to this repository.

The schema lives in pytest's own repository (``testing/example_scripts/junit-10.xsd``); its
content stays out of our commits. Tests never download anything: :func:`junit_xsd_path` looks,
in this order, at

1. ``$EVALRUN_JUNIT_XSD``, when set (a path to the file; it must exist);
2. the cache file ``~/.cache/pytest-evalrun/junit-10.xsd``.

Fill the cache once, as part of installing the test dependencies (the README's test command and
.ci/run do)::

    python tests/junit_xsd.py

which downloads pytest's sdist for the *installed* pytest version with
``python -m pip download --no-deps --no-binary :all: pytest==<version>`` and extracts the schema
into the cache (written atomically, under a file lock).

When the schema is not there, :class:`XsdUnavailable` says how to provide it; the
``junit_schema`` fixture turns that into a test *failure* (never a skip: a schema check that
silently does not run is worse than none).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

import pytest

ENV_VAR = "EVALRUN_JUNIT_XSD"
MEMBER = "testing/example_scripts/junit-10.xsd"
#: pip download of an sdist prepares its metadata (a build); allow for a slow network.
DOWNLOAD_TIMEOUT = 600


class XsdUnavailable(Exception):
    """The schema could not be found or obtained."""


#: The user's home, read when this module is imported: pytester points $HOME at a temporary
#: directory while a test runs, which would make every test download the schema again.
_HOME = Path.home()


def cache_path() -> Path:
    return _HOME / ".cache" / "pytest-evalrun" / "junit-10.xsd"


def _looks_like_the_schema(data: bytes) -> bool:
    return b"<xs:schema" in data and b'name="testsuite"' in data


def _extract(tarball: Path) -> bytes:
    with tarfile.open(tarball, "r:*") as tar:
        for member in tar.getmembers():
            # "pytest-<version>/testing/example_scripts/junit-10.xsd"
            parts = member.name.split("/", 1)
            if len(parts) == 2 and parts[1] == MEMBER and member.isfile():
                fh = tar.extractfile(member)
                if fh is not None:
                    return fh.read()
    raise XsdUnavailable(f"{tarball.name} has no {MEMBER}")


def _download(pytest_version: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="evalrun-xsd-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "--retries", "2", "--timeout", "30",
               f"pytest=={pytest_version}", "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise XsdUnavailable(f"`{' '.join(cmd)}` did not run: {exc}") from exc
        tarballs = sorted(Path(tmp).glob("pytest-*.tar.gz"))
        if proc.returncode != 0 or not tarballs:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise XsdUnavailable(
                f"`{' '.join(cmd)}` failed (exit status {proc.returncode}):\n{tail}")
        return _extract(tarballs[0])


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def junit_xsd_path() -> Path:
    """The path of pytest's ``junit-10.xsd`` (see the module docstring); raises
    :class:`XsdUnavailable` with a message saying what to do when it is not there."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise XsdUnavailable(f"${ENV_VAR} is set to {env!r}, which is not a file")
        return path
    cache = cache_path()
    if cache.is_file() and _looks_like_the_schema(cache.read_bytes()):
        return cache
    raise XsdUnavailable(f"{cache} does not exist (or is not the schema)")


def fetch() -> Path:
    """Download the schema into the cache unless it is there; the path (see the docstring)."""
    cache = cache_path()
    if cache.is_file() and _looks_like_the_schema(cache.read_bytes()):
        return cache
    from filelock import FileLock

    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache) + ".lock", timeout=DOWNLOAD_TIMEOUT + 60):
        if cache.is_file() and _looks_like_the_schema(cache.read_bytes()):
            return cache  # another process fetched it meanwhile
        pytest_version = version("pytest")
        data = _download(pytest_version)
        if not _looks_like_the_schema(data):
            raise XsdUnavailable(f"{MEMBER} of pytest {pytest_version} is not an XML schema")
        _write_atomic(cache, data)
    return cache


#: Why the schema is not there, per (env var, cache file, pytest version): every later test
#: fails at once with the same message.
_failures: dict[tuple[str | None, str, str], str] = {}


def load_junit_schema() -> object:
    """An ``xmlschema.XMLSchema`` of junit-10.xsd; fails the calling test when unavailable."""
    import xmlschema

    key = (os.environ.get(ENV_VAR), str(cache_path()), version("pytest"))
    if key not in _failures:
        try:
            path = junit_xsd_path()
        except XsdUnavailable as exc:
            _failures[key] = (
                "pytest's JUnit schema junit-10.xsd is needed to validate --junitxml output and "
                f"is not there: {exc}\nRun `python tests/junit_xsd.py` once (it downloads "
                f"pytest's sdist with pip), or set ${ENV_VAR} to the {MEMBER} of pytest's "
                "sdist."
            )
        else:
            return xmlschema.XMLSchema(str(path))
    pytest.fail(_failures[key], pytrace=False)


@pytest.fixture(scope="session")
def junit_schema() -> object:
    """Session fixture: the JUnit schema (from the cache or $EVALRUN_JUNIT_XSD)."""
    return load_junit_schema()


def main() -> int:
    try:
        print(fetch())
    except XsdUnavailable as exc:
        print(f"junit_xsd.py: pytest's junit-10.xsd could not be obtained: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
