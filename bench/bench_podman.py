"""Trials in podman against a bash loop of ``podman run`` doing the same work (target: ratio at
most 1.10), and image build caching (a second session builds nothing).

Run: python bench/bench_podman.py [--trials 200] [--workers 1] [--verify fresh|same]
[--no-caching]
Needs podman and the base image (tests/tools/install_podman.sh).

Same work on both sides, per trial: a fresh container of the base image with no network, a
two-file fixture copied in, the agent (a ``sed`` fixing a line), verify (``grep``), the
workspace copied back to the host; then the container is removed.

- pytest-evalrun: one experiment file, ``--eval-environment podman``, N trials (``-n`` workers
  when --workers > 1), wall time of the whole session.
- the loop: ``for i in 1..N: podman run --rm --network none -v FIXTURE:/src:ro IMAGE sh -c
  'cp -r /src /w && cd /w && AGENT && VERIFY && tar -c .' | tar -x -C out/i``, run with the
  same parallelism (``xargs -P``).
- the same-work loop: what our trial does besides: the fixture copied to out/i on the host
  and made a git snapshot there (``git init``, ``add -A``, ``commit``), that mounted instead
  of the fixture; with ``verify: fresh`` (the default) the agent's ``podman run`` copies the
  workspace out and a second ``podman run`` of the image verifies it (and copies it out
  again); then ``git add -A && git diff --cached HEAD`` on the host (our workspace.diff).
  Reported as ``ratio_same_work`` next to the plain ``ratio``.

The experiment directory holds the fixture and the session only: the loops write elsewhere
(verify's container gets the experiment directory, so their output there would be copied
into every trial).

Caching: a session over one task built from a Dockerfile with fresh content (it builds), then
a second session (it must build nothing: the image keeps its id and creation time, and the
second session is not slower than the first by the build's time).

Writes bench/out/podman.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
IMAGE = os.environ.get("EVALRUN_BASE_IMAGE", "localhost/evalrun-debian:bookworm")
TARGET = 1.10
AGENT = "sed -i 's/return a - b/return a + b/' calc.txt"
VERIFY = "grep -q 'return a + b' calc.txt"


def fixture(root: Path) -> Path:
    fix = root / "fixtures" / "calc"
    fix.mkdir(parents=True)
    (fix / "calc.txt").write_text("def add(a, b):\n    return a - b\n")
    (fix / "README").write_text("a fixture\n")
    return fix


def pytest_session(root: Path, trials: int, workers: int, verify: str | None = None) -> float:
    environment: dict[str, object] = {"image": IMAGE}
    if verify:
        environment["verify"] = verify
    spec = {"experiment": "bench-podman", "environment": environment, "trials": trials,
            "variants": {"fixer": {"agent": AGENT}},
            "tasks": [{"name": "fix", "prompt": "fix add", "fixture": "fixtures/calc",
                       "verify": VERIFY}]}
    (root / "b.eval.yaml").write_text(yaml.safe_dump(spec))
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "--eval-environment=podman"]
    if workers > 1:
        args += ["-n", str(workers)]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=root, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the pytest session failed:\n{done.stdout[-3000:]}")
    return took


def bash_loop(root: Path, fix: Path, trials: int, workers: int, *, fresh: bool = False,
              git: bool = False) -> float:
    """The loop's wall time. ``fresh``: verify in a second ``podman run`` of the image with
    the workspace the first one copied out (as ``verify: fresh``); ``git``: the workspace is
    a git snapshot made on the host before and diffed after (as our trial's snapshot and
    ``workspace.diff``). Both off: the plain loop."""
    out = root / ("loop" + ("-fresh" if fresh else "") + ("-git" if git else ""))
    out.mkdir()
    # the plain loop mounts the fixture itself; with git, the host's snapshot of it
    source = '"$d"' if git else f'"{fix}"'
    run = f"podman run --rm --network none -v {source}:/src:ro {IMAGE} sh -c"
    rerun = f'podman run --rm --network none -v "$d":/src:ro {IMAGE} sh -c'
    if fresh:
        agent = shlex.quote(f"cp -r /src /w && cd /w && {AGENT} && tar -c .")
        verify = shlex.quote(f"cp -r /src /w && cd /w && {VERIFY} && tar -c .")
        work = f'{run} {agent} | tar -x -C "$d"; {rerun} {verify} | tar -x -C "$d"'
    else:
        inner = shlex.quote(f"cp -r /src /w && cd /w && {AGENT} && {VERIFY} && tar -c .")
        work = f'{run} {inner} | tar -x -C "$d"'
    git_env = "export GIT_AUTHOR_NAME=e GIT_AUTHOR_EMAIL=e@e GIT_COMMITTER_NAME=e " \
              "GIT_COMMITTER_EMAIL=e@e; "
    before = (f'{git_env}git -C "$d" init -q && git -C "$d" add -A && '
              'git -C "$d" commit -q -m snapshot; ') if git else ""
    after = ('; git -C "$d" add -A && git -C "$d" diff --cached HEAD > "$d.diff"'
             if git else "")
    copy = f'cp -r "{fix}/." "$d"; ' if git else ""
    script = f'set -e; d="$1/$2"; mkdir -p "$d"; {copy}{before}{work}{after}'
    numbers = "\n".join(str(i) for i in range(trials)) + "\n"
    start = time.perf_counter()
    done = subprocess.run(["xargs", "-P", str(workers), "-I{}", "bash", "-c", script, "loop",
                           str(out), "{}"], input=numbers, text=True, capture_output=True,
                          check=False)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the bash loop failed:\n{done.stderr[-3000:]}")
    fixed = sum("return a + b" in (p / "calc.txt").read_text() for p in out.iterdir()
                if p.is_dir())
    assert fixed == trials, (fixed, trials)
    return took


def caching(root: Path) -> dict[str, object]:
    marker = uuid.uuid4().hex
    image_dir = root / "image"
    image_dir.mkdir()
    (image_dir / "Dockerfile").write_text(f"FROM {IMAGE}\nRUN echo {marker} > /marker\n")
    spec = {"experiment": "bench-build", "variants": {"v": {"agent": "true"}},
            "tasks": [{"name": "t", "prompt": "p", "verify": f"grep -q {marker} /marker",
                       "environment": {"dockerfile": "image/Dockerfile"}}]}
    (root / "c.eval.yaml").write_text(yaml.safe_dump(spec))
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "c.eval.yaml"]
    times, identity = [], []
    tag = ""
    for _ in range(2):
        start = time.perf_counter()
        done = subprocess.run(args, cwd=root, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"the caching session failed:\n{done.stdout[-3000:]}")
        meta = next((root / "results").glob("bench-build/*/variants/v/tasks/t/trials/*/meta.json"))
        tag = json.loads(meta.read_text())["isolation"]["image"]
        identity.append(subprocess.run(
            ["podman", "image", "inspect", "--format", "{{.Id}} {{.Created}}", tag],
            capture_output=True, text=True, check=True).stdout.strip())
        shutil.rmtree(root / "results")
    subprocess.run(["podman", "rmi", "-f", tag], capture_output=True, check=False)
    return {"first_session_s": round(times[0], 2), "second_session_s": round(times[1], 2),
            "second_builds_nothing": identity[0] == identity[1]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--verify", choices=("fresh", "same"), default=None,
                        help="environment: {verify: ...} of the trials (default: the plugin's)")
    parser.add_argument("--no-caching", action="store_true", help="skip the caching check")
    args = parser.parse_args()
    if shutil.which("podman") is None:
        raise SystemExit("podman is not installed: run tests/tools/install_podman.sh")
    with tempfile.TemporaryDirectory(prefix="bench-podman-") as tmp:
        # the experiment directory holds the fixture and nothing of the loops' (verify's
        # container gets the experiment directory: their output there would be copied in
        # with it, N directories per trial)
        root, loops, build = Path(tmp) / "exp", Path(tmp) / "loops", Path(tmp) / "build"
        for directory in (root, loops, build):
            directory.mkdir()
        fix = fixture(root)
        loop_s = bash_loop(loops, fix, args.trials, args.workers)
        # the same work as our trial: a second container for verify unless ``same``, and
        # the host's git snapshot and diff
        same_s = bash_loop(loops, fix, args.trials, args.workers,
                           fresh=args.verify != "same", git=True)
        ours_s = pytest_session(root, args.trials, args.workers, args.verify)
        cache = {} if args.no_caching else caching(build)
    ratio = ours_s / loop_s
    figures = {"trials": args.trials, "workers": args.workers, "verify": args.verify or "default",
               "load_average": os.getloadavg()[0], "pytest_evalrun_s": round(ours_s, 2),
               "bash_loop_s": round(loop_s, 2), "ratio": round(ratio, 2), "target": TARGET,
               "met": ratio <= TARGET, "per_trial_ms": round(1000 * ours_s / args.trials, 1),
               "loop_per_trial_ms": round(1000 * loop_s / args.trials, 1),
               "same_work_loop_s": round(same_s, 2),
               "same_work_loop_per_trial_ms": round(1000 * same_s / args.trials, 1),
               "ratio_same_work": round(ours_s / same_s, 2), "caching": cache}
    print(json.dumps(figures, indent=1))
    (BENCH / "out").mkdir(exist_ok=True)
    (BENCH / "out" / "podman.json").write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
