"""The agent presets' own overhead: reading, parsing and converting a CLI's records (target: at
most 50 ms for a 200-call transcript, per CLI).

Run: python bench/bench_agent_parsers.py [--repeats N]
Uses the 200-call records in bench/data/agent_transcripts (made by make_agent_transcripts.py from
the real CLIs). Measures, best of N: the records' text -> agents.load -> ATIF -> JSON text of
metrics, analysis and trajectory (files read and decompressed once, outside the timing).
Writes bench/out/agent_parsers.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from common import agent_samples  # noqa: E402

from pytest_evalrun.agents import load  # noqa: E402
from pytest_evalrun.agents.atif import trajectory  # noqa: E402

TARGET_MS = 50.0


def convert(cli: str, stdout: str, transcript: str) -> int:
    run = load(cli, stdout, transcript)
    out = json.dumps(run.metrics()) + json.dumps(run.analysis()) + json.dumps(trajectory(run))
    assert len(run.calls) >= 200, (cli, len(run.calls))
    return len(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    figures = []
    for cli, stdout, transcript in agent_samples():
        samples = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            convert(cli, stdout, transcript)
            samples.append((time.perf_counter() - start) * 1000)
        best = min(samples)
        size = (len(stdout) + len(transcript)) / 1e6
        figures.append({"cli": cli, "best_ms": round(best, 2), "median_ms":
                        round(sorted(samples)[len(samples) // 2], 2), "records_mb": round(size, 2),
                        "target_ms": TARGET_MS, "met": best <= TARGET_MS})
        print(f"{cli:9s} best {best:6.1f} ms  median {figures[-1]['median_ms']:6.1f} ms  "
              f"({size:.2f} MB of records)  {'met' if best <= TARGET_MS else 'NOT MET'}")
    (BENCH / "out").mkdir(exist_ok=True)
    (BENCH / "out" / "agent_parsers.json").write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
