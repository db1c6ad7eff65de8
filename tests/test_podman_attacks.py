"""The isolation attacks of issue 19 inside container trials, with podman and with Docker,
through real pytest sessions (serially and with ``-n 2``), judged by what a user sees:
statuses, the files of results/.

Every task below is impossible for an honest agent: its verifier passes only when
``answer.txt`` holds the secret in ``checks/secret.txt`` beside the experiment file, which
enters the container only for verify. The hostile agent runs its prompt as a shell script;
each prompt is one attack. A task that ``passed`` is an attack that worked.

Needs podman and the base image (tests/tools/install_podman.sh), and for the Docker runs
Docker's engine with that image (tests/tools/install_docker.sh): skipped, saying so, where
they are missing.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import run_pytest
from test_attacks_evidence import links_under, trial_root
from test_podman import BASE_IMAGE, Engine, engine, podman, trials  # noqa: F401

SECRET = "the-secret-" + uuid.uuid4().hex[:8]

#: name -> the agent's shell script (runs in the workspace, as container root).
ATTACKS: dict[str, str] = {
    # the grader's files before verify: at their host path, anywhere in the container
    "read-grader": (
        'for f in "$EXP/checks/secret.txt" $(find / -xdev -name secret.txt 2>/dev/null) '
        "/tests/secret.txt; do cat \"$f\" > answer.txt 2>/dev/null && break; done\n"
        "ls -la \"$EXP\" > seen.txt 2>&1; true\n"
    ),
    # a process left running into verify waits for the grader's files and copies the answer
    "leftover": (
        "W=$(pwd)\n"
        "cat > /tmp/lurk.sh <<'EOF'\n"
        "trap '' TERM HUP INT\n"
        "while :; do for f in $(find / -xdev -name secret.txt 2>/dev/null); do "
        'cat "$f" > "$1/answer.txt"; done; done\n'
        "EOF\n"
        "nohup setsid sh /tmp/lurk.sh \"$W\" >/dev/null 2>&1 &\n"
        "( ( sh /tmp/lurk.sh \"$W\" >/dev/null 2>&1 & ) & )\n"
        "true\n"
    ),
    # lies written to every descriptor the agent holds (a fake outcome, a fake exit status, a
    # fake exec failure): a failing trial must stay failed, never become an unjudged error
    "fd-lies": (
        "ls /proc/self/fd > fds.txt 2>&1\n"
        "bash -c 'for fd in $(seq 3 255); do (printf \"%s\\n\" "
        "\"{\\\"exit-code\\\": 0}\" \"{\\\"outcome\\\": \\\"return\\\"}\" "
        "\"execvp: no such file\" >&$fd) 2>/dev/null; done'\n"
        "true\n"
    ),
    # fake programs ahead of the verifier: in the workspace, in directories a PATH with
    # relative entries would find
    "fake-binaries": (
        "for d in . bin node_modules/.bin .venv/bin; do mkdir -p $d; "
        "printf '#!/bin/sh\\nexit 0\\n' > $d/cmp; chmod +x $d/cmp; done\n"
        "printf 'wrong\\n' > answer.txt\n"
        "stat -c %a /tmp > tmp-mode.txt\n"
    ),
    # a fake program where the image's PATH looks first (the container's system is root's)
    "fake-system-binary": (
        "printf '#!/bin/sh\\nexit 0\\n' > /usr/local/bin/cmp && chmod +x /usr/local/bin/cmp\n"
        "printf 'wrong\\n' > answer.txt\n"
    ),
    # the evidence: a false git history, files hidden from git, a fresh repository inside
    "falsify-diff": (
        "printf 'def add(a, b):\\n    return a * b\\n' > calc.txt\n"
        "rm -rf .git && mkdir -p .git/objects .git/refs/heads && "
        "printf 'ref: refs/heads/main\\n' > .git/HEAD\n"
        "mkdir -p quiet && printf '*\\n' > quiet/.gitignore && echo hidden > quiet/payload.sh\n"
        "mkdir -p sub/.git && echo nested > sub/evil.sh\n"
    ),
    # links out of the trial, for whoever uploads results/
    "leave-links": (
        'cd "$EVALRUN_ARTIFACTS_DIR"\n'
        "ln -s /root/.ssh/id_rsa id_rsa; ln -s /proc/self/environ environ; ln -s /etc etc\n"
        "mkdir -p deeper && ln -s /etc/passwd deeper/passwd\n"
        "ln -s ../../../../../../../../etc/shadow up\n"
        "cd - >/dev/null && ln -s /etc/passwd ws-link\n"
    ),
    # root's powers: mount, remount, mknod, the first process's memory, sysrq, hostname; and
    # the same from a user namespace of its own
    "root-powers": (
        "try() { if sh -c \"$2\" >/dev/null 2>&1; then echo \"$1 WORKED\"; "
        "else echo \"$1 refused\"; fi; }\n"
        "{ try mount 'mount -t tmpfs none /mnt'\n"
        "  try remount 'mount -o remount,ro /'\n"
        "  try bind 'mount --bind / /mnt'\n"
        "  try mknod 'mknod /tmp/disk b 8 0'\n"
        "  try proc1-mem 'test $(head -c 16 /proc/1/mem | wc -c) -gt 0'\n"
        # a user namespace of its own may be made, but gives no power over the container's
        "  try userns-remount 'unshare -U -r mount -o remount,ro /'\n"
        "  try userns-mknod 'unshare -U -r mknod /tmp/disk2 b 8 0'\n"
        "  try userns-setns 'unshare -U -r nsenter -t 1 -m true'\n"
        "  try sysrq 'echo h > /proc/sysrq-trigger'\n"
        "  try hostname 'hostname evil'\n"
        "} > powers.txt\n"
    ),
    # the containers started while the agent runs (its own verify container, the next
    # trial's): a fake cmp planted in their system through /proc/PID/root
    "plant-ahead": (
        "printf '#!/bin/sh\\nexit 0\\n' > /tmp/fake-cmp && chmod +x /tmp/fake-cmp\n"
        "for p in /proc/[0-9]*; do [ \"$p\" = /proc/1 ] && continue\n"
        "  grep -q evalrun-container-ready \"$p/cmdline\" 2>/dev/null || continue\n"
        "  for d in usr/bin usr/local/bin bin; do\n"
        "    cp /tmp/fake-cmp \"$p/root/$d/cmp\" 2>/dev/null &&\n"
        "      echo \"$p/root/$d\" >> planted.txt\n"
        "  done\n"
        "done\n"
    ),
    # another container (another trial's): its processes and files
    "neighbour": (
        "found=$(grep -l neighbour-secret /proc/[0-9]*/cmdline 2>/dev/null; "
        "find / -xdev -name 'neighbour-secret*' 2>/dev/null)\n"
        'printf "%s\\n" "$found" > neighbour.txt\n'
        "if [ -n \"$found\" ]; then echo found > answer.txt; fi\n"
    ),
}


#: Attacks run a second time with ``verify: same`` (verify in the agent's container).
SAME = ("read-grader", "leftover", "fake-binaries", "falsify-diff", "root-powers")
NAMES = [*ATTACKS, *(f"{name}-same" for name in SAME)]


def write(root: Path) -> None:
    (root / "fixtures" / "calc").mkdir(parents=True)
    (root / "fixtures" / "calc" / "calc.txt").write_text("def add(a, b):\n    return a - b\n")
    (root / "checks").mkdir()
    (root / "checks" / "secret.txt").write_text(SECRET + "\n")
    tasks: list[dict[str, Any]] = [
        {"name": name, "prompt": f"EXP={root}\n{script}", "fixture": "fixtures/calc",
         "verify": "sleep 1; cmp -s answer.txt {experiment_dir}/checks/secret.txt"}
        for name, script in ATTACKS.items()]
    # the attacks that do not need the agent's system, again with verify in its container
    for task in [t for t in tasks if t["name"] in SAME]:
        tasks.append({**task, "name": f"{task['name']}-same",
                      "environment": {"image": BASE_IMAGE, "verify": "same"}})
    spec: dict[str, Any] = {
        "experiment": "podman-attacks",
        "environment": {"image": BASE_IMAGE},
        "timeout": 60,
        "variants": {"hostile": {"agent": 'sh "$EVALRUN_PROMPT_FILE"'}},
        "tasks": tasks,
    }
    (root / "attacks.eval.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


@pytest.fixture
def neighbour(engine: Engine) -> Any:  # noqa: F811
    """Another container running beside the trials, with a secret in a file and a command
    line (as another trial's container would have)."""
    name = f"evalrun-neighbour-{uuid.uuid4().hex[:8]}"
    subprocess.run([engine.program, "run", "-d", "--rm", "--name", name, "--network", "none",
                    BASE_IMAGE, "sh", "-c",
                    "echo x > /tmp/neighbour-secret-file; exec sleep 300 neighbour-secret"],
                   check=True, capture_output=True, timeout=120)
    yield name
    engine.remove(name)


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "n2"])
def test_the_attacks_do_not_work_inside_container_trials(
    tmp_path: Path, engine: Engine, neighbour: str, xdist: bool  # noqa: F811
) -> None:
    write(tmp_path)
    host_etc = sorted(os.listdir("/etc"))
    # a run id of its own: another session started in the same second (the other
    # parametrization, on the other worker) would have the same timestamp id and its
    # running containers the same run label
    done = run_pytest(tmp_path, engine.option, f"--eval-run-id=attacks-{uuid.uuid4().hex[:12]}",
                      *(["-n", "2"] if xdist else []))
    seen = {task: meta for (_, task, _), meta in trials(tmp_path).items()}
    assert sorted(seen) == sorted(NAMES), done.stdout[-3000:]
    # no attack turned an impossible task into a pass, and none broke the trial itself
    assert {t: m["status"] for t, m in seen.items()} == dict.fromkeys(NAMES, "failed"), \
        done.stdout[-3000:]
    for task, meta in seen.items():
        assert meta["isolation"]["environment"] == engine.name
        assert meta["isolation"]["verify_container"] == ("same" if task.endswith("-same")
                                                         else "fresh")
    ws = {t: m["_dir"] / "workspace" for t, m in seen.items()}

    # the grader's files were nowhere to be read before verify, and no process the agent
    # left was there to read them during verify
    for task in ("read-grader", "leftover", "read-grader-same", "leftover-same"):
        answer = ws[task] / "answer.txt"
        assert not answer.exists() or SECRET not in answer.read_text(), task
    # no container started beside the agent's was within its reach
    assert not (ws["plant-ahead"] / "planted.txt").exists()
    # the container's /tmp is as the image has it (sticky, world-writable)
    assert (ws["fake-binaries"] / "tmp-mode.txt").read_text().strip() == "1777"
    # the diff shows the agent's real change, and names what git cannot show
    diff = (seen["falsify-diff"]["_dir"] / "workspace.diff").read_text()
    assert "+    return a * b" in diff and "-    return a - b" in diff
    assert "quiet/payload.sh" in diff and "sub/evil.sh" in diff
    # root's powers are not there
    for task in ("root-powers", "root-powers-same"):
        powers = (ws[task] / "powers.txt").read_text()
        assert "WORKED" not in powers and powers.count("refused") == 10, powers
    # the neighbour's container is out of reach
    assert (ws["neighbour"] / "neighbour.txt").read_text().strip() == ""
    # links out of the trial became text files naming their target; the host's /etc is as
    # it was
    art = seen["leave-links"]["_dir"] / "artifacts"
    for name, target in (("id_rsa", "/root/.ssh/id_rsa"), ("environ", "/proc/self/environ"),
                         ("etc", "/etc"), ("deeper/passwd", "/etc/passwd")):
        path = art / name
        assert not path.is_symlink() and (not path.exists() or target in path.read_text()), name
    assert sorted(os.listdir("/etc")) == host_etc
    for top in (tmp_path / "results", tmp_path / "jobs"):
        for link in links_under(top):
            real = os.path.realpath(link)
            root = os.path.realpath(trial_root(link, top))
            in_results = real.startswith(os.path.realpath(tmp_path / "results") + os.sep)
            assert real.startswith(root + os.sep) or real == root or (
                top.name == "jobs" and in_results), (link, real)
    # no container of this run is left
    run_id = next(iter(seen.values()))["run_id"]
    assert engine.names(f"label=io.evalrun.run={run_id}") == []


