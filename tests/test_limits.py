"""Resource limits (issue 11): the kill at scale, the output cap, git limits, prompt files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_evalrun.experiment.promptfile import PromptFileError, read_prompt_file
from pytest_evalrun.secrets import Redactor
from pytest_evalrun.trial import git as gitmod
from pytest_evalrun.trial.process import cap_output, find_cookie_processes, run_step
from pytest_evalrun.trial.workspace import DiffLimits, prepare_workspace, workspace_diff


def test_kill_works_with_1500_term_ignoring_processes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVALRUN_PROCESS")}
    env["EVALRUN_TEST_MANY"] = marker = os.urandom(8).hex()
    script = "for i in $(seq 1500); do (trap '' TERM; exec sleep 1000) & done; echo started"
    result = run_step(
        ["sh", "-c", script],
        cwd=tmp_path,
        env=env,
        timeout=120,
        output=tmp_path / "out.txt",
        kill_grace=0.2,
    )
    assert result.exit_code == 0, (tmp_path / "out.txt").read_text()
    assert result.killed_leftovers >= 1500
    assert find_cookie_processes(f"EVALRUN_TEST_MANY={marker}") == []


def test_cap_output_keeps_head_and_tail(tmp_path: Path) -> None:
    out = tmp_path / "o.txt"
    out.write_bytes(b"H" * 100 + b"M" * 10_000 + b"T" * 100)
    assert cap_output(out, 200) == 10_000
    data = out.read_bytes()
    assert data == b"H" * 100 + b"\n[... 10000 bytes left out ...]\n" + b"T" * 100
    assert cap_output(out, 10_000) == 0  # small enough: untouched
    link = tmp_path / "link"
    link.symlink_to(out)
    assert cap_output(link, 10) == 0  # never through a link


MEMORY = r"""
import os, sys, threading
from pathlib import Path
import psutil
from pytest_evalrun.secrets import Redactor, redact_file
from pytest_evalrun.trial.process import run_step
out = Path(sys.argv[1])
me = psutil.Process()
before = me.memory_info().rss
peak = before
done = threading.Event()


def sample() -> None:  # this process's resident memory every 2 ms (ru_maxrss, used before,
    global peak        # once reported 286 MiB in CI where this stays near 20 MiB)
    while not done.is_set():
        peak = max(peak, me.memory_info().rss)
        done.wait(0.002)


sampler = threading.Thread(target=sample)
sampler.start()
writer = ("import sys\nb = b'x' * (1 << 20) + b'\\n'\n"
          "for _ in range(300): sys.stdout.buffer.write(b)\n")
r = run_step([sys.executable, "-c", writer], cwd=out.parent, env=dict(os.environ),
             timeout=300, output=out)
redact_file(out, Redactor(["hunter22"]))
text = out.read_text()
done.set()
sampler.join()
peak = max(peak, me.memory_info().rss)
print(r.exit_code, r.output_cut, out.stat().st_size, peak - before)
"""


def test_big_output_costs_bounded_memory(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", MEMORY, str(tmp_path / "stdout.txt")],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    code, cut, size, extra = map(int, done.stdout.split())
    assert code == 0
    assert cut > 280 * 2**20
    assert size < 11 * 2**20
    assert extra < 100 * 2**20, f"{extra / 2**20:.0f} MiB extra RSS"
    assert b"bytes left out ...]" in (tmp_path / "stdout.txt").read_bytes()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    fixture = tmp_path / "fixture"
    fixture.mkdir()
    (fixture / "a.txt").write_text("a\n")
    workspace = tmp_path / "ws"
    prepare_workspace(fixture, workspace)
    return workspace


def test_huge_sparse_file_is_left_out_of_the_diff(ws: Path) -> None:
    with open(ws / "huge.bin", "wb") as f:
        f.truncate(8 * 2**30)  # 8 GiB, sparse
    (ws / "b.txt").write_text("new\n")
    diff = workspace_diff(ws)
    assert "huge.bin (8589934592 bytes)" in diff.splitlines()[0]
    assert "diff --git a/b.txt b/b.txt" in diff
    assert "diff --git a/huge.bin" not in diff


def test_diff_is_cut_at_its_limit(ws: Path) -> None:
    (ws / "big.txt").write_text("line of text\n" * 20_000)
    diff = workspace_diff(ws, limits=DiffLimits(max_diff_bytes=10_000))
    assert len(diff) < 11_000
    assert diff.rstrip().endswith("bytes left out ...]")
    assert "big.txt" in workspace_diff(ws)  # negative control: the default keeps it


def test_binary_patch_holding_a_secret_is_left_out(ws: Path) -> None:
    (ws / "blob.bin").write_bytes(b"\x00\x01binary hunter22 data\x00" * 50)
    (ws / "clean.bin").write_bytes(b"\x00\x02nothing here\x00" * 50)
    plain = workspace_diff(ws)
    assert plain.count("GIT binary patch") == 2 and "hunter22" not in plain  # compressed
    diff = workspace_diff(ws, redactor=Redactor(["hunter22"]))
    assert diff.count("GIT binary patch") == 1
    assert "binary patch left out, the file holds a secret: a/blob.bin b/blob.bin" in diff


def test_git_call_times_out(tmp_path: Path) -> None:
    fake = tmp_path / "git"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    result = gitmod.run_git(str(fake), ["status"], cwd=tmp_path, env=dict(os.environ), timeout=0.5)
    assert result.timed_out and result.returncode == 124


def test_git_output_is_capped(tmp_path: Path) -> None:
    fake = tmp_path / "git"
    fake.write_text("#!/bin/sh\nhead -c 300000 /dev/zero\n")
    fake.chmod(0o755)
    result = gitmod.run_git(str(fake), [], cwd=tmp_path, env=dict(os.environ), max_output=1000)
    assert len(result.stdout) == 1000 and result.stdout_cut == 299_000


def test_prompt_file_must_be_a_small_regular_file(tmp_path: Path) -> None:
    good = tmp_path / "p.md"
    good.write_text("do it\n")
    assert read_prompt_file(good) == "do it\n"
    with pytest.raises(PromptFileError, match="/dev/zero is not a regular file"):
        read_prompt_file(Path("/dev/zero"))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(PromptFileError, match="fifo is not a regular file"):
        read_prompt_file(fifo)  # no writer: a blocking open would hang here
    big = tmp_path / "big.md"
    big.write_text("x" * 2000)
    with pytest.raises(PromptFileError, match="more than 1000"):
        read_prompt_file(big, max_bytes=1000)


def test_spec_error_names_a_fifo_prompt_file(pytester: pytest.Pytester) -> None:
    os.mkfifo(pytester.path / "prompt.fifo")
    pytester.makefile(
        ".eval.yaml",
        x=textwrap.dedent(
            """\
            variants: {a: {agent: [echo]}}
            tasks:
              - name: t
                prompt_file: prompt.fifo
                verify: [true]
            """
        ),
    )
    result = pytester.runpytest_subprocess(timeout=120)
    assert "prompt file 'prompt.fifo' in task 't' is not a regular file" in result.stdout.str()
