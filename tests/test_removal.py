"""Tests for pytest_evalrun.trial.removal: directories removed behind the trials."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import pytest

from pytest_evalrun.trial import removal


def tree(root: Path) -> Path:
    (root / "home" / ".cache").mkdir(parents=True)
    (root / "home" / ".cache" / "f").write_text("x")
    (root / "tmp").mkdir()
    (root / "link").symlink_to("/")  # never followed
    return root


def removal_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, threading.Event]:
    """A tree handed over whose removal has begun and is held until the event is set."""
    started, go = threading.Event(), threading.Event()
    real = removal.shutil.rmtree

    def slow(path: str, ignore_errors: bool = False) -> None:
        started.set()
        go.wait(60)
        real(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(removal.shutil, "rmtree", slow)
    d = tree(tmp_path / "t")
    removal.remove_later(d)
    assert started.wait(60)
    return d, go


def test_handed_over_directories_are_gone_after_the_wait(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept.txt").write_text("kept")
    dirs = [tree(tmp_path / f"t{i}") for i in range(5)]
    (dirs[0] / "out").symlink_to(outside)
    for d in dirs:
        removal.remove_later(d)
    assert removal.wait_for_removals(timeout=60)
    assert [d for d in dirs if os.path.lexists(d)] == []
    assert (outside / "kept.txt").read_text() == "kept"
    removal.remove_later(tmp_path / "never-existed")  # nothing to remove: no error
    assert removal.wait_for_removals(timeout=60)


def test_wait_covers_a_removal_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, go = removal_under_way(tmp_path, monkeypatch)
    assert not removal.wait_for_removals(timeout=0.05)  # under way: not done
    go.set()
    assert removal.wait_for_removals(timeout=60)
    assert not d.exists()


def test_a_forked_child_does_not_wait_for_its_parents_removals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, go = removal_under_way(tmp_path, monkeypatch)
    with warnings.catch_warnings():  # 3.12+: fork of a process with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: nothing of the parent's to wait for
        os._exit(0 if removal.wait_for_removals(timeout=10) else 1)
    _, status = os.waitpid(pid, 0)
    go.set()
    assert os.waitstatus_to_exitcode(status) == 0
    assert removal.wait_for_removals(timeout=60)
    assert not d.exists()
