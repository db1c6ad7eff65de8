"""The judge out of the agent's reach (issue 19; docs/isolation.md): each phase gets its own
view, and running as root is no shortcut.

Every test is a real pytest session with real processes and the real bubblewrap, judged by what
a user can observe: the trial's status, the files the agent left in its artifacts directory,
the files outside (unchanged), and the secret tokens in no file under results/ and jobs/.
``tests/test_attacks_as_user.py`` runs this file again as an ordinary user (serially and with
``-n 2``); run as root, it is the root half.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Suite

from pytest_evalrun.trial.bwrapprobe import probe

pytestmark = pytest.mark.skipif(
    not probe().available, reason=f"bubblewrap cannot run here: {probe().reason}"
)

#: Credential files a developer or CI machine has in its home (issue 19's 11 of 11, less the
#: three that live in the rootdir and beside the YAML).
HOME_CREDENTIALS = (
    ".bash_history",
    ".python_history",
    ".local/share/opencode/auth.json",
    ".cache/huggingface/token",
    ".config/rclone/rclone.conf",
    ".pgpass",
    ".s3cfg",
    ".config/gh/hosts.yml",
)

#: The hostile agent: tries every target, writes what it got into the answer, its stdout, its
#: artifacts and the workspace (so whatever it read would reach results/ and jobs/), and
#: reports per target READ or DENIED in artifacts/loot.json.
AGENT = r"""
import json, os, pathlib, sys
targets = TARGETS
loot, stolen = {}, {}
for name, path in targets.items():
    try:
        if os.path.isdir(path):
            data = "\n".join(sorted(os.listdir(path)))
            if not data:
                raise FileNotFoundError(2, "empty", path)
        else:
            data = open(path, errors="replace").read()
        loot[name], stolen[name] = "READ", data
    except OSError as exc:
        loot[name] = f"DENIED {exc.errno}"
prompt = pathlib.Path(os.environ["EVALRUN_PROMPT_FILE"]).read_text()
answer = "a guess"
for key in ("expected", "solution"):
    if key in stolen:
        answer = stolen[key].strip()
if prompt.startswith("ANSWER "):
    answer = prompt.split()[1]
