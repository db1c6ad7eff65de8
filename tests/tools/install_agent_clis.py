#!/usr/bin/env python3
"""Install the pinned coding-agent CLIs with npm into a cache directory, idempotently.

Usage: ``python tests/tools/install_agent_clis.py [--prefix DIR] [--force]``

The directory defaults to ``${EVALRUN_TOOLS:-~/.cache/pytest-evalrun-tools}/agent-clis``. When every
pinned version is already there, nothing is run. Exit status: 0 installed or already there,
2 node/npm missing, 1 npm failed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentcli_pins import PINS, install_dir, installed_version


def missing(prefix: Path) -> list[str]:
    """The pinned packages not installed at their pinned version under ``prefix``."""
    return [pkg for pkg, ver in PINS.items() if installed_version(pkg, prefix) != ver]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=Path, default=None, help="install directory")
    parser.add_argument("--force", action="store_true", help="reinstall even when present")
    args = parser.parse_args(argv)
    prefix: Path = args.prefix or install_dir()
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        print("install_agent_clis: node/npm not found; skipping", file=sys.stderr)
        return 2
    todo = list(PINS) if args.force else missing(prefix)
    if not todo:
        print(f"install_agent_clis: pinned CLIs already in {prefix}")
        return 0
    prefix.mkdir(parents=True, exist_ok=True)
    # A package.json of our own keeps npm from walking up to an unrelated project.
    manifest = prefix / "package.json"
    if not manifest.exists():
        manifest.write_text('{"name": "pytest-evalrun-agent-clis", "private": true}\n')
    specs = [f"{pkg}@{PINS[pkg]}" for pkg in PINS]
    cmd = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
           "--save-exact", "--loglevel=error", *specs]
    start = time.monotonic()
    print("install_agent_clis: " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, stdin=subprocess.DEVNULL)
    took = time.monotonic() - start
    left = missing(prefix)
    if rc != 0 or left:
        print(f"install_agent_clis: npm exit {rc}; still missing: {left}", file=sys.stderr)
        return 1
    print(f"install_agent_clis: installed {len(specs)} CLIs into {prefix} in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
