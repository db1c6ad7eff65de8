"""``evalrun gc`` and ``evalrun check`` on the trees an agent leaves: a directory 3,000 levels
deep, FIFOs, sockets, links out of the tree, names that are not UTF-8 or carry escape
sequences, directories without permissions (as a user who is not root, since root ignores
permissions) and a subtree the user cannot delete. Both finish, tell the truth and never report
deleted what is still there."""

from __future__ import annotations

import atexit
import json
import os
import pwd
import shutil
import site
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_helpers import evalrun, run_pytest
from conftest import VERIFY, Suite

import pytest_evalrun

DEPTH = 3000
ESC_NAME = "esc-\x1b]0;pwned\x07-\x1b[2J-name"
BAD_UTF8 = os.fsdecode(b"bad-\xff\xfe-name")


def make_deep(base: Path, depth: int = DEPTH, owner: pwd.struct_passwd | None = None) -> None:
    """``base/d/d/.../d/bottom.txt``, ``depth`` levels: longer than PATH_MAX, so made with
    paths relative to directory descriptors (and given to ``owner``)."""
    flags = os.O_RDONLY | os.O_DIRECTORY
    fd = os.open(base, flags)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", flags, dir_fd=fd)
            if owner is not None:
                os.fchown(child, owner.pw_uid, owner.pw_gid)
            os.close(fd)
            fd = child
        out = os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, b"the bottom\n")
        if owner is not None:
            os.fchown(out, owner.pw_uid, owner.pw_gid)
        os.close(out)
    finally:
        os.close(fd)


@pytest.fixture(autouse=True)
def no_deep_tree_left(suite: Suite) -> Iterator[None]:
    """Whatever happens, no 3,000-level tree outlives the test: pytest's own clean-up of old
    temporary directories (shutil.rmtree) would end in a RecursionError on it."""
    yield
    for deep in suite.root.glob("results/*/*/variants/*/tasks/*/trials/*/workspace/d"):
        subprocess.run(["rm", "-rf", str(deep)], check=False)


def make_odd(base: Path, outside: Path) -> None:
    """A FIFO, a socket, names that are not UTF-8 or hold escape sequences, and links out."""
    base.mkdir(parents=True, exist_ok=True)
    os.mkfifo(base / "fifo")
    here = os.getcwd()
    os.chdir(base)  # a socket's path is limited to 108 bytes: bind it by a relative name
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind("sock")
    finally:
        os.chdir(here)
    (base / BAD_UTF8).write_text("x")
    (base / ESC_NAME).mkdir()
    (base / ESC_NAME / "new\nline").write_text("x")
    (base / "link-out").symlink_to(outside)
    (base / "link-file").symlink_to(outside / "keep.txt")
    (base / "loop").symlink_to(base)


def two_runs(suite: Suite) -> Path:
    """r1 (old) and r2 (new) of a one-trial experiment; returns r1's trial directory."""
    suite.experiment(
        tasks=[{"name": "good", "prompt": "WRITE answer.txt ok", "fixture": "fixtures/basic",
                "verify": VERIFY}]
    )  # fmt: skip
    for run_id in ("r1", "r2"):
        r = run_pytest(suite.root, "--eval-run-id", run_id)
        assert r.returncode == 0, r.stdout[-3000:]
    return trial_of(suite.results(), "r1")


def trial_of(results: Path, run_id: str) -> Path:
    return results / "exp" / run_id / "variants" / "base" / "tasks" / "good" / "trials" / "001"


def outside_dir(root: Path) -> Path:
    outside = root / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the run's")
    return outside


