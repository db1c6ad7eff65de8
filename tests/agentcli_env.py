"""How to run each coding-agent CLI headless and offline against a model endpoint: the contract.

For each CLI, :func:`prepare` writes the config files the CLI needs into an isolated ``home`` and
returns the command line, the environment (built from nothing but ``PATH``: no variable of the
calling process leaks in) and where the CLI's own records will be. The later presets
(``pytest_evalrun/trial/agents/<cli>.py``) are meant to be built from these recipes. Checked with
the versions pinned in ``agentcli_pins.py``.

Quiet-traffic settings are always on: with them and the refusing proxy no CLI tried to reach
another host (telemetry, update checks, plugin or model-list downloads).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

#: The CLIs covered, in the order they are tested.
CLIS = ("claude", "codex", "copilot", "opencode", "gemini")

#: The model each CLI is run with against the mock (the mock echoes whatever it is asked for).
DEFAULT_MODELS = {
    "claude": "claude-sonnet-4-5",
    "codex": "gpt-5.5",  # must be in Codex's bundled model catalog
    "copilot": "gpt-5.5",
    "opencode": "mock-model",
    "gemini": "gemini-2.5-pro",  # without -m Gemini CLI first calls a router model
}

#: The API each CLI calls with the settings below.
APIS = {
    "claude": "anthropic",
    "codex": "openai-responses",
    "copilot": "openai-chat",
    "opencode": "openai-chat",
    "gemini": "gemini",
}


@dataclass
class Run:
    """One prepared CLI run."""

    cli: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    home: Path
    #: Files the CLI writes its own records to (known before the run; others are found after).
    records: dict[str, Path] = field(default_factory=dict)


def base_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: PATH, an isolated HOME (and XDG dirs inside it), TMPDIR, LANG."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
        "LANG": "C.UTF-8",
        "NO_COLOR": "1",
    }
    env.update(extra or {})
    return env


def claude(exe: str, prompt: str, home: Path, work: Path, base_url: str, api_key: str,
           model: str) -> Run:
    """Claude Code: ``claude -p`` with stream-json on stdout; transcript under CLAUDE_CONFIG_DIR.

    ``IS_SANDBOX=1`` lets ``--dangerously-skip-permissions`` run as root.
    ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` stops every call to api.anthropic.com other than
    the model's. The transcript is ``$CLAUDE_CONFIG_DIR/projects/<cwd slug>/<session_id>.jsonl``.
    """
    config = home / ".claude"
    env = base_env(home, {
        "CLAUDE_CONFIG_DIR": str(config), "IS_SANDBOX": "1",
        "ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_API_KEY": api_key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1",
    })
    argv = [exe, "-p", prompt, "--output-format", "stream-json", "--verbose",
            "--dangerously-skip-permissions", "--model", model]
    return Run("claude", argv, env, work, home, {"config_dir": config})


CODEX_CONFIG = """\
model = "{model}"
model_provider = "mock"
check_for_update_on_startup = false

[model_providers.mock]
name = "Mock"
base_url = "{base_url}/v1"
wire_api = "responses"
env_key = "MOCK_API_KEY"

[features]
plugins = false
remote_plugin = false

[analytics]
enabled = false
"""


def codex(exe: str, prompt: str, home: Path, work: Path, base_url: str, api_key: str,
          model: str) -> Run:
    """Codex CLI: ``codex exec --json``; the rollout is under ``$CODEX_HOME/sessions/Y/M/D/``.

    The provider is declared in ``$CODEX_HOME/config.toml`` (``wire_api = "responses"``: "chat" is
    no longer accepted); ``[features] plugins=false`` and ``[analytics] enabled=false`` stop the
    calls to github.com, chatgpt.com and ab.chatgpt.com. The model must be in Codex's bundled
    catalog.
    """
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(CODEX_CONFIG.format(model=model, base_url=base_url))
    env = base_env(home, {"CODEX_HOME": str(codex_home), "MOCK_API_KEY": api_key})
    argv = [exe, "exec", "--json", "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox", "-C", str(work), prompt]
    return Run("codex", argv, env, work, home, {"codex_home": codex_home})


def copilot(exe: str, prompt: str, home: Path, work: Path, base_url: str, api_key: str,
            model: str, wire: str = "completions") -> Run:
    """GitHub Copilot CLI with a BYOK OpenAI-compatible provider (no GitHub login needed).

    ``COPILOT_OFFLINE=true`` stops the calls to api.github.com. Records: JSONL events on stdout,
    ``$COPILOT_HOME/session-state/<session id>/events.jsonl`` (per-call usage), the ``--share``
    markdown and the OpenTelemetry file exporter's JSONL.
    """
    copilot_home = home / ".copilot"
    share = home / "copilot-session.md"
    otel = home / "copilot-otel.jsonl"
    env = base_env(home, {
        "COPILOT_HOME": str(copilot_home), "COPILOT_OFFLINE": "true",
        "COPILOT_PROVIDER_BASE_URL": f"{base_url}/v1", "COPILOT_PROVIDER_API_KEY": api_key,
        "COPILOT_PROVIDER_TYPE": "openai", "COPILOT_PROVIDER_WIRE_API": wire,
        "COPILOT_MODEL": model, "COPILOT_AUTO_UPDATE": "false",
        "COPILOT_OTEL_FILE_EXPORTER_PATH": str(otel),
    })
    argv = [exe, "-p", prompt, "--allow-all-tools", "--no-ask-user", "--output-format", "json",
            f"--share={share}"]
    return Run("copilot", argv, env, work, home,
               {"copilot_home": copilot_home, "share": share, "otel": otel})


def opencode_config(base_url: str, api_key: str, model: str) -> dict[str, object]:
    return {
        "$schema": "https://opencode.ai/config.json",
        "model": f"mock/{model}", "small_model": f"mock/{model}",
        "autoupdate": False, "share": "disabled",
        "permission": {"edit": "allow", "bash": "allow", "webfetch": "deny"},
        "provider": {"mock": {
            "npm": "@ai-sdk/openai-compatible", "name": "Mock",
            "options": {"baseURL": f"{base_url}/v1", "apiKey": api_key},
            "models": {model: {"name": model, "limit": {"context": 200000, "output": 8192}}},
        }},
    }


def opencode(exe: str, prompt: str, home: Path, work: Path, base_url: str, api_key: str,
             model: str) -> Run:
    """opencode: ``opencode run --format json``; its config is the global one in the isolated home.

    Pre-creating ``~/.config/opencode/node_modules`` and a package-lock naming
    ``@opencode-ai/plugin`` stops its background ``npm install`` (a registry call); the
    ``OPENCODE_DISABLE_*`` variables stop the models.dev fetch, autoupdate and sharing. The session
    lives in SQLite (``~/.local/share/opencode/opencode.db``); ``opencode export <id>`` prints it.
    """
    config = home / ".config" / "opencode"
    (config / "node_modules").mkdir(parents=True, exist_ok=True)
    lock = {"packages": {"": {"dependencies": {"@opencode-ai/plugin": "*"}}}}
    (config / "package-lock.json").write_text(json.dumps(lock))
    (config / "opencode.json").write_text(json.dumps(opencode_config(base_url, api_key, model)))
    env = base_env(home, {
        "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1", "OPENCODE_DISABLE_SHARE": "1",
    })
    argv = [exe, "run", "--format", "json", prompt]
    return Run("opencode", argv, env, work, home, {"config": config})


GEMINI_SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "privacy": {"usageStatisticsEnabled": False},
    "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
}


def gemini(exe: str, prompt: str, home: Path, work: Path, base_url: str, api_key: str,
           model: str) -> Run:
    """Gemini CLI: ``gemini -p`` with stream-json; the chat is ``~/.gemini/tmp/<dir>/chats/``.

    ``selectedType`` is required (else exit 41), ``--skip-trust`` too (else exit 55), and
    ``usageStatisticsEnabled: false`` stops the calls to play.googleapis.com. With ``-m`` there is
    no model-router call.
    """
    gemini_dir = home / ".gemini"
    gemini_dir.mkdir(parents=True, exist_ok=True)
    (gemini_dir / "settings.json").write_text(json.dumps(GEMINI_SETTINGS))
    env = base_env(home, {"GOOGLE_GEMINI_BASE_URL": base_url, "GEMINI_API_KEY": api_key})
    argv = [exe, "-p", prompt, "--yolo", "--skip-trust", "--output-format", "stream-json",
            "-m", model]
    return Run("gemini", argv, env, work, home, {"gemini_dir": gemini_dir})


RECIPES = {"claude": claude, "codex": codex, "copilot": copilot, "opencode": opencode,
           "gemini": gemini}


def prepare(cli: str, exe: str, prompt: str, home: Path, work: Path, base_url: str,
            api_key: str = "test", model: str | None = None,
            proxy_env: dict[str, str] | None = None) -> Run:
    """The prepared run of ``cli``; ``proxy_env`` (HTTPS_PROXY and friends) is added when given."""
    home.mkdir(parents=True, exist_ok=True)
    run = RECIPES[cli](exe, prompt, home, work, base_url, api_key, model or DEFAULT_MODELS[cli])
    run.env.update(proxy_env or {})
    return run


def find_records(run: Run, session_id: str | None) -> dict[str, Path]:
    """The CLI's own record files after the run (only those that exist)."""
    found: dict[str, Path] = {}
    home = run.home
    if run.cli == "claude":
        hits = sorted((home / ".claude" / "projects").glob(f"*/{session_id or '*'}.jsonl"))
        if hits:
            found["transcript"] = hits[-1]
    elif run.cli == "codex":
        pattern = f"*/*/*/rollout-*{session_id or ''}.jsonl"
        hits = sorted((home / ".codex" / "sessions").glob(pattern))
        if hits:
            found["rollout"] = hits[-1]
    elif run.cli == "copilot":
        state = home / ".copilot" / "session-state"
        hits = sorted(state.glob(f"{session_id or '*'}/events.jsonl"))
        if hits:
            found["events"] = hits[-1]
        for key in ("share", "otel"):
            if run.records[key].exists():
                found[key] = run.records[key]
    elif run.cli == "gemini":
        hits = sorted((home / ".gemini" / "tmp").glob("*/chats/session-*.json*"))
        if hits:
            found["chat"] = hits[-1]
    elif run.cli == "opencode":
        db = home / ".local" / "share" / "opencode" / "opencode.db"
        if db.exists():
            found["db"] = db
    return found


def record_texts(run: Run, stdout: str, timeout: float = 60) -> str | None:
    """The text of the CLI's own transcript after the run, as it wrote it (None if not found).

    The session file for Claude, Codex, Copilot and Gemini CLI; for opencode the document
    ``opencode export <session id>`` prints (its session lives in SQLite).
    """
    import subprocess

    from pytest_evalrun.agents.agentrun import read_jsonl

    ids = [r.get("session_id") or r.get("thread_id") or r.get("sessionId") or r.get("sessionID")
           for r in read_jsonl(stdout)]
    session_id = next((str(i) for i in ids if i), None)
    if run.cli == "opencode":
        if session_id is None:
            return None
        # Into a file: through a pipe, opencode's output stops at 128 KiB when it exits.
        out = run.home / f"opencode-export-{session_id}.json"
        with out.open("w") as fh:
            subprocess.run([run.argv[0], "export", session_id], cwd=run.cwd, env=run.env,
                           stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.DEVNULL,
                           timeout=timeout, check=False)
        text = out.read_text()
        start = text.find("{")
        return text[start:] if start >= 0 else None
    found = find_records(run, session_id)
    key = {"claude": "transcript", "codex": "rollout", "copilot": "events", "gemini": "chat"}
    path = found.get(key[run.cli])
    return path.read_text() if path else None
