"""The pinned coding-agent CLI versions and where their npm install lives (standard library only).

Shared by ``tests/tools/install_agent_clis.py`` (which installs them) and the tests that run them.
"""

from __future__ import annotations

import os
from pathlib import Path

#: npm package -> pinned version (checked offline against the mock model servers).
PINS: dict[str, str] = {
    "@anthropic-ai/claude-code": "2.1.328",
    "@openai/codex": "0.171.0",
    "@github/copilot": "1.0.102",
    "opencode-ai": "1.18.33",
    "@google/gemini-cli": "0.61.0",
}

#: CLI name -> (npm package, executable in node_modules/.bin).
CLIS: dict[str, tuple[str, str]] = {
    "claude": ("@anthropic-ai/claude-code", "claude"),
    "codex": ("@openai/codex", "codex"),
    "copilot": ("@github/copilot", "copilot"),
    "opencode": ("opencode-ai", "opencode"),
    "gemini": ("@google/gemini-cli", "gemini"),
}


def tools_root() -> Path:
    """``$EVALRUN_TOOLS`` or ``~/.cache/pytest-evalrun-tools``."""
    env = os.environ.get("EVALRUN_TOOLS")
    return Path(env) if env else Path.home() / ".cache" / "pytest-evalrun-tools"


def install_dir() -> Path:
    """The npm prefix the CLIs are installed into."""
    return tools_root() / "agent-clis"


def installed_version(package: str, prefix: Path | None = None) -> str | None:
    """The version of ``package`` installed under ``prefix`` (None when absent)."""
    import json

    manifest = (prefix or install_dir()) / "node_modules" / package / "package.json"
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def executable(cli: str, prefix: Path | None = None) -> Path | None:
    """The pinned ``cli``'s executable, or None when it is not installed at its pinned version."""
    package, binary = CLIS[cli]
    root = prefix or install_dir()
    if installed_version(package, root) != PINS[package]:
        return None
    path = root / "node_modules" / ".bin" / binary
    return path if path.exists() else None