def assert_inert(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text
    text.encode("utf-8")  # no lone surrogate (a name that is not UTF-8) printed raw


def run_ids(results: Path, cwd: Path, as_user: list[str] | None = None) -> list[str]:
    args = ("runs", "--results", str(results), "--json")
    r = run_evalrun(args, cwd, as_user)
    assert r.returncode == 0, r.stderr
    return sorted(d["run_id"] for d in json.loads(r.stdout))


def run_evalrun(
    args: tuple[str, ...], cwd: Path, as_user: list[str] | None
) -> subprocess.CompletedProcess[str]:
    if as_user is None:
        return evalrun(*args, cwd=cwd)
    return subprocess.run(
        [*as_user, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_gc_deletes_a_3000_level_tree_fifos_sockets_and_odd_names(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = two_runs(suite)
    outside = outside_dir(suite.root)
    make_deep(old / "workspace")
    make_odd(old / "workspace" / "odd", outside)
    make_odd(old / "artifacts" / "odd", outside)

    r = evalrun("gc", "--keep", "1", cwd=suite.root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "deleted exp/r1" in r.stdout and "could not" not in r.stdout
    assert_inert(r.stdout + r.stderr)
    assert not (suite.results() / "exp" / "r1").exists()
    assert (outside / "keep.txt").read_text() == "not the run's"  # links were not followed
    assert run_ids(suite.results(), suite.root) == ["r2"]


# --------------------------------------------------------------------- as a user, not root


def _user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("needs root to hand a tree to another user (runuser)")
    if shutil.which("runuser") is None:
        pytest.skip("runuser not found (util-linux)")
    for name in ("cloudsdk", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.skip("no user 'cloudsdk' or 'nobody' to run evalrun as")


#: A copy of this interpreter's installation that other users may run (made once, when the
#: interpreter lives where they cannot reach it: pyenv's under a private /root).
_COPIES: dict[str, Path] = {}


def _reachable_copy() -> Path | None:
    """``bin/pythonX.Y`` of a copy of ``sys.base_prefix`` in a directory every user reaches
    (its site-packages and tests left out), removed when the session ends."""
    if "copy" not in _COPIES:
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        base = Path(tempfile.mkdtemp(prefix="evalrun-python-"))
        try:
            shutil.copytree(
                sys.base_prefix, base / "python", symlinks=True,
                ignore=shutil.ignore_patterns("site-packages", "test", "tests", "idlelib"),
            )  # fmt: skip
        except OSError:
            shutil.rmtree(base, ignore_errors=True)
            return None
        subprocess.run(["chmod", "-R", "a+rX", str(base)], check=False)
        atexit.register(shutil.rmtree, base, True)
        _COPIES["copy"] = base / "python" / "bin" / f"python{version}"
    return _COPIES["copy"]


def evalrun_as(user: pwd.struct_passwd) -> list[str]:
    """The evalrun command line run as ``user``: a Python interpreter of the same version it
    may execute (this one, the system's, or a copy of this one's installation where the user
    cannot reach it), with this checkout and its dependencies on PYTHONPATH."""
    package_parent = str(Path(pytest_evalrun.__file__).resolve().parent.parent)
    path = os.pathsep.join([package_parent, *site.getsitepackages()])
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates: list[str | Callable[[], Path | None]] = [
        sys.executable, f"/usr/bin/python{version}", "/usr/bin/python3", _reachable_copy,
    ]  # fmt: skip
    for candidate in candidates:
        python = candidate if isinstance(candidate, str) else candidate()
        if python is None:
            continue
        env = ["env", f"PYTHONPATH={path}"]
        if not isinstance(candidate, str):  # its libpython is in the copy too
            env.append(f"LD_LIBRARY_PATH={Path(python).parent.parent / 'lib'}")
        command = ["runuser", "-u", user.pw_name, "--", *env, str(python)]
        probe = subprocess.run(
            [*command, "-c", "import sys, pytest_evalrun.cli.main; print(sys.version_info[:2])"],
            capture_output=True, text=True, timeout=60, cwd="/",
        )  # fmt: skip
        if probe.returncode == 0 and probe.stdout.strip() == str(sys.version_info[:2]):
            return [*command, "-m", "pytest_evalrun.cli.main"]
    pytest.skip(f"no Python {version} that user {user.pw_name} may run")


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory other users may reach (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="evalrun-as-user-"))
    yield base
    subprocess.run(["chmod", "-R", "u+rwx", str(base)], check=False)
    subprocess.run(["rm", "-rf", str(base)], check=False)  # 3,000 levels: not shutil.rmtree


def hand_over(suite: Suite, user: pwd.struct_passwd, base: Path) -> Path:
    """A copy of the results and jobs in a directory the user owns (and may reach)."""
    os.chmod(base, 0o755)
    for parent in base.parents:  # the user must reach it
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            pytest.skip(f"{parent} is not reachable by other users")
    shutil.copytree(suite.results(), base / "results", symlinks=True)
    shutil.copytree(suite.root / "jobs", base / "jobs", symlinks=True)
    for path in [base, *base.rglob("*")]:
        os.lchown(path, user.pw_uid, user.pw_gid)
    return base


def test_gc_as_a_user_tells_what_it_could_not_delete_and_finishes_later(
    suite: Suite, reachable: Path
) -> None:
    user = _user()
    two_runs(suite)
    base = hand_over(suite, user, reachable)
    command = evalrun_as(user)
    old = trial_of(base / "results", "r1")
    ws = old / "workspace"
    # the agent's own directories, made unreadable and unwritable: gc takes them back
    (ws / "locked" / "inner").mkdir(parents=True)
    (ws / "locked" / "inner" / "f.txt").write_text("x")
    (ws / "readonly").mkdir()
    (ws / "readonly" / "f.txt").write_text("x")
    for path in [ws, *ws.rglob("*")]:
        if not path.is_symlink():
            os.lchown(path, user.pw_uid, user.pw_gid)
    make_deep(ws, owner=user)
    os.chmod(ws / "locked" / "inner", 0)
    os.chmod(ws / "locked", 0)
    os.chmod(ws / "readonly", 0o500)
    # a directory the user cannot delete from (another owner's)
    (ws / "foreign").mkdir()
    (ws / "foreign" / "f.txt").write_text("x")
    os.chmod(ws / "foreign", 0o755)

    results, jobs = str(base / "results"), str(base / "jobs")
    args = ("gc", "--keep", "1", "--results", results, "--jobs", jobs)
    r = run_evalrun(args, base, command)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "deleted exp/r1" not in r.stdout
    assert "could not delete exp/r1" in r.stdout
    assert "foreign" in r.stdout
    assert_inert(r.stdout)
    assert (base / "results" / "exp" / "r1" / "run.json").is_file()  # still a run
    assert not (ws / "locked").exists() and not (ws / "readonly").exists()
    assert run_ids(base / "results", base, command) == ["r1", "r2"]

    data = json.loads(run_evalrun((*args, "--json"), base, command).stdout)
    assert [d["run_id"] for d in data["not_deleted"]] == ["r1"] and data["deleted"] == []
    assert any("foreign" in left["path"] for left in data["not_deleted"][0]["left"])

    os.lchown(ws / "foreign", user.pw_uid, user.pw_gid)  # the owner fixes it: gc finishes
    again = run_evalrun(args, base, command)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "deleted exp/r1" in again.stdout
    assert not (base / "results" / "exp" / "r1").exists()
    assert run_ids(base / "results", base, command) == ["r2"]


def test_check_finishes_and_names_fifos_sockets_unreadable_and_odd_directories(
    suite: Suite, reachable: Path
) -> None:
    user = _user()
    two_runs(suite)
    base = hand_over(suite, user, reachable)
    command = evalrun_as(user)
    results = base / "results"
    new = trial_of(results, "r2")
    make_deep(new / "workspace")
    (new / "metrics.json").unlink(missing_ok=True)
    os.mkfifo(new / "metrics.json")  # a reader that opens it waits for a writer forever
    variant_json = results / "exp" / "r2" / "variants" / "base" / "variant.json"
    variant_json.unlink()
    here = os.getcwd()
    os.chdir(variant_json.parent)
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind("variant.json")
    finally:
        os.chdir(here)
    odd = results / "exp" / f"{BAD_UTF8}{ESC_NAME}"
    odd.mkdir()
    tasks = results / "exp" / "r1" / "variants" / "base" / "tasks"
    for path in [new / "metrics.json", variant_json, odd]:
        os.lchown(path, user.pw_uid, user.pw_gid)
    os.chmod(tasks, 0)

    args = ("check", "--results", str(results), "--jobs", str(base / "jobs"))
    r = run_evalrun(args, base, command)  # 0.2.0: blocked on the FIFO until the timeout
    assert r.returncode == 1, r.stdout + r.stderr
    assert_inert(r.stdout + r.stderr)
    lines = r.stdout.splitlines()

    def line_of(fragment: str) -> str:
        found = [line for line in lines if fragment in line]
        assert found, (fragment, r.stdout)
        return found[0]

    assert "FIFO" in line_of("r2/variants/base/tasks/good/trials/001/metrics.json")
    assert "socket" in line_of("r2/variants/base/variant.json")
    assert "unreadable" in line_of("r1/variants/base/tasks")
    assert "not checked" in line_of("r1/variants/base/tasks/good/trials/001")
    assert "run.json" in line_of("\\udcff\\udcfe-nameesc-\\x1b]0;pwned\\x07")

    data = json.loads(run_evalrun((*args, "--json"), base, command).stdout)
    paths = [p["path"] for p in data["problems"]]
    assert any(p.endswith("metrics.json") for p in paths)
    assert any(ESC_NAME in p for p in paths)  # JSON keeps the name exactly
