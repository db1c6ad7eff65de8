"""Tests for pytest_evalrun.trial.workspace: fixture copy, git snapshot, diff."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from pytest_evalrun.trial import git as gitmod
from pytest_evalrun.trial import workspace as workspace_mod
from pytest_evalrun.trial.workspace import (
    SNAPSHOT_REF,
    WorkspaceError,
    prepare_workspace,
    read_snapshot,
    remove_session_templates,
    session_templates,
    workspace_diff,
)

GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "agent",
    "GIT_AUTHOR_EMAIL": "agent@example.com",
    "GIT_COMMITTER_NAME": "agent",
    "GIT_COMMITTER_EMAIL": "agent@example.com",
}


def agent_git(ws: Path, *args: str) -> str:
    """Run git in the workspace the way an agent would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_ENV)
    proc = subprocess.run(
        ["git", *args], cwd=ws, env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout


@pytest.fixture
def fixture_dir(tmp_path: Path) -> Path:
    fx = tmp_path / "fixture"
    (fx / "src").mkdir(parents=True)
    (fx / "README.md").write_text("# demo\n")
    (fx / "src" / "main.c").write_text("int main(void) { return 1; }\n")
    (fx / "src" / "old.txt").write_text("remove me\n")
    (fx / "logo.bin").write_bytes(bytes(range(256)) * 4)
    check = fx / "check.sh"
    check.write_text("#!/bin/sh\nexit 0\n")
    check.chmod(0o755)
    (fx / "link").symlink_to("README.md")
    # the fixture's own repository must not be copied
    (fx / ".git").mkdir()
    (fx / ".git" / "HEAD").write_text("ref: refs/heads/fixture-own\n")
    (fx / ".git" / "marker").write_text("fixture git dir\n")
    return fx


def test_copy_and_snapshot(fixture_dir: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    sha = prepare_workspace(fixture_dir, ws).sha
    assert len(sha) == 40
    assert read_snapshot(ws) == sha
    assert (ws / "src" / "main.c").read_text() == "int main(void) { return 1; }\n"
    assert (ws / "logo.bin").read_bytes() == bytes(range(256)) * 4
    assert os.access(ws / "check.sh", os.X_OK)
    assert stat.S_IMODE((ws / "check.sh").stat().st_mode) == 0o755
    assert (ws / "link").is_symlink()
    assert os.readlink(ws / "link") == "README.md"
    assert not (ws / ".git" / "marker").exists()
    # a clean checkout for the agent
    assert agent_git(ws, "status", "--porcelain") == ""
    assert agent_git(ws, "rev-parse", "HEAD").strip() == sha
    assert agent_git(ws, "rev-parse", SNAPSHOT_REF).strip() == sha
    files = set(agent_git(ws, "ls-files").split())
    assert files == {"README.md", "check.sh", "link", "logo.bin", "src/main.c", "src/old.txt"}
    assert "100755 " in agent_git(ws, "ls-files", "-s", "check.sh")
    assert workspace_diff(ws) == ""
    agent_git(ws, "fsck", "--strict", "--no-progress")
    log = agent_git(ws, "log", "--format=%an <%ae>|%s")
    assert log == "pytest-evalrun <evalrun@localhost>|evalrun: fixture snapshot\n"
    # deterministic: the same fixture gives the same snapshot
    assert prepare_workspace(fixture_dir, tmp_path / "ws2").sha == sha


def test_empty_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "empty"
    sha = prepare_workspace(None, ws).sha
    assert ws.is_dir()
    assert read_snapshot(ws) == sha
    assert workspace_diff(ws) == ""
    (ws / "new.txt").write_text("x\n")
    assert "+x" in workspace_diff(ws)


def test_diff_modified_new_deleted_binary(fixture_dir: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    sha = prepare_workspace(fixture_dir, ws).sha
    (ws / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (ws / "src" / "old.txt").unlink()
    (ws / "src" / "new.py").write_text("print('hi')\n")
    (ws / "logo.bin").write_bytes(b"\x00\xff" * 300)
    (ws / "blob.dat").write_bytes(bytes(range(256)))
    (ws / "README.md").chmod(0o755)
    index_before = (ws / ".git" / "index").read_bytes()

    diff = workspace_diff(ws, sha)
    assert "diff --git a/src/main.c b/src/main.c" in diff
    assert "-int main(void) { return 1; }" in diff
    assert "+int main(void) { return 0; }" in diff
    assert "deleted file mode 100644" in diff and "-remove me" in diff
    assert "new file mode 100644" in diff and "+print('hi')" in diff
    assert "diff --git a/logo.bin b/logo.bin" in diff
    assert "diff --git a/blob.dat b/blob.dat" in diff
    assert diff.count("GIT binary patch") == 2
    assert "old mode 100644\nnew mode 100755" in diff
    # the workspace is left as the agent left it
    assert (ws / ".git" / "index").read_bytes() == index_before
    assert (ws / "src" / "new.py").exists()
    assert "?? src/new.py" in agent_git(ws, "status", "--porcelain")

    # the patch applies to a fresh copy of the fixture and reproduces the workspace
    check = tmp_path / "check"
    prepare_workspace(fixture_dir, check)
    (tmp_path / "p.diff").write_text(diff)
    agent_git(check, "apply", "--binary", str(tmp_path / "p.diff"))
    assert (check / "logo.bin").read_bytes() == b"\x00\xff" * 300
    assert (check / "blob.dat").read_bytes() == bytes(range(256))
    assert not (check / "src" / "old.txt").exists()


def test_agent_commits_do_not_hide_changes(fixture_dir: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    prepare_workspace(fixture_dir, ws)
    (ws / "src" / "main.c").write_text("fixed\n")
    (ws / "added.txt").write_text("added\n")
    agent_git(ws, "add", "-A")
    agent_git(ws, "commit", "-qm", "agent fix")
    (ws / "later.txt").write_text("later\n")
    agent_git(ws, "checkout", "-qb", "other")
    agent_git(ws, "config", "diff.noprefix", "true")
    agent_git(ws, "gc", "-q")  # packs objects and refs
    assert agent_git(ws, "status", "--porcelain") == "?? later.txt\n"
    # a hostile repository config must not run anything when we diff
    agent_git(ws, "config", "core.fsmonitor", f"touch {tmp_path}/PWNED &&")

    diff = workspace_diff(ws)  # snapshot from refs/evalrun/snapshot (packed by gc)
    assert "+fixed" in diff
    assert "diff --git a/added.txt b/added.txt" in diff
    assert "diff --git a/later.txt b/later.txt" in diff
    assert not (tmp_path / "PWNED").exists()


def test_gitignore_honoured(tmp_path: Path) -> None:
    fx = tmp_path / "fx"
    fx.mkdir()
    (fx / ".gitignore").write_text("build/\n")
    (fx / "a.txt").write_text("a\n")
    ws = tmp_path / "ws"
    prepare_workspace(fx, ws)
    (ws / "build").mkdir()
    (ws / "build" / "out.o").write_bytes(b"\x7fELF")
    (ws / "a.txt").write_text("b\n")
    diff = workspace_diff(ws)
    assert "a.txt" in diff
    notes, _, patch = diff.partition("diff --git")
    assert "build/" not in patch and "out.o" not in patch
    # not shown, but named: an agent's .gitignore cannot hide a file silently
    assert "ignored by a .gitignore: build/" in notes


def test_odd_workspaces_never_raise(fixture_dir: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    sha = prepare_workspace(fixture_dir, ws).sha
    assert workspace_diff(tmp_path / "missing").startswith("# evalrun:")
    assert workspace_diff(ws, "0" * 40).startswith("# evalrun:")
    assert workspace_diff(ws, "--output=/tmp/x").startswith("# evalrun:")
    snapshot = prepare_workspace(fixture_dir, tmp_path / "ws2")
    shutil.rmtree(ws / ".git")
    note = workspace_diff(ws, sha)
    assert note.startswith("# evalrun:") and ".git" in note
    assert workspace_diff(ws).startswith("# evalrun:")
    # The snapshot prepare_workspace returned keeps its objects outside the workspace: an
    # agent that removes .git (or replaces it by a file) does not blank its own diff.
    ws2 = tmp_path / "ws2"
    shutil.rmtree(ws2 / ".git")
    (ws2 / ".git").write_text("gitdir: /nowhere\n")
    (ws2 / "added.txt").write_text("new\n")
    diff = workspace_diff(ws2, snapshot)
    assert "+++ b/added.txt" in diff and "gitdir" not in diff


def test_missing_fixture_and_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WorkspaceError, match="fixture directory not found"):
        prepare_workspace(tmp_path / "nope", tmp_path / "ws")
    ws = tmp_path / "ws3"
    prepare_workspace(None, ws)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(WorkspaceError, match="git was not found on PATH"):
        prepare_workspace(None, tmp_path / "ws2")
    assert "git was not found" in workspace_diff(ws)


def test_user_git_environment_ignored(
    fixture_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A GIT_DIR leaking in from the environment (e.g. pytest run from a git hook) must not
    # redirect the snapshot into another repository.
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "elsewhere-index"))
    ws = tmp_path / "ws"
    sha = prepare_workspace(fixture_dir, ws).sha
    assert not (tmp_path / "elsewhere").exists()
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_INDEX_FILE")
    assert agent_git(ws, "rev-parse", "HEAD").strip() == sha


# -- the per-process fixture templates ---------------------------------------------------------


@pytest.fixture
def git_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every git process pytest-evalrun's workspace code starts, by argument list."""
    calls: list[list[str]] = []
    real = gitmod.run_git

    def counting(git: str, args: list[str], **kwargs: Any) -> Any:
        calls.append(args)
        return real(git, args, **kwargs)

    monkeypatch.setattr(gitmod, "run_git", counting)
    return calls


def test_second_copy_of_a_fixture_runs_no_git(
    fixture_dir: Path, tmp_path: Path, git_calls: list[list[str]]
) -> None:
    first = prepare_workspace(fixture_dir, tmp_path / "ws1")
    assert [c[0] for c in git_calls] == ["add", "write-tree"]
    git_calls.clear()
    second = prepare_workspace(fixture_dir, tmp_path / "ws2")
    ws = tmp_path / "ws3"
    third = prepare_workspace(fixture_dir, ws)
    assert git_calls == []
    assert first.sha == second.sha == third.sha == read_snapshot(ws)
    # what the agent finds is what git would have made: same entries, a clean tree whose
    # index stat data are exact (diff-files does not refresh: stale stat data show up there)
    assert agent_git(ws, "ls-files", "-s") == agent_git(tmp_path / "ws1", "ls-files", "-s")
    agent_git(ws, "diff-files", "--quiet")
    assert agent_git(ws, "status", "--porcelain") == ""
    assert agent_git(ws, "rev-parse", "HEAD", SNAPSHOT_REF).split() == [third.sha] * 2
    agent_git(ws, "fsck", "--strict", "--no-progress")
    assert third.index == (ws / ".git" / "index").read_bytes()
    # the agent can use its repository as usual
    (ws / "src" / "main.c").write_text("changed\n")
    agent_git(ws, "commit", "-qam", "agent")
    assert workspace_diff(ws, third).count("diff --git") == 1
    # negative control: the index of another copy has stale stat data for this one
    ws4 = tmp_path / "ws4"
    prepare_workspace(fixture_dir, ws4)
    shutil.copy(tmp_path / "ws1" / ".git" / "index", ws4 / ".git" / "index")
    stale = subprocess.run(["git", "diff-files", "--quiet"], cwd=ws4, env={**os.environ, **GIT_ENV})
    assert stale.returncode == 1


def test_changed_fixture_is_snapshotted_again(
    fixture_dir: Path, tmp_path: Path, git_calls: list[list[str]]
) -> None:
    for i in range(2):
        old = prepare_workspace(fixture_dir, tmp_path / f"ws{i}")
    main_c = fixture_dir / "src" / "main.c"
    before = main_c.stat()
    main_c.write_text("int main(void) { return 7; }\n")  # same size
    os.utime(main_c, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime too
    git_calls.clear()
    new = prepare_workspace(fixture_dir, tmp_path / "ws-new")
    assert git_calls, "the template of the old fixture was used"
    assert new.sha != old.sha
    assert "return 7" in agent_git(tmp_path / "ws-new", "show", "HEAD:src/main.c")
    (fixture_dir / "extra.txt").write_text("x\n")
    assert prepare_workspace(fixture_dir, tmp_path / "ws-extra").sha not in (old.sha, new.sha)


def test_diff_from_template_snapshot_sees_every_change(
    fixture_dir: Path, tmp_path: Path
) -> None:
    prepare_workspace(fixture_dir, tmp_path / "warm")
    ws = tmp_path / "ws"
    snap = prepare_workspace(fixture_dir, ws)
    # changed at once (same tick as the copy and its index), same size
    (ws / "README.md").write_text("# DEMO\n")
    (ws / "src" / "old.txt").unlink()
    (ws / "new.txt").write_text("new\n")
    (ws / "check.sh").chmod(0o644)
    # the agent's own index cannot hide a change from the diff
    agent_git(ws, "update-index", "--assume-unchanged", "README.md")
    (ws / ".git" / "index").write_bytes(b"garbage")
    diff = workspace_diff(ws, snap)
    assert "+# DEMO" in diff
    assert "deleted file mode 100644" in diff
    assert "+new" in diff
    assert "old mode 100755\nnew mode 100644" in diff
    assert diff == workspace_diff(ws, snap.sha)  # the same as without the seed index


def test_diff_leaves_nothing_for_the_next(fixture_dir: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    snap = prepare_workspace(fixture_dir, ws)
    (ws / "big.bin").write_bytes(os.urandom(4096))
    assert "big.bin" in workspace_diff(ws, snap)
    shadow = workspace_mod._SCRATCH.diff_git_dir()
    assert sorted(p.name for p in (shadow / "objects").iterdir()) == []
    assert not (shadow / "index").exists()
    ws2 = tmp_path / "ws2"
    snap2 = prepare_workspace(fixture_dir, ws2)
    assert workspace_diff(ws2, snap2) == ""


def test_killed_process_scratch_is_removed(fixture_dir: Path, tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from pytest_evalrun.trial.workspace import prepare_workspace, _SCRATCH\n"
        "for i in range(1):\n"
        "    prepare_workspace(Path(sys.argv[1]), Path(sys.argv[2]) / str(i))\n"
        "print(_SCRATCH.directory(), flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(fixture_dir), str(tmp_path)],
        capture_output=True, text=True,
    )
    assert proc.returncode == -9
    orphan = Path(proc.stdout.strip())
    assert (orphan / "templates").is_dir()  # killed: no exit handler ran
    # a finished process removes its own; the next process removes the orphan
    proc = subprocess.run(
        [sys.executable, "-c", code.replace("os.kill(os.getpid(), 9)", ""),
         str(fixture_dir), str(tmp_path / "b")],
        capture_output=True, text=True, check=True,
    )
    assert not orphan.exists()
    assert not Path(proc.stdout.strip()).exists()


def test_templates_shared_between_processes(fixture_dir: Path, tmp_path: Path) -> None:
    store = session_templates("0123456789abcdef")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pytest_evalrun.trial import git\n"
        "from pytest_evalrun.trial.workspace import prepare_workspace\n"
        "calls = []\n"
        "real = git.run_git\n"
        "git.run_git = lambda *a, **k: calls.append(a[1]) or real(*a, **k)\n"
        "print(prepare_workspace(Path(sys.argv[1]), Path(sys.argv[2]),"
        " templates=Path(sys.argv[3])).sha, len(calls))\n"
    )
    try:
        outputs = [
            subprocess.run(
                [sys.executable, "-c", code, str(fixture_dir), str(tmp_path / f"ws{i}"),
                 str(store)],
                capture_output=True, text=True, check=True,
            ).stdout.split()
            for i in range(3)
        ]
        shas = {sha for sha, _ in outputs}
        assert len(shas) == 1
        # the first process snapshots with git and leaves a template; the others use it
        assert [int(n) for _, n in outputs] == [2, 0, 0]
        template = next(p for p in store.iterdir() if not p.name.startswith("."))
        assert sorted(p.name for p in template.iterdir()) == ["index", "objects", "sha"]
        packs = template / "objects" / "pack"
        assert sorted(p.suffix for p in packs.iterdir()) == [".idx", ".pack"]
        agent_git(tmp_path / "ws2", "fsck", "--strict", "--no-progress")
        agent_git(tmp_path / "ws2", "verify-pack", *map(str, (tmp_path / "ws2" / ".git" /
                  "objects" / "pack").glob("*.idx")))
    finally:
        remove_session_templates(store)
    assert not store.exists()
    # a template remembered in memory whose files are gone: the copy is snapshotted with git
    prepare_workspace(fixture_dir, tmp_path / "a1", templates=store)
    prepare_workspace(fixture_dir, tmp_path / "a2", templates=store)  # loaded into memory
    shutil.rmtree(store)
    after = prepare_workspace(fixture_dir, tmp_path / "a3", templates=store)
    assert after.sha in shas
    agent_git(tmp_path / "a3", "fsck", "--strict", "--no-progress")
    remove_session_templates(store)


UNREADABLE = r"""
import os, sys
from pathlib import Path
from pytest_evalrun.trial.workspace import prepare_workspace, workspace_diff
root = Path(sys.argv[1])
fx = root / "fx"
fx.mkdir()
(fx / "a.txt").write_text("a\n")
ws = root / "ws"
snap = prepare_workspace(fx, ws)
(ws / "locked").mkdir()
(ws / "locked" / "inside.txt").write_text("secret plan\n")
os.chmod(ws / "locked", 0)
(ws / "closed.txt").write_text("x\n")
os.chmod(ws / "closed.txt", 0)
deep = os.open(ws, os.O_RDONLY)
for _ in range(450):  # a path of more than 4096 bytes
    os.mkdir("d" * 10, dir_fd=deep)
    nxt = os.open("d" * 10, os.O_RDONLY, dir_fd=deep)
    os.close(deep)
    deep = nxt
os.close(os.open("leaf.txt", os.O_CREAT | os.O_WRONLY, dir_fd=deep))
(ws / "a.txt").write_text("changed\n")
sys.stdout.write(workspace_diff(ws, snap))
sys.stderr.write(f"uid {os.geteuid()}\n")
"""


def test_unreadable_and_too_deep_paths_are_named_and_the_rest_is_shown(tmp_path: Path) -> None:
    """As an ordinary user (root reads everything): git cannot read them; the diff names
    them and still shows every other change (0.2.0: "git add failed; no diff")."""
    if os.geteuid() == 0:  # pytest's tmp_path is private to root: a directory nobody can use
        tmp_path = Path(tempfile.mkdtemp(prefix="evalrun-unreadable-"))
        os.chown(tmp_path, 65534, 65534)
    argv = [sys.executable, "-c", UNREADABLE, str(tmp_path)]
    env = {**os.environ, "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    if os.geteuid() == 0:
        # Really nobody: no capability kept (root's would read every file); an interpreter
        # nobody may run (this one may live in root's private home), our source on its path.
        python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
        source = str(Path(__file__).resolve().parents[1])
        argv = [
            "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", python, "-c", UNREADABLE, str(tmp_path),
        ]  # fmt: skip
        env["PYTHONPATH"] = source
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    try:
        assert out.returncode == 0, out.stderr
        assert os.geteuid() != 0 or "uid 65534" in out.stderr
        notes, _, patch = out.stdout.partition("diff --git")
        assert "+changed" in patch
        assert "unreadable:" in notes
        assert "locked" in notes and "closed.txt" in notes
        assert "characters)" in notes  # the too-deep path, named (shortened)
        assert "secret plan" not in out.stdout
    finally:
        subprocess.run(["chmod", "-R", "u+rwX", str(tmp_path)], check=False)
        if os.geteuid() == 0:
            shutil.rmtree(tmp_path, ignore_errors=True)


# -- an untouched workspace is judged without git ----------------------------------------------

DAY = 86400 * 10**9


def age(tree: Path) -> None:
    """Give every file of ``tree`` a time two days back (a fixture checked out long before the
    run): its copies' index entries are then not racily clean."""
    old = (os.stat(tree).st_mtime_ns - 2 * DAY,) * 2
    for dirpath, _dirnames, filenames in os.walk(tree):
        for name in filenames:
            os.utime(os.path.join(dirpath, name), ns=old, follow_symlinks=False)
    for link in tree.rglob("*"):
        if link.is_symlink():
            os.utime(link, ns=old, follow_symlinks=False)


def by_git(ws: Path, snap: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """The diff as git alone makes it (the shortcut for an untouched workspace off)."""
    with monkeypatch.context() as m:
        m.setattr(workspace_mod, "_untouched", lambda *_: False)
        return workspace_diff(ws, snap)


def test_untouched_workspace_is_diffed_without_git(
    fixture_dir: Path, tmp_path: Path, git_calls: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    age(fixture_dir)
    for name in ("first", "second"):  # made by git, then from the template
        ws = tmp_path / name
        snap = prepare_workspace(fixture_dir, ws)
        # the agent may use its own repository: nothing of the work tree changes
        agent_git(ws, "commit", "-q", "--allow-empty", "-m", "agent")
        agent_git(ws, "tag", "mine")
        git_calls.clear()
        assert workspace_diff(ws, snap) == ""
        assert git_calls == []
        assert by_git(ws, snap, monkeypatch) == ""
        assert git_calls != []  # the control really ran git


def _rewrite_same_size_and_time(ws: Path) -> None:
    p = ws / "src" / "main.c"
    st = p.stat()
    p.write_text("int main(void) { return 7; }\n")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # only ctime tells


def _binary_same_size_and_time(ws: Path) -> None:
    p = ws / "logo.bin"
    st = p.stat()
    p.write_bytes(bytes(reversed(range(256))) * 4)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def _link_to_file(ws: Path) -> None:  # same size: the link's target is 9 bytes
    (ws / "link").unlink()
    (ws / "link").write_text("README.md")


def _retarget_link(ws: Path) -> None:
    (ws / "link").unlink()
    (ws / "link").symlink_to("READ_E.md")


def _nested_repo(ws: Path) -> None:
    (ws / "sub").mkdir()
    (ws / "sub" / "f.txt").write_text("inside\n")
    agent_git(ws / "sub", "init", "-q")


def _fifo(ws: Path) -> None:
    os.mkfifo(ws / "pipe")


def _touch_only(ws: Path) -> None:  # same content, new times: git reads it and finds no change
    os.utime(ws / "README.md")


CHANGES = {
    "rewrite, same size and mtime": _rewrite_same_size_and_time,
    "binary, same size and mtime": _binary_same_size_and_time,
    "mode": lambda ws: (ws / "README.md").chmod(0o755),
    "mode of a script": lambda ws: (ws / "check.sh").chmod(0o644),
    "new empty file": lambda ws: (ws / "empty.txt").write_bytes(b""),
    "new empty directory": lambda ws: (ws / "newdir").mkdir(),
    "new file deep": lambda ws: (ws / "src" / "a" / "b").mkdir(parents=True) or (
        ws / "src" / "a" / "b" / "c.txt").write_text("c\n"),
    "deleted": lambda ws: (ws / "src" / "old.txt").unlink(),
    "renamed": lambda ws: (ws / "src" / "old.txt").rename(ws / "src" / "moved.txt"),
    "directory removed": lambda ws: shutil.rmtree(ws / "src"),
    "link becomes a file": _link_to_file,
    "link retargeted": _retarget_link,
    "nested repository": _nested_repo,
    "fifo": _fifo,
    "touched": _touch_only,
    "file in .git of a subdirectory": lambda ws: (ws / "src" / ".git").write_text("x\n"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_any_change_is_left_to_git_and_the_diff_is_the_same(
    change: str, fixture_dir: Path, tmp_path: Path, git_calls: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    age(fixture_dir)
    prepare_workspace(fixture_dir, tmp_path / "warm")
    ws = tmp_path / "ws"
    snap = prepare_workspace(fixture_dir, ws)
    CHANGES[change](ws)
    git_calls.clear()
    diff = workspace_diff(ws, snap)
    assert git_calls != [], "an untouched workspace was assumed"
    assert diff == by_git(ws, snap, monkeypatch)
    # (git built without nanosecond stat checks, as Debian's is, sees no change in a file
    # rewritten with its size and mtime within the ctime second of the copy: both agree)
    unseen = ("new empty directory", "fifo", "touched", "file in .git of a subdirectory")
    if change not in unseen and "same size" not in change:
        assert diff != "", "git saw no change"


def test_racily_clean_copy_is_left_to_git(
    fixture_dir: Path, tmp_path: Path, git_calls: list[list[str]]
) -> None:
    """A fixture written in the second its copy's index was written: git re-reads such files
    (the stat data cannot tell a change made in the same tick), so git is asked."""
    ws = tmp_path / "ws"
    snap = prepare_workspace(fixture_dir, ws)
    assert snap.index_mtime_ns // 10**9 <= (ws / "README.md").stat().st_mtime_ns // 10**9
    git_calls.clear()
    assert workspace_diff(ws, snap) == ""
    assert git_calls != []


def test_ignored_files_of_the_fixture_are_named_every_time(
    tmp_path: Path, git_calls: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    fx = tmp_path / "fx"
    fx.mkdir()
    (fx / ".gitignore").write_text("*.log\n")
    (fx / "a.txt").write_text("a\n")
    (fx / "debug.log").write_text("noise\n")
    age(fx)
    prepare_workspace(fx, tmp_path / "warm")
    ws = tmp_path / "ws"
    snap = prepare_workspace(fx, ws)
    git_calls.clear()
    diff = workspace_diff(ws, snap)
    assert git_calls != []
    assert diff == "# evalrun: not in this diff, ignored by a .gitignore: debug.log\n"
    assert diff == by_git(ws, snap, monkeypatch)


def test_empty_fixture_untouched_and_changed(
    tmp_path: Path, git_calls: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("first", "second"):
        ws = tmp_path / name
        snap = prepare_workspace(None, ws)
        git_calls.clear()
        assert workspace_diff(ws, snap) == ""
        assert git_calls == []
    (ws / "new.txt").write_text("x\n")
    diff = workspace_diff(ws, snap)
    assert "+x" in diff and diff == by_git(ws, snap, monkeypatch)


def test_untouched_after_setup_and_a_change_after_it(
    fixture_dir: Path, tmp_path: Path, git_calls: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The baseline the setup step leaves (snapshot_after_setup): untouched, no git; the
    agent's change against it, the same as git alone gives."""
    age(fixture_dir)
    prepare_workspace(fixture_dir, tmp_path / "warm")
    ws = tmp_path / "ws"
    snap = prepare_workspace(fixture_dir, ws)
    (ws / "generated.txt").write_text("by setup\n")
    old = (ws / "generated.txt").stat().st_mtime_ns - 2 * DAY
    os.utime(ws / "generated.txt", ns=(old, old))
    base = workspace_mod.snapshot_after_setup(ws, snap)
    assert base is not snap
    git_calls.clear()
    assert workspace_diff(ws, base) == ""
    assert git_calls == []
    assert by_git(ws, base, monkeypatch) == ""
    (ws / "generated.txt").write_text("by the agent\n")
    diff = workspace_diff(ws, base)
    assert "+by the agent" in diff and "+by setup" not in diff
    assert diff == by_git(ws, base, monkeypatch)
    workspace_mod.release_snapshot(base)
