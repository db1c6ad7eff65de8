"""Shared helpers for the benchmark scripts (not tests: run them as ``python bench/bench_*.py``).

Every figure is a ratio ``subject / baseline`` where both sides are measured in the same script
run, interleaved (baseline, subject, baseline, subject, ...), and the best (minimum) of the
repeats is kept on each side: the machine is small and shared, so only ratios of best-of-N
timings are meaningful.

Conventions used on both sides of every figure:

* ``-p no:cacheprovider`` (no ``.pytest_cache`` reads or writes),
* stdout/stderr of the measured pytest go to a file (never a terminal),
* every suite lives in a fresh ``/tmp/bench-*`` directory with its own empty ``pytest.ini`` so
  the repository's configuration is never picked up,
* "plain pytest" baselines run with ``-p no:evalrun`` (pytest + pytest-xdist only, our plugin
  not loaded), so that they measure what pytest itself costs.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
PY = sys.executable

COMMON = ["-p", "no:cacheprovider"]
#: Captured outputs of the real agent CLIs (bench/make_agent_transcripts.py), one folder each.
AGENT_TRANSCRIPTS = BENCH / "data" / "agent_transcripts"


def agent_samples() -> Iterator[tuple[str, str, str]]:
    """(cli, stdout, transcript) of every captured agent CLI run, by CLI name."""
    for folder in sorted(p for p in AGENT_TRANSCRIPTS.iterdir() if p.is_dir()):
        stdout = gzip.decompress((folder / "stdout.jsonl.gz").read_bytes()).decode()
        doc = folder / "transcript.json.gz"
        path = doc if doc.exists() else folder / "transcript.jsonl.gz"
        yield folder.name, stdout, gzip.decompress(path.read_bytes()).decode()
PLAIN = ["-p", "no:evalrun"]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "EVALRUN_", "GIT_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in the generated suites
    return env


def compile_plugin() -> None:
    """Byte-compile pytest_evalrun, as ``pip install`` does for pytest and every other
    installed package: an editable install under PYTHONDONTWRITEBYTECODE would otherwise
    compile the plugin from source in every measured run (~80 ms here)."""
    import compileall

    import pytest_evalrun
    compileall.compile_dir(os.path.dirname(pytest_evalrun.__file__), quiet=1)


compile_plugin()


def tmpdir(name: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir="/tmp"))
    (d / "pytest.ini").write_text("[pytest]\n")
    return d


def pytest_cmd(*args: str) -> list[str]:
    return [PY, "-m", "pytest", *COMMON, *args]


def run(cmd: Sequence[str], cwd: Path, *, log: Path | None = None,
        ok: Sequence[int] = (0,), env: dict[str, str] | None = None) -> float:
    """Run ``cmd``; return its wall time in seconds. Fails loudly on an unexpected exit."""
    log = log or (OUT / "last.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        rc = subprocess.call(list(cmd), cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                             env=env or clean_env())
        dt = time.perf_counter() - t0
    if rc not in ok:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"command failed (exit {rc}): {' '.join(cmd)}\n{tail}")
    return dt


_RSS_WRAPPER = textwrap.dedent("""
    import resource, subprocess, sys
    with open(sys.argv[1], "wb") as fh:
        rc = subprocess.call(sys.argv[3:], cwd=sys.argv[2], stdout=fh, stderr=subprocess.STDOUT)
    print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
