"""Record 200-call transcripts of the real agent CLIs (driven by tests/mockllm) for the bench.

Run: python bench/make_agent_transcripts.py [--calls N] [cli ...]
Needs node/npm and the pinned CLIs (python tests/tools/install_agent_clis.py). Writes
``bench/data/agent_transcripts/<cli>/{stdout.jsonl,transcript.json[l]}.gz``: the CLI's stdout and
its own transcript (opencode: its export), with temporary paths replaced by ``$SCRATCH``.
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from agentcli_env import CLIS, prepare, record_texts  # noqa: E402
from agentcli_pins import executable  # noqa: E402
from mockllm import MockLLM, Script, Usage, say, shell  # noqa: E402

OUT = Path(__file__).resolve().parent / "data" / "agent_transcripts"


def script(calls: int) -> Script:
    turns = [shell(f"echo step {i}", Usage(input=1000 + i * 37, output=20 + i % 7,
                                            cache_read=900 + i * 30), text=f"Step {i}.")
             for i in range(calls - 1)]
    return Script([*turns, say("All steps done.", Usage(input=9000, output=12, cache_read=8000))])


def record(cli: str, calls: int) -> None:
    exe = executable(cli)
    if exe is None:
        print(f"{cli}: not installed, skipped")
        return
    with tempfile.TemporaryDirectory(prefix=f"agents-{cli}-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        with MockLLM(script(calls)) as mock:
            run = prepare(cli, str(exe), "Run the steps you are given, one by one.",
                          Path(tmp) / "home", work, mock.url, proxy_env=mock.proxy_env())
            start = time.monotonic()
            proc = subprocess.run(run.argv, cwd=run.cwd, env=run.env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=1800, check=False)
            took = time.monotonic() - start
            transcript = record_texts(run, proc.stdout) or ""
        print(f"{cli}: exit {proc.returncode}, {len(mock.served)} calls served in {took:.1f} s, "
              f"outside {len(mock.outside)}")
        dest = OUT / cli
        dest.mkdir(parents=True, exist_ok=True)
        name = "transcript.json" if cli == "opencode" else "transcript.jsonl"
        for old in dest.glob("transcript.*"):
            old.unlink()
        for path, data in ((dest / "stdout.jsonl.gz", proc.stdout),
                           (dest / f"{name}.gz", transcript)):
            path.write_bytes(gzip.compress(data.replace(tmp, "$SCRATCH").encode(), mtime=0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("clis", nargs="*", default=list(CLIS))
    args = parser.parse_args()
    for cli in args.clis:
        record(cli, args.calls)


if __name__ == "__main__":
    main()
