"""Tests for pytest_evalrun.trial.gitindex against indexes git itself writes and reads."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pytest_evalrun.trial.gitindex import (
    IndexEntry,
    build_index,
    index_stat_data,
    parse_index,
    stat_data,
)

ENV = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=ENV, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / "a" / "deep" / ("d" * 200)).mkdir(parents=True)
    for i, name in enumerate(["x.txt", "a/b.py", "a/deep/c.bin", "a/deep/" + "d" * 200 + "/e"]):
        (r / name).write_bytes(b"content %d\n" % i * (i + 1))
    (r / "run.sh").write_text("#!/bin/sh\n")
    (r / "run.sh").chmod(0o755)
    (r / "link").symlink_to("x.txt")
    (r / "\u00e9t\u00e9 file.txt").write_text("utf-8 name\n")
    git(r, "init", "-q")
    git(r, "add", "-A")
    git(r, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "fixture")
    return r


def entries_from_git(repo: Path) -> list[IndexEntry]:
    out: list[IndexEntry] = []
    for rec in git(repo, "ls-files", "-s", "-z").split("\0"):
        if rec:
            meta, path = rec.split("\t", 1)
            mode, sha, _stage = meta.split()
            out.append(IndexEntry(int(mode, 8), bytes.fromhex(sha), os.fsencode(path)))
    return out


def test_parse_what_git_wrote(repo: Path) -> None:
    parsed = parse_index((repo / ".git" / "index").read_bytes())
    assert parsed == entries_from_git(repo)
    assert {e.mode for e in parsed or ()} == {0o100644, 0o100755, 0o120000}


def test_built_index_is_clean_for_git(repo: Path) -> None:
    entries = parse_index((repo / ".git" / "index").read_bytes())
    assert entries is not None
    stats = {e.path: os.lstat(repo / os.fsdecode(e.path)) for e in entries}
    data = build_index(entries, stats)
    assert parse_index(data) == entries
    (repo / ".git" / "index").write_bytes(data)
    git(repo, "diff-files", "--quiet")  # every stat field as git expects it
    assert git(repo, "status", "--porcelain") == ""
    assert entries_from_git(repo) == entries
    # a wrong stat shows: git does not trust an index blindly
    stats[entries[0].path] = os.lstat(repo / "run.sh")
    (repo / ".git" / "index").write_bytes(build_index(entries, stats))
    proc = subprocess.run(["git", "diff-files", "--quiet"], cwd=repo, env=ENV)
    assert proc.returncode == 1


def test_unsupported_indexes_are_refused(repo: Path) -> None:
    data = (repo / ".git" / "index").read_bytes()
    assert parse_index(data[:-1] + bytes([data[-1] ^ 1])) is None  # checksum
    assert parse_index(b"") is None
    git(repo, "update-index", "--index-version", "4")
    assert parse_index((repo / ".git" / "index").read_bytes()) is None
    git(repo, "update-index", "--index-version", "3")
    assert parse_index((repo / ".git" / "index").read_bytes()) == entries_from_git(repo)


def test_missing_stat_is_an_error(repo: Path) -> None:
    entries = parse_index((repo / ".git" / "index").read_bytes())
    assert entries
    with pytest.raises(KeyError):
        build_index(entries, {})


def test_pack_written_in_python_is_what_git_reads(repo: Path, tmp_path: Path) -> None:
    from pytest_evalrun.trial.git import read_loose_objects, write_pack

    objects = read_loose_objects(repo / ".git")
    assert objects is not None and len(objects) >= 9  # blobs, trees, the commit
    pack_dir = tmp_path / "packs"
    pack_dir.mkdir()
    pack, idx = write_pack(objects, pack_dir)
    listed = git(repo, "verify-pack", "-v", str(idx))  # checks every sha and crc
    assert sum(1 for line in listed.splitlines() if line[:40] in
               {sha.hex() for sha, _, _ in objects}) == len(objects)
    # a repository holding only the pack has every object
    clone = tmp_path / "clone"
    git(tmp_path, "init", "-q", str(clone))
    for f in (pack, idx):
        (clone / ".git" / "objects" / "pack" / f.name).write_bytes(f.read_bytes())
    head = git(repo, "rev-parse", "HEAD").strip()
    (clone / ".git" / "refs" / "heads" / "main").write_text(head + "\n")
    git(clone, "symbolic-ref", "HEAD", "refs/heads/main")
    git(clone, "fsck", "--strict", "--no-progress")
    assert git(clone, "ls-tree", "-r", "HEAD") == git(repo, "ls-tree", "-r", "HEAD")


def test_stat_data_is_what_git_recorded(repo: Path) -> None:
    """What git wrote for each path is what stat_data reads off the file (the check an
    untouched workspace's diff relies on); a changed file, mode or extended entry shows."""
    git(repo, "update-index", "--really-refresh")
    recorded = index_stat_data((repo / ".git" / "index").read_bytes())
    assert recorded is not None and len(recorded) == len(entries_from_git(repo))
    for path, fields in recorded.items():
        assert stat_data(os.lstat(repo / os.fsdecode(path))) == fields, path
    (repo / "run.sh").chmod(0o644)
    assert stat_data(os.lstat(repo / "run.sh")) != recorded[b"run.sh"]
    assert stat_data(os.lstat(repo / "a")) is None  # a directory is no index entry
    git(repo, "update-index", "--index-version", "3")
    git(repo, "update-index", "--skip-worktree", "x.txt")
    data = (repo / ".git" / "index").read_bytes()
    assert parse_index(data) is not None
    assert index_stat_data(data) is None  # extended flags: not a plain snapshot index