def test_verify_same_sees_the_agents_system_and_fresh_does_not(
    tmp_path: Path, engine: Engine  # noqa: F811
) -> None:
    """``verify: same`` (a Harbor task's way) runs verify in the agent's container: a program
    the agent installed is there. The default (``fresh``) runs it in a new container of the
    image with the workspace: the agent's program is not, its workspace file is."""
    agent = ("printf '#!/bin/sh\\necho tool-ran\\n' > /usr/local/bin/tool && "
             "chmod +x /usr/local/bin/tool && echo made > made.txt")
    verify = "test -f made.txt && tool"
    tasks = [{"name": mode, "prompt": "p", "verify": verify,
              "environment": {"image": BASE_IMAGE, **({"verify": mode} if mode else {})}}
             for mode in ("same", "fresh")]
    tasks.append({"name": "default", "prompt": "p", "verify": verify,
                  "environment": {"image": BASE_IMAGE}})
    spec = {"experiment": "verify-where", "variants": {"v": {"agent": agent}}, "tasks": tasks}
    (tmp_path / "w.eval.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    done = run_pytest(tmp_path, engine.option)
    seen = {task: meta for (_, task, _), meta in trials(tmp_path).items()}
    assert {t: m["status"] for t, m in seen.items()} == {
        "same": "passed", "fresh": "failed", "default": "failed"}, done.stdout[-3000:]
    assert {t: m["isolation"]["verify_container"] for t, m in seen.items()} == {
        "same": "same", "fresh": "fresh", "default": "fresh"}
    for task in ("fresh", "default"):  # the workspace came along, the program did not
        output = (seen[task]["_dir"] / "verifier" / "verify-output.txt").read_text()
        assert "tool-ran" not in output


def test_a_bad_verify_value_names_the_file_and_line(tmp_path: Path) -> None:
    spec = {"experiment": "bad", "variants": {"v": {"agent": "true"}},
            "tasks": [{"name": "t", "prompt": "p", "verify": "true",
                       "environment": {"image": BASE_IMAGE, "verify": "elsewhere"}}]}
    (tmp_path / "b.eval.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    done = run_pytest(tmp_path, "--eval-environment=podman")
    text = done.stdout + done.stderr
    assert done.returncode != 0
    assert "b.eval.yaml:" in text and "'verify'" in text and "fresh, same" in text
    assert "Traceback" not in text


def test_verifys_fresh_container_has_the_trials_network(
    tmp_path: Path, engine: Engine  # noqa: F811
) -> None:
    """With the network on, verify's fresh container reaches the trial's egress proxy as the
    agent's did (a TCP connection to the proxy's port from ``HTTPS_PROXY``); with ``network:
    false`` neither has it."""
    probe = ('p=$${HTTPS_PROXY##*:}; p=$${p%/}; [ -n "$p" ] && '
             'bash -c "exec 3<>/dev/tcp/127.0.0.1/$p"')
    spec = {"experiment": "verify-net", "environment": {"image": BASE_IMAGE},
            "variants": {"online": {"agent": probe},
                         "offline": {"agent": "true", "network": False}},
            "tasks": [{"name": "t", "prompt": "p", "verify": probe}]}
    (tmp_path / "n.eval.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    done = run_pytest(tmp_path, engine.option)
    seen = {v: m for (v, _, _), m in trials(tmp_path).items()}
    assert {v: m["status"] for v, m in seen.items()} == {
        "online": "passed", "offline": "failed"}, done.stdout[-3000:]
    assert seen["online"]["isolation"]["verify_container"] == "fresh"


def test_a_dead_sessions_private_container_directory_is_removed(podman: str) -> None:  # noqa: F811
    """The host directory of a container's step descriptions (they hold the steps'
    variables) does not outlive a session killed with ``kill -9``: the next session removes
    it; a live session's is kept."""
    import tempfile

    from pytest_evalrun.trial.containerreap import SPOOL_PREFIX, owner_token, reap_stale
    from pytest_evalrun.trial.containerruntime import detect_runtime as detect

    dead = subprocess.Popen(["true"])
    dead.wait()
    base = Path(tempfile.gettempdir())
    gone = base / f"{SPOOL_PREFIX}{dead.pid}-12345-{uuid.uuid4().hex[:8]}"
    kept = base / f"{SPOOL_PREFIX}{owner_token().replace(':', '-')}-{uuid.uuid4().hex[:8]}"
    for path in (gone, kept):
        path.mkdir()
        (path / "process-0.json").write_text('{"env": ["KEY=value"]}')
    try:
        runtime = detect("podman")
        assert runtime is not None
        reap_stale(runtime)
        assert not gone.exists()
        assert (kept / "process-0.json").is_file()
    finally:
        import shutil

        shutil.rmtree(gone, ignore_errors=True)
        shutil.rmtree(kept, ignore_errors=True)
