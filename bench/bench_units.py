"""Time limits of single functions that the unit tests check for behaviour only (a test that
asserts a wall-clock bound fails on a loaded machine; here the machine's load is a known caveat).

Each check runs in this process, best of N repeats, against an absolute ceiling:

* loading an experiment file of 10 variants x 1,000 tasks x 10 trials (100,000 items);
* refusing a "billion laughs" file (aliases that would expand to 10^9 nodes);
* refusing a file nested 200,000 levels deep;
* masking 50 secrets in ~5 MB of text with none in it, and with two in it.

Run: python bench/bench_units.py [--repeats N]     exit status 1 when a ceiling is exceeded
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c

from pytest_evalrun.experiment.errors import ExperimentError
from pytest_evalrun.experiment.load import load_experiment
from pytest_evalrun.secrets import Redactor

MINIMAL = "variants:\n  a: {agent: [my-agent]}\ntasks:\n  - name: t\n    prompt: p\n    verify: v\n"


def big_file(directory: Path) -> Path:
    lines = ["experiment: big", "trials: 10",
             "defaults:", "  agent: {command: [agent, --prompt-file, '{prompt_file}']}",
             "  env: {API_TOKEN: '${TOKEN:-x}'}", "variants:"]
    lines += [f"  v{v}: {{model: m{v}, env: {{N: '{v}'}}}}" for v in range(10)]
    lines.append("tasks:")
    for t in range(1000):
        lines += [f"  - name: task-{t}", f"    prompt: 'Fix build number {t}, please'",
                  "    verify: [./check.sh, --strict]", "    tags: [build, fast]",
                  "    timeout: 300"]
    path = directory / "big.eval.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def laughs_file(directory: Path) -> Path:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    path = directory / "laughs.eval.yaml"
    path.write_text(MINIMAL + "description:\n  " + "\n  ".join(lines) + "\n")
    return path


def deep_file(directory: Path) -> Path:
    path = directory / "deep.eval.yaml"
    path.write_text(MINIMAL + "description: " + "[" * 200_000 + "]" * 200_000 + "\n")
    return path


def refused(path: Path) -> Callable[[], None]:
    def run() -> None:
        try:
            load_experiment(path, environ={})
        except ExperimentError:
            return
        raise SystemExit(f"{path.name} was loaded; it must be refused")
    return run


def best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    repeats = c.arg_repeats(5)
    text = "lorem ipsum dolor sit amet " * 200_000
    redactor = Redactor([f"secret-value-{i}" for i in range(50)])
    with tempfile.TemporaryDirectory(prefix="bench-units-") as tmp:
        d = Path(tmp)
        big, laughs, deep = big_file(d), laughs_file(d), deep_file(d)
        checks: list[tuple[str, Callable[[], object], float]] = [
            ("load 100,000 trial items", lambda: load_experiment(big, environ={}), 1.0),
            ("refuse a billion-laughs file", refused(laughs), 1.0),
            ("refuse a file nested 200,000 deep", refused(deep), 1.0),
            ("mask 50 secrets in 5 MB, none there",
             lambda: (redactor.redact(text), redactor.redact_bytes(text.encode())), 1.0),
            ("mask 50 secrets in 5 MB, two there",
             lambda: redactor.redact(text + "secret-value-7 secret-value-42"), 2.0),
        ]
        failed = 0
        print(f"{'check':<40} {'best':>8} {'ceiling':>8}  met")
        for what, fn, ceiling in checks:
            seconds = best(fn, repeats)
            met = seconds <= ceiling
            failed += not met
            print(f"{what:<40} {seconds:>7.3f}s {ceiling:>7.1f}s  {'yes' if met else 'NO'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