""")


def max_rss_kib(cmd: Sequence[str], cwd: Path, *, log: Path | None = None) -> int:
    """Peak RSS (KiB) of ``cmd`` run from a fresh wrapper process (RUSAGE_CHILDREN)."""
    log = log or (OUT / "last.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    out = subprocess.check_output([PY, "-c", _RSS_WRAPPER, str(log), str(cwd), *cmd],
                                  env=clean_env(), text=True)
    rc, rss = out.split()
    if int(rc) != 0:
        raise SystemExit(f"command failed (exit {rc}): {' '.join(cmd)}\n"
                         + log.read_text(errors="replace")[-3000:])
    return int(rss)


def interleave(subject: Callable[[], float], baseline: Callable[[], float], repeats: int,
               label: str = "") -> tuple[float, float, list[float], list[float]]:
    """Alternate baseline and subject ``repeats`` times; return (best subject, best baseline,
    all subject samples, all baseline samples). Lower is better for every quantity."""
    subs: list[float] = []
    bases: list[float] = []
    for i in range(repeats):
        bases.append(baseline())
        subs.append(subject())
        print(f"  [{label} {i + 1}/{repeats}] subject {subs[-1]:.3f}  baseline {bases[-1]:.3f}",
              flush=True)
    return min(subs), min(bases), subs, bases


def result(name: str, figure: int, what: str, subject: float, baseline: float, target: float,
           unit: str = "s", **extra: object) -> dict[str, object]:
    ratio = subject / baseline
    data: dict[str, object] = {
        "name": name, "figure": figure, "what": what, "unit": unit,
        "subject": round(subject, 4), "baseline": round(baseline, 4),
        "ratio": round(ratio, 3), "target": target, "met": ratio <= target, **extra,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2))
    return data


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    import pytest
    try:
        import xdist
        xv = xdist.__version__
    except Exception:
        xv = "?"
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": model, "memory": mem,
            "python": platform.python_version(), "pytest": pytest.__version__, "xdist": xv,
            "git": git, "kernel": platform.release()}


# -- suite generators ---------------------------------------------------------------------

def write_fixture(root: Path, n_files: int = 10) -> Path:
    fx = root / "fixtures" / "app"
    fx.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (fx / f"file{i:02d}.py").write_text(f"# file {i}\n" + "x = 1\n" * 20)
    return fx


def write_experiment(path: Path, *, name: str, variants: dict[str, str],
                     tasks: list[dict[str, object]], trials: int = 1, fixture: str | None,
                     timeout: int = 600) -> None:
    """An experiment file. ``variants`` maps name -> agent (shell string);
    each task: {name, trials?, env?}; every task uses verify ``true``."""
    lines = [f"experiment: {name}", f"trials: {trials}", f"timeout: {timeout}", "variants:"]
    for v, agent in variants.items():
        lines.append(f"  {v}:")
        lines.append(f"    agent: {json.dumps(agent)}")
    lines.append("tasks:")
    for t in tasks:
        lines.append(f"  - name: {t['name']}")
        lines.append("    prompt: Do the thing.")
        if fixture:
            lines.append(f"    fixture: {fixture}")
        lines.append("    verify: \"true\"")
        if "trials" in t:
            lines.append(f"    trials: {t['trials']}")
        if "env" in t:
            lines.append("    env: {" + ", ".join(f"{k}: {json.dumps(v)}"
                                                  for k, v in t["env"].items()) + "}")  # type: ignore[union-attr]
    path.write_text("\n".join(lines) + "\n")


def write_param_test(path: Path, n: int) -> None:
    path.write_text(textwrap.dedent(f"""
        import pytest

        @pytest.mark.parametrize("i", range({n}))
        def test_p(i):
            pass
    """))


def grid_suite(name: str, *, variants: int, tasks: int, trials: int, variant_digits: int = 1,
               task_digits: int = 3, plain: bool = False) -> Path:
    """A fresh directory holding ``exp/<name>.eval.yaml``: ``variants`` variants (``v0``...,
    agent ``true``) x ``tasks`` tasks (``task-000``...) x ``trials`` trials on a 10-file
    fixture; with ``plain``, ``plain/test_param.py`` of as many trivial parametrized tests."""
    root = tmpdir(name)
    exp = root / "exp"
    exp.mkdir()
    write_fixture(exp, 10)
    write_experiment(
        exp / f"{name}.eval.yaml", name=name,
        variants={f"v{i:0{variant_digits}d}": "true" for i in range(variants)},
        tasks=[{"name": f"task-{i:0{task_digits}d}"} for i in range(tasks)],
        trials=trials, fixture="fixtures/app")
    if plain:
        (root / "plain").mkdir()
        write_param_test(root / "plain" / "test_param.py", variants * tasks * trials)
    return root


def eval_args(root: Path, tag: str) -> list[str]:
    """Fresh results/jobs dirs for one measured run (removed first)."""
    res, jobs = root / f"results-{tag}", root / f"jobs-{tag}"
    shutil.rmtree(res, ignore_errors=True)
    shutil.rmtree(jobs, ignore_errors=True)
    return ["--eval-results", str(res), "--eval-jobs", str(jobs)]


def arg_repeats(default: int) -> int:
    for i, a in enumerate(sys.argv):
        if a == "--repeats" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if a.startswith("--repeats="):
            return int(a.split("=", 1)[1])
    return default


def keep_tmp() -> bool:
    return "--keep" in sys.argv
