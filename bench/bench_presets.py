"""A preset's own overhead per trial, beyond the CLI's runtime: finding the CLI's records in the
trial's config home, reading and parsing them, pricing, and writing every evidence file
(events.jsonl, session.md, metrics.json, analysis.json, trajectory.json). Target: at most 50 ms
for a 200-call transcript, per CLI.

Run: python bench/bench_presets.py [--repeats N]
Uses the 200-call records in bench/data/agent_transcripts (made by make_agent_transcripts.py from
the real CLIs), laid out in a scratch trial where each CLI writes them; times
``runner.collect_evidence`` (what the preset runner does after the CLI exits), best of N.
Not included: opencode's ``opencode export`` (a second run of the CLI, its own runtime).
Writes bench/out/presets.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from common import agent_samples  # noqa: E402

from pytest_evalrun.agents.builtin import BUILTIN, _session_id  # noqa: E402
from pytest_evalrun.agents.preset import PresetTrial  # noqa: E402
from pytest_evalrun.agents.runner import collect_evidence  # noqa: E402

TARGET_MS = 50.0
PRESET = {"claude": "claude-code", "codex": "codex", "copilot": "copilot-cli",
          "gemini": "gemini-cli", "opencode": "opencode"}
PRICING = {"input": 3.0, "cached_input": 0.3, "output": 15.0}


def place(cli: str, home: Path, stdout: str, transcript: str) -> None:
    """Put ``transcript`` where ``cli`` writes it in its config home."""
    if cli == "claude":
        path = home / ".claude" / "projects" / "-w" / f"{_session_id(stdout, 'session_id')}.jsonl"
    elif cli == "codex":
        thread = _session_id(stdout, "thread_id")
        path = home / ".codex" / "sessions" / "2026" / "11" / "27" / f"rollout-t-{thread}.jsonl"
    elif cli == "copilot":
        path = home / ".copilot" / "session-state" / str(_session_id(stdout, "sessionId")) \
            / "events.jsonl"
    elif cli == "gemini":
        sid = str(_session_id(stdout, "session_id"))
        path = home / ".gemini" / "tmp" / "w" / "chats" / f"session-2026-11-27-{sid[:8]}.jsonl"
    else:
        path = home / "opencode-export.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(transcript)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    figures = []
    scratch = Path(tempfile.mkdtemp(prefix="bench-presets-"))
    try:
        for cli, stdout, transcript in agent_samples():
            home, artifacts = scratch / cli / "agent-home", scratch / cli / "artifacts"
            place(cli, home, stdout, transcript)
            preset = BUILTIN[PRESET[cli]]
            trial = PresetTrial(preset.name, preset.program, (), "prompt", None, scratch / cli,
                                home, artifacts, {})
            samples = []
            for _ in range(args.repeats):
                shutil.rmtree(artifacts, ignore_errors=True)
                artifacts.mkdir(parents=True)
                samples.append(collect_evidence(preset, trial, stdout, PRICING) * 1000)
            problem = artifacts / "preset-error.txt"
            assert not problem.exists(), problem.read_text()
            metrics = json.loads((artifacts / "metrics.json").read_text())
            assert metrics["model_calls"] >= 200, (cli, metrics["model_calls"])
            best = min(samples)
            size = (len(stdout) + len(transcript)) / 1e6
            figures.append({"preset": preset.name, "calls": metrics["model_calls"],
                            "best_ms": round(best, 2),
                            "median_ms": round(sorted(samples)[len(samples) // 2], 2),
                            "records_mb": round(size, 2), "target_ms": TARGET_MS,
                            "met": best <= TARGET_MS})
            print(f"{preset.name:12s} {metrics['model_calls']} calls  best {best:6.1f} ms  "
                  f"median {figures[-1]['median_ms']:6.1f} ms  ({size:.2f} MB of records)  "
                  f"{'met' if best <= TARGET_MS else 'NOT MET'}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    (BENCH / "out").mkdir(exist_ok=True)
    (BENCH / "out" / "presets.json").write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
