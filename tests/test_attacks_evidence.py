"""Evidence the agent cannot falsify (issue 19): workspace.diff and the links left under
results/ and jobs/, through real pytest sessions (serially and with ``-n 2``; sandboxed and
not), judged by the files a user reads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import Suite

from pytest_evalrun.trial.bwrapprobe import probe

SANDBOXES = ["auto", "none"] if probe().available else ["none"]

#: The agent: the task's prompt is Python code, run in the workspace.
RUNNER = r"""
import os, pathlib
exec(pathlib.Path(os.environ["EVALRUN_PROMPT_FILE"]).read_text())
"""

FORGE_BLOB = r"""
import glob, os, subprocess, zlib
def git(*args, data=None):
    return subprocess.run(["git", *args], input=data, capture_output=True, check=True).stdout
sha = git("rev-parse", "HEAD:README.md").decode().strip()
# Unpack every pack into loose objects, drop the packs, then rewrite README.md's blob.
for pack in glob.glob(".git/objects/pack/*.pack"):
    data = open(pack, "rb").read()
    for p in (pack, pack[:-5] + ".idx"):
        os.chmod(p, 0o644)
        os.unlink(p)
    git("unpack-objects", "-q", data=data)
fake = b"import shutil; shutil.rmtree('/')\n"
path = f".git/objects/{sha[:2]}/{sha[2:]}"
os.makedirs(os.path.dirname(path), exist_ok=True)
if os.path.exists(path):
    os.chmod(path, 0o644)
open(path, "wb").write(zlib.compress(b"blob %d\0" % len(fake) + fake))
open("README.md", "w").write("the real change\n")
"""

HIDE_FILES = r"""
import os, pathlib, subprocess
pathlib.Path("quiet").mkdir()
pathlib.Path("quiet/.gitignore").write_text("*\n")
pathlib.Path("quiet/payload.py").write_text("print('hidden')\n")
pathlib.Path("sub").mkdir()
subprocess.run(["git", "init", "-q", "sub"], check=True)
pathlib.Path("sub/evil.py").write_text("print('nested')\n")
pathlib.Path("empty-repo").mkdir()
subprocess.run(["git", "init", "-q", "empty-repo"], check=True)
pathlib.Path(os.fsdecode(b"caf\xe9.txt")).write_text("latin-1 name\n")
pathlib.Path("pkg").mkdir()
pathlib.Path("pkg/mod.py").write_text("X = 1\n")
subprocess.run(["python3", "-c", "import sys; sys.path.insert(0, 'pkg'); import mod"], check=True)
pathlib.Path("answer.txt").write_text("ok\n")
"""

LEAVE_LINKS = r"""
import os, pathlib
art = pathlib.Path(os.environ["EVALRUN_ARTIFACTS_DIR"])
home = os.path.expanduser("~evaluator-home-not-known")
links = {
    "id_rsa": "/root/.ssh/id_rsa",
    "environ": "/proc/self/environ",
    "etc": "/etc",
    "up": "../../../../../../../../..",
    "inside": "notes.txt",
}
(art / "notes.txt").write_text("kept\n")
(art / "deeper").mkdir()
for name, target in links.items():
    os.symlink(target, art / name)
os.symlink("/etc/passwd", art / "deeper" / "passwd")
os.symlink("/etc/hostname", "ws-link")
os.symlink("README.md", "ws-inside")
pathlib.Path("answer.txt").write_text("ok\n")
"""


def run(suite: Suite, xdist: bool) -> pytest.RunResult:
    return suite.pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", *(["-n", "2"] if xdist else []), "exp.eval.yaml"
    )


def task(name: str, code: str, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "prompt": code,
        "fixture": "fixtures/basic",
        "verify": "grep -q ok answer.txt",
        **extra,
    }


def diff_of(suite: Suite, name: str) -> str:
    return (suite.trial_dir("base", name, 1) / "workspace.diff").read_text()


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "n2"])
@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_the_diff_shows_the_agents_change_and_names_what_it_cannot_show(
    suite: Suite, sandbox: str, xdist: bool
) -> None:
    suite.write("runner.py", RUNNER)
    suite.experiment(
        defaults={"agent": {"command": [sys.executable, str(suite.root / "runner.py")]}},
        variants={
            "base": {
                "setup": "printf 'be brief\\n' > CLAUDE.md && printf 'x\\n' >> README.md",
            }
        },
        tasks=[
            task("forge", FORGE_BLOB),
            task("hide", HIDE_FILES),
            task("plain", "open('answer.txt', 'w').write('ok\\n')"),
        ],
        sandbox=sandbox,
    )
    run(suite, xdist)

    forged = diff_of(suite, "forge")
    assert "shutil.rmtree" not in forged
    assert "-x\n" in forged and "+the real change" in forged  # before = as setup left it

    plain = diff_of(suite, "plain")
    assert "CLAUDE.md" not in plain and "README.md" not in plain  # setup's, not the agent's
    assert "+++ b/answer.txt" in plain

    hidden = diff_of(suite, "hide")
    notes, _, patch = hidden.partition("diff --git")
    assert "+++ b/answer.txt" in patch  # the rest of the change is still shown
    assert "quiet/" in notes  # ignored by its own .gitignore: named
    assert "sub/" in notes and "sub/evil.py" in notes  # a nested repository: named
    assert "empty-repo/" in notes
    assert "caf\\xe9.txt" in notes  # a name that is not UTF-8: named, escaped
    assert "__pycache__" not in hidden and ".pyc" not in hidden  # bytecode: no change


def links_under(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if os.path.islink(os.path.join(dirpath, name)):
                found.append(Path(dirpath, name))
    return found


def trial_root(path: Path, top: Path) -> Path:
    """The trial directory ``path`` lies in (results: .../trials/NNN; jobs: jobs/<job>/<trial>)."""
    parts = path.relative_to(top).parts
    if "trials" in parts:
        return top.joinpath(*parts[: parts.index("trials") + 2])
    return top.joinpath(*parts[:2])


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "n2"])
@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_links_out_of_a_trial_become_text_files(
    suite: Suite, sandbox: str, xdist: bool
) -> None:
    suite.write("runner.py", RUNNER)
    suite.experiment(
        defaults={"agent": {"command": [sys.executable, str(suite.root / "runner.py")]}},
        tasks=[task("links", LEAVE_LINKS)],
        sandbox=sandbox,
    )
    run(suite, xdist).assert_outcomes(passed=1)
    trial = suite.trial_dir("base", "links", 1)
    art = trial / "artifacts"
    for name, target in (
        ("id_rsa", "/root/.ssh/id_rsa"),
        ("environ", "/proc/self/environ"),
        ("etc", "/etc"),
        ("deeper/passwd", "/etc/passwd"),
    ):
        path = art / name
        assert path.is_file() and not path.is_symlink(), name
        assert target in path.read_text()
    assert (art / "up").is_file() and not (art / "up").is_symlink()
    assert (art / "inside").is_symlink()  # inside the trial: kept as a link
    assert (trial / "workspace" / "ws-link").is_file()
    assert (trial / "workspace" / "ws-inside").is_symlink()
    checked = 0
    for top in (suite.results(), suite.root / "jobs"):
        for link in links_under(top):
            real = os.path.realpath(link)
            root = os.path.realpath(trial_root(link, top))
            in_results = real.startswith(os.path.realpath(suite.results()) + os.sep)
            # (the Pier mirror's own links into results/, where hard links are impossible)
            ok = real == root or real.startswith(root + os.sep) or (top != suite.results()
                                                                   and in_results)
            assert ok, (link, real)
            checked += 1
    assert checked >= 2
