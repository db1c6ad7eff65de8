"""Run every benchmark (each in its own process), print a table, write bench/results.json.

Run: python bench/run_all.py [--repeats N] [--only collect,serial,...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c

SCRIPTS = ["collect", "serial", "serial-sandbox-auto", "parallel", "uneven", "resume", "memory"]
#: (script, arguments) of a figure whose name is not its script's
VARIANTS = {
    "serial": ("serial", ["--sandbox", "none"]),
    "serial-sandbox-auto": ("serial", ["--sandbox", "auto"]),
}


def main() -> int:
    only = SCRIPTS
    for a in sys.argv[1:]:
        if a.startswith("--only="):
            only = a.split("=", 1)[1].split(",")
    passthrough = [a for a in sys.argv[1:] if not a.startswith("--only")]
    results = []
    t0 = time.time()
    for name in only:
        print(f"== bench_{name}.py", flush=True)
        (c.OUT / f"{name}.json").unlink(missing_ok=True)
        script, extra = VARIANTS.get(name, (name, []))
        cmd = [sys.executable, str(c.BENCH / f"bench_{script}.py"), *extra, *passthrough]
        rc = subprocess.call(cmd)
        f = c.OUT / f"{name}.json"
        if rc != 0 or not f.exists():
            results.append({"name": name, "error": f"exit {rc}"})
            continue
        results.append(json.loads(f.read_text()))
    rows = sorted((r for r in results if "figure" in r), key=lambda r: r["figure"])
    print()
    print(f"{'#':>2}  {'figure':<70} {'subject':>10} {'baseline':>10} {'ratio':>6} "
          f"{'target':>6}  met")
    for r in rows:
        u = r["unit"]
        print(f"{r['figure']:>2}  {r['what'][:70]:<70} {r['subject']:>8.2f}{u:<2} "
              f"{r['baseline']:>8.2f}{u:<2} {r['ratio']:>6.2f} {r['target']:>6.2f}  "
              f"{'yes' if r['met'] else 'NO'}")
    for r in results:
        if "error" in r:
            print(f"    bench_{r['name']}.py failed: {r['error']}")
    data = {"machine": c.machine(), "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "elapsed_s": round(time.time() - t0, 1), "figures": rows,
            "errors": [r for r in results if "error" in r]}
    (c.BENCH / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {c.BENCH / 'results.json'}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
