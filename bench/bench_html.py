"""The HTML report of a 10,000-trial run: how long ``write_report`` takes, how big the file is,
and how long headless Chromium takes to load it.

The run is synthetic (tests/synthetic_run.py): 4 variants x 50 tasks x 50 trials, each with a
200 kB agent output and a 100 kB diff, written straight to disk. Load time is measured twice:

* ``ready_ms``: what the page itself reports (``data-ready-ms``, ``performance.now()`` when its
  script has built the first page of the trial table: parse of the whole file included);
* ``chromium_s``: the wall time of ``chromium --headless --screenshot`` on the report, minus the
  same on an empty page (Chromium's own start and stop).

Best of ``--repeats`` (default 3) for each. Needs chromium (tests/tools/install_chromium.sh).

Run: python bench/bench_html.py [--repeats N] [--keep]
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import common as c
import headless
from synthetic_run import write_run

from pytest_evalrun.store.html_report import write_report


def _chromium_wall(url: str, png: Path) -> float:
    t0 = time.perf_counter()
    headless.screenshot(url, png, budget_ms=60_000)
    return time.perf_counter() - t0


def main() -> dict[str, object]:
    if headless.CHROMIUM is None:
        sys.exit(headless.SKIP_REASON)
    repeats = c.arg_repeats(3)
    root = c.tmpdir("html")
    try:
        t0 = time.perf_counter()
        run_dir = write_run(root / "results")
        setup_s = time.perf_counter() - t0
        out = root / "report.html"
        writes = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            write_report(run_dir, out)
            writes.append(time.perf_counter() - t0)
        size = out.stat().st_size
        empty = root / "empty.html"
        empty.write_text("<!DOCTYPE html><title>empty</title>")
        ready, walls, bases = [], [], []
        for _ in range(repeats):
            bases.append(_chromium_wall(empty.as_uri(), root / "empty.png"))
            walls.append(_chromium_wall(out.as_uri(), root / "report.png"))
            dom = headless.dump_dom(out.as_uri(), budget_ms=60_000)
            found = re.search(r'data-ready-ms="(\d+)"', dom)
            assert found, "the report's script did not finish"
            ready.append(int(found.group(1)))
        data: dict[str, object] = {
            "name": "html",
            "what": "HTML report of 10,000 trials (200 kB output, 100 kB diff each)",
            "trials": 10_000,
            "synthetic_run_write_s": round(setup_s, 1),
            "write_report_s": round(min(writes), 2),
            "size_bytes": size,
            "size_mib": round(size / 1048576, 1),
            "ready_ms": min(ready),
            "chromium_s": round(min(walls) - min(bases), 2),
            "samples": {"write_report_s": writes, "ready_ms": ready, "chromium_s": walls,
                        "chromium_empty_s": bases},
            "machine": c.machine(),
        }
        c.OUT.mkdir(parents=True, exist_ok=True)
        (c.OUT / "html.json").write_text(json.dumps(data, indent=2) + "\n")
        print(
            f"10,000 trials: write_report {data['write_report_s']} s, {data['size_mib']} MiB, "
            f"page ready in {data['ready_ms']} ms, chromium load {data['chromium_s']} s "
            f"(best of {repeats})"
        )
        return data
    finally:
        if not c.keep_tmp():
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