pathlib.Path("answer.txt").write_text(answer + "\n")
everything = "\n".join(f"{k}: {v}" for k, v in stolen.items())
pathlib.Path("stolen.txt").write_text(everything)
print(everything)
art = pathlib.Path(os.environ["EVALRUN_ARTIFACTS_DIR"])
(art / "loot.json").write_text(json.dumps(loot))
(art / "stolen.txt").write_text(everything)
"""

VERIFY = """\
# the grader: the answer must be the expected one, and setup's file must be there
test -f seed.txt || exit 3
test "$(cat answer.txt)" = "$(cat "$EVALRUN_EXPERIMENT_DIR/checks/expected-$EVALRUN_TASK.txt")"
"""


def token(name: str) -> str:
    return f"TOK-{name}-{uuid.uuid4().hex}"


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in filenames + dirnames:
                yield Path(dirpath, name)


def leaked(suite: Suite, tokens: dict[str, str]) -> dict[str, str]:
    """``{name: file}`` for each token found in a file under results/ or jobs/."""
    found: dict[str, str] = {}
    for path in files_under(suite.results(), suite.root / "jobs"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            for name, tok in tokens.items():
                if tok.encode() in data:
                    found.setdefault(name, str(path.relative_to(suite.root)))
    return found


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory outside the rootdir and outside the host's /tmp (which the sandbox has
    always replaced): under /var/tmp."""
    base = Path("/var/tmp") if os.access("/var/tmp", os.W_OK) else Path(os.sep, "tmp")
    path = base / f"evalrun-outside-{uuid.uuid4().hex}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Grader:
    """An experiment in ``<rootdir>/evals/`` with its grader beside the YAML, secrets in the
    rootdir, beside the YAML and in a home, and a hostile agent that tries to read them all."""

    def __init__(self, suite: Suite, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.suite, self.root = suite, suite.root
        self.exp = self.root / "evals"
        self.home = outside / "home"
        self.tokens: dict[str, str] = {}
        self.targets: dict[str, str] = {}
        # beside the YAML: the grader, hidden tests, the expected answers, a reference
        # solution, the fixture's original, another task's fixture, a .env
        self.honest = token("honest")  # given to the agent in its prompt: not a secret
        self.expected = self.secret("expected", self.exp / "checks" / "expected-impossible.txt")
        self.secret("hidden_tests", self.exp / "checks" / "test_hidden.py", "def test(): ")
        self.secret("solution", self.exp / "solution" / "answer.txt", "")
        self.tokens["solution"] = self.expected
        (self.exp / "solution" / "answer.txt").write_text(self.expected + "\n")
        self.write(self.exp / "checks" / "expected-honest.txt", self.honest)
        self.verify = self.write(self.exp / "verify.sh", VERIFY)
        self.targets["verify_script"] = str(self.verify)
        self.secret("yaml_env", self.exp / ".env", "API_TOKEN=")
        self.write(self.exp / "fixtures" / "basic" / "README.md", "a fixture")
        self.targets["fixture_original"] = str(self.exp / "fixtures" / "basic" / "README.md")
        self.secret("other_fixture", self.exp / "fixtures" / "other" / "secret.txt")
        self.write(self.exp / "data" / "seed.txt", "seed for setup")
        # elsewhere in the rootdir: a .env, the CI checkout's token, a file
        self.secret("root_env", self.root / ".env", "OPENAI_API_KEY=")
        tok = self.secret("git_extraheader", self.root / ".git" / "config", "")
        (self.root / ".git" / "config").write_text(
            '[http "https://github.com/"]\n'
            f"\textraheader = AUTHORIZATION: basic {tok}\n"
        )
        self.secret("rootdir_file", self.root / "notes" / "elsewhere.txt")
        # outside the rootdir, and a home with the usual credentials
        self.secret("outside_file", outside / "data" / "secret.txt")
        for rel in HOME_CREDENTIALS:
            self.secret("home:" + rel, self.home / rel)
        monkeypatch.setenv("HOME", str(self.home))
        # a file in the evaluator's real home (its shell's rc file, say)
        real_home = Path(pwd.getpwuid(os.geteuid()).pw_dir)
        for name in (".bashrc", ".profile", ".zshrc", ".gitconfig", ".bash_logout"):
            if (real_home / name).is_file() and os.access(real_home / name, os.R_OK):
                self.targets["real_home_file"] = str(real_home / name)
                break

    def write(self, path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        return path

    def secret(self, name: str, path: Path, prefix: str = "") -> str:
        tok = token(name.replace(":", "-").replace("/", "-"))
        self.write(path, prefix + tok)
        self.tokens[name], self.targets[name] = tok, str(path)
        return tok

    def experiment(self, **top: object) -> Path:
        agent = self.exp / "agent.py"
        agent.write_text(AGENT.replace("TARGETS", repr(self.targets)))
        data = {
            "experiment": "exp",
            "defaults": {"agent": {"command": [sys.executable, str(agent)]}},
            "variants": {
                "base": {"setup": "cp {experiment_dir}/data/seed.txt seed.txt"},
            },
            "tasks": [
                {"name": "impossible", "prompt": "guess the answer", "fixture": "fixtures/basic",
                 "verify": "sh {experiment_dir}/verify.sh"},
                {"name": "honest", "prompt": f"ANSWER {self.honest}",
                 "fixture": "fixtures/basic", "verify": "sh {experiment_dir}/verify.sh"},
            ],
            **top,
        }  # fmt: skip
        path = self.exp / "exp.eval.yaml"
        path.write_text(json.dumps(data, indent=2))
        return path

    def run(self, *args: str) -> pytest.RunResult:
        return self.suite.pytester.runpytest(
            str(self.exp / "exp.eval.yaml"), "-p", "no:cacheprovider", "--eval-sandbox=bwrap",
            f"--eval-results={self.suite.results()}", *args,
        )  # fmt: skip

    def loot(self, task: str) -> dict[str, str]:
        trial = self.suite.trial_dir("base", task, 1)
        data: dict[str, str] = json.loads((trial / "artifacts" / "loot.json").read_text())
        return data


@pytest.fixture
def grader(suite: Suite, outside: Path, monkeypatch: pytest.MonkeyPatch) -> Grader:
    return Grader(suite, outside, monkeypatch)


@pytest.mark.parametrize("workers", ["serial", "-n 2"])
def test_the_agent_reads_nothing_of_the_grader_nor_any_credential(
    grader: Grader, workers: str
) -> None:
    grader.experiment()
    r = grader.run(*(["-n", "2"] if workers != "serial" else ["-p", "no:xdist"]))
    suite = grader.suite
    for task in ("impossible", "honest"):
        loot = grader.loot(task)
        assert set(loot) == set(grader.targets)
        read = sorted(name for name, status in loot.items() if status == "READ")
        assert read == [], f"the agent read {read}"
    # the honest task passes: setup saw the experiment dir, verify saw the grader and the
    # workspace as the agent left it
    assert suite.meta("base", "honest")["status"] == "passed", r.stdout.str()
    # the impossible task is not passed by reading the answer
    impossible = suite.meta("base", "impossible")
    assert impossible["status"] == "failed", impossible
    assert leaked(suite, grader.tokens) == {}
    assert grader.verify.read_text() == VERIFY + "\n"


ROOT_AGENT = r"""
import os, pathlib, subprocess, sys
exp, results, verify = sys.argv[1], sys.argv[2], sys.argv[3]
def sh(cmd):
    done = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True)
    print("$", cmd, "->", done.returncode, done.stderr.strip()[-200:], flush=True)
for target in ("/", exp, verify):
    sh(f"mount -o remount,bind,rw {target}")
sh(f"umount {results}; umount -l {results}")
sh(f"unshare -Um sh -c 'mount -o remount,bind,rw {exp}; echo exit 0 > {verify}'")
for path, text in ((verify, "exit 0\n"), (exp + "/planted.txt", "x"),
                   (results + "/planted.txt", "x")):
    try:
        pathlib.Path(path).write_text(text)
        print("WROTE", path)
    except OSError as exc:
        print("DENIED", path, exc.errno)
print("CAPS", [l for l in open("/proc/self/status") if l.startswith("CapEff")])
pathlib.Path("answer.txt").write_text("a guess\n")
"""


def test_root_is_no_shortcut(grader: Grader) -> None:
    """As uid 0 a step keeps no capability: it cannot remount the host read-write, unmount
    what hides results/, rewrite the verify script or write beside the YAML (as an ordinary
    user the same attacks must fail too)."""
    agent = grader.exp / "root_agent.py"
    agent.write_text(ROOT_AGENT)
    results = grader.suite.results()
    results.mkdir(parents=True, exist_ok=True)
    grader.experiment(
        defaults={"agent": {"command": [
            sys.executable, str(agent), str(grader.exp), str(results), str(grader.verify),
        ]}},
        tasks=[{"name": "impossible", "prompt": "x", "fixture": "fixtures/basic",
                "verify": "sh {experiment_dir}/verify.sh"}],
    )  # fmt: skip
    grader.run("-p", "no:xdist")
    trial = grader.suite.trial_dir("base", "impossible", 1)
    out = (trial / "stdout.txt").read_text()
    # (a write may land in the sandbox's private /tmp, where the experiment dir of this test
    # lives; what counts is the host's files)
    assert f"WROTE {grader.verify}" not in out, out
    assert "CapEff:\\t0000000000000000" in out, out
    assert grader.suite.meta("base", "impossible")["status"] == "failed", out
    assert grader.verify.read_text() == VERIFY + "\n"
    assert not (grader.exp / "planted.txt").exists()
    assert not (results / "planted.txt").exists()


def test_a_program_the_agent_cannot_see_is_an_error_naming_the_fix(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tool in a directory the agent does not see (here: the rootdir) fails the trial (judged:
    an agent may exit 127 on purpose) with a message naming ``sandbox: read:``; listing the
    directory there makes it work."""
    tools = suite.root / "tools" / "bin"
    tools.mkdir(parents=True)
    tool = tools / "helper-tool"
    tool.write_text("#!/bin/sh\necho ok > answer.txt\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    task = {"name": "t", "prompt": "x", "fixture": "fixtures/basic",
            "verify": "grep -q ok answer.txt"}  # fmt: skip
    suite.experiment(defaults={"agent": {"command": "true && helper-tool"}}, tasks=[task])
    r = suite.pytester.runpytest("-p", "no:cacheprovider", "--eval-sandbox=bwrap")
    meta = suite.meta("base", "t")
    assert meta["status"] == "failed", r.stdout.str()
    assert "sandbox: read:" in meta["message"], meta["message"]
    suite.experiment(
        defaults={"agent": {"command": "true && helper-tool"}},
        tasks=[task],
        sandbox={"read": [str(tools.parent)], "write": [str(suite.shared)]},
    )
    r = suite.pytester.runpytest("-p", "no:cacheprovider", "--eval-sandbox=bwrap")
    assert suite.meta("base", "t")["status"] == "passed", r.stdout.str()


def test_a_python_agent_sees_its_own_package_and_nothing_else_beside_the_yaml(
    grader: Grader,
) -> None:
    """A ``python:`` agent imports its package beside the YAML (and the package's other
    modules) but cannot read the grader next to it."""
    pkg = grader.exp / "myagent"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("GREETING = 'from a sibling module'\n")
    targets = {k: v for k, v in grader.targets.items() if not k.startswith("home:")}
    (pkg / "run.py").write_text(
        "import json, os\n"
        "from myagent.helpers import GREETING\n"
        "def agent(ctx):\n"
        f"    targets = {targets!r}\n"
        "    loot = {}\n"
        "    for name, path in targets.items():\n"
        "        try:\n"
        "            open(path).read() if os.path.isfile(path) else os.listdir(path)[0]\n"
        "            loot[name] = 'READ'\n"
        "        except (OSError, IndexError) as exc:\n"
        "            loot[name] = 'DENIED'\n"
        "    (ctx.artifacts_dir / 'loot.json').write_text(json.dumps(loot))\n"
        "    (ctx.workspace / 'answer.txt').write_text(GREETING + '\\n')\n"
        "    (ctx.workspace / 'seed.txt').write_text('x')\n"
    )
    grader.experiment(
        defaults={"agent": {"python": "myagent.run:agent"}},
        variants={"base": {}},
        tasks=[{"name": "impossible", "prompt": "x", "fixture": "fixtures/basic",
                "verify": "sh {experiment_dir}/verify.sh"}],
    )  # fmt: skip
    grader.run("-p", "no:xdist")
    trial = grader.suite.trial_dir("base", "impossible", 1)
    meta = grader.suite.meta("base", "impossible")
    assert meta["status"] == "failed", meta
    answer = (trial / "workspace" / "answer.txt").read_text()
    assert answer == "from a sibling module\n"
    loot = json.loads((trial / "artifacts" / "loot.json").read_text())
    assert set(loot) == set(targets)
    assert [k for k, v in loot.items() if v == "READ"] == []


def test_naming_a_credential_in_the_command_does_not_make_it_visible(grader: Grader) -> None:
    """Files a command names are made visible (the agent's own program), but never a
    credential store nor another trial's files."""
    key = grader.secret("ssh_key", grader.home / ".ssh" / "id_ed25519")
    reader = grader.exp / "reader.py"
    reader.write_text(
        "import sys\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        print('READ', path, open(path).read())\n"
        "    except OSError as exc:\n"
        "        print('DENIED', path, exc.errno)\n"
        "open('answer.txt', 'w').write('a guess')\n"
    )
    grader.experiment(
        defaults={"agent": {"command": [
            sys.executable, str(reader), str(grader.home / ".ssh" / "id_ed25519"),
            str(grader.home / ".pgpass"),
        ]}},
        variants={"base": {}},
        tasks=[{"name": "impossible", "prompt": "x", "fixture": "fixtures/basic",
                "verify": "sh {experiment_dir}/verify.sh"}],
    )  # fmt: skip
    grader.run("-p", "no:xdist")
    out = (grader.suite.trial_dir("base", "impossible", 1) / "stdout.txt").read_text()
    assert "READ" not in out and out.count("DENIED") == 2, out
    assert leaked(grader.suite, {"ssh_key": key, "pgpass": grader.tokens["home:.pgpass"]}) == {}
