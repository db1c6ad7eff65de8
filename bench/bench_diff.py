"""The cost of workspace.diff per trial (issue 19: the diff reads the snapshot from object
stores outside the workspace, names ignored files, nested repositories and unreadable paths,
and with a setup step is taken against the workspace as setup left it).

For each of N trials: copy a 200-file fixture (prepare_workspace), change 3 files, add 2, then
time workspace_diff; with ``--setup``, also time snapshot_after_setup (a setup step that
wrote one file).  Prints the median and mean in milliseconds.

Run: python bench/bench_diff.py [--trials N] [--setup]
Compare with an older checkout: PYTHONPATH=<old checkout> python bench/bench_diff.py
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pytest_evalrun.trial import workspace as w


def fixture(root: Path) -> Path:
    fx = root / "fixture"
    for d in range(20):
        for f in range(10):
            path = fx / f"pkg{d}" / f"mod{f}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"# module {d}.{f}\n" + "x = 1\n" * 50)
    (fx / ".gitignore").write_text("build/\n")
    return fx


def main() -> int:
    trials = int(sys.argv[sys.argv.index("--trials") + 1]) if "--trials" in sys.argv else 50
    setup = "--setup" in sys.argv and hasattr(w, "snapshot_after_setup")
    root = Path(tempfile.mkdtemp(prefix="bench-diff-"))
    try:
        fx = fixture(root)
        diffs: list[float] = []
        baselines: list[float] = []
        for i in range(trials):
            ws = root / f"ws{i}"
            snap = w.prepare_workspace(fx, ws)
            if setup:
                (ws / "CLAUDE.md").write_text("be brief\n")
                t0 = time.perf_counter()
                snap = w.snapshot_after_setup(ws, snap)
                baselines.append(time.perf_counter() - t0)
            for k in range(3):
                (ws / f"pkg{k}" / "mod0.py").write_text("changed\n")
            (ws / "new.py").write_text("new\n")
            (ws / "build").mkdir()
            (ws / "build" / "out.o").write_text("o\n")
            t0 = time.perf_counter()
            diff = w.workspace_diff(ws, snap)
            diffs.append(time.perf_counter() - t0)
            assert "new.py" in diff
            if setup:
                w.release_snapshot(snap)
            shutil.rmtree(ws)
        ms = [d * 1000 for d in diffs[1:]]  # the first copy makes the template
        print(f"workspace_diff: median {statistics.median(ms):.2f} ms, mean"
              f" {statistics.mean(ms):.2f} ms over {len(ms)} trials")
        if baselines:
            bs = [b * 1000 for b in baselines[1:]]
            print(f"snapshot_after_setup: median {statistics.median(bs):.2f} ms, mean"
                  f" {statistics.mean(bs):.2f} ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
