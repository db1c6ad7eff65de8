"""``evalrun mock-llm SCRIPT``: the scripted mock model server, for offline tests of a harness,
its verifiers and reports (docs/gateway.md)."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path
from typing import Any

from ..gateway.mock import MockLLM
from ..gateway.mock.scriptfile import ScriptError, load_script
from .common import CliError


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "mock-llm",
        help="serve a scripted mock model (Anthropic, OpenAI, Gemini APIs) for offline tests",
        description="Serve the turns of SCRIPT (YAML or JSON: docs/gateway.md) over the "
        "Anthropic Messages, OpenAI Responses and Chat Completions and Gemini APIs, streamed "
        "as the real APIs stream, until interrupted. Prints the base URL and the variables "
        "that point each preset at it.",
    )
    p.add_argument("script", type=Path, metavar="SCRIPT", help="the turns to serve")
    p.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    p.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    p.add_argument("--log", type=Path, default=None, metavar="FILE",
                   help="append every request (keys redacted) to FILE as JSON lines")
    p.set_defaults(func=run)


def endpoints(url: str) -> dict[str, str]:
    """The variables that point each preset at the mock at ``url``."""
    return {"ANTHROPIC_BASE_URL": url, "OPENAI_BASE_URL": f"{url}/v1",
            "COPILOT_PROVIDER_BASE_URL": f"{url}/v1", "GOOGLE_GEMINI_BASE_URL": url}


def run(args: argparse.Namespace) -> int:
    try:
        script = load_script(args.script)
    except ScriptError as exc:
        raise CliError(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        mock = MockLLM(script, log_path=args.log, host=args.host, port=args.port).start()
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") \
            from None
    try:
        print(json.dumps({"url": mock.url, "turns": len(script.turns),
                          "env": endpoints(mock.url)}), flush=True)
        stop.wait()
    finally:
        mock.stop()
    print(json.dumps({"served": script.served, "requests": len(mock.requests)}), flush=True)
    return 0
