"""The five built-in presets: Claude Code, Codex CLI, Copilot CLI, Gemini CLI and opencode.

Each runs its CLI headless and unattended in the workspace, with its config in the trial's own
home, the model from the variant's ``model`` and endpoints and keys from the variant's ``env``.
The quiet-traffic settings (no telemetry, update checks, plugin or model-list downloads) are
those checked against the pinned CLIs in ``tests/agentcli_env.py``; ``EVALRUN_PRESET_QUIET=0``
in the variant's env leaves them out.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..store.atomic import read_regular
from . import load
from .preset import Launch, Preset, PresetTrial, Records, newest
from .route import ModelRoute

#: Largest CLI record read (bytes): a transcript beyond is not read.
MAX_RECORD_BYTES = 256 * 1024 * 1024


def _read(path: Path | None) -> str | None:
    """A CLI record in the trial's agent home (which the model's tools can write): a regular
    file only (never a FIFO, device or link the agent put there), at most
    :data:`MAX_RECORD_BYTES`; None otherwise."""
    if path is None:
        return None
    try:
        return read_regular(path, MAX_RECORD_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None


def _session_id(stdout: str, *keys: str) -> str | None:
    """The first session id found on a JSONL stdout under one of ``keys``."""
    for line in stdout.splitlines():
        if not line.startswith("{") or not any(f'"{k}"' in line for k in keys):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        for key in keys:
            value = record.get(key)
            if isinstance(value, str) and value:
                return value
    return None


class ClaudeCode(Preset):
    """``claude -p --output-format stream-json``; transcript under ``CLAUDE_CONFIG_DIR``;
    OpenTelemetry to the trial's OTLP receiver."""

    def __init__(self) -> None:
        super().__init__("claude-code", "claude", "claude", otel="otlp",
                         otel_name="claude-code-otel.jsonl")

    def launch(self, trial: PresetTrial) -> Launch:
        env = trial.base_env(CLAUDE_CONFIG_DIR=str(trial.home / ".claude"), IS_SANDBOX="1")
        if trial.quiet:
            env.update({"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                        "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1",
                        "DISABLE_AUTOUPDATER": "1"})
        if trial.otlp_endpoint:
            env.update({
                "CLAUDE_CODE_ENABLE_TELEMETRY": "1", "CLAUDE_CODE_ENHANCED_TELEMETRY_BETA": "1",
                "OTEL_METRICS_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp",
                "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
                "OTEL_EXPORTER_OTLP_ENDPOINT": trial.otlp_endpoint,
                "OTEL_METRIC_EXPORT_INTERVAL": "1000", "OTEL_LOGS_EXPORT_INTERVAL": "500",
            })
        argv = [trial.executable, "-p", trial.prompt, "--output-format", "stream-json",
                "--verbose", "--dangerously-skip-permissions"]
        if trial.model:
            argv += ["--model", trial.model]
        return Launch(argv + list(trial.args), env)

    def endpoint(self, trial: PresetTrial) -> str | None:
        return trial.env.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"

    def model_route(self, trial: PresetTrial) -> ModelRoute | None:
        return ModelRoute("ANTHROPIC_BASE_URL", "https://api.anthropic.com",
                          ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"))

    def collect(self, trial: PresetTrial, stdout: str) -> Records:
        session = _session_id(stdout, "session_id")
        projects = trial.home / ".claude" / "projects"
        path = newest(sorted(projects.glob(f"*/{session or '*'}.jsonl")))
        transcript = _read(path)
        return Records(load("claude", stdout, transcript), events=transcript)


CODEX_CONFIG = """\
{model}model_provider = "evalrun"
check_for_update_on_startup = false

[model_providers.evalrun]
name = "evalrun"
base_url = {base_url}
wire_api = "responses"
env_key = "OPENAI_API_KEY"
"""
CODEX_QUIET = """
[features]
plugins = false
remote_plugin = false

[analytics]
enabled = false
"""
CODEX_OTEL = """
[otel]
environment = "evalrun"
log_user_prompt = true
exporter = {{ otlp-http = {{ endpoint = "{url}/v1/logs", protocol = "json" }} }}
trace_exporter = {{ otlp-http = {{ endpoint = "{url}/v1/traces", protocol = "json" }} }}
metrics_exporter = {{ otlp-http = {{ endpoint = "{url}/v1/metrics", protocol = "json" }} }}
"""


class Codex(Preset):
    """``codex exec --json`` with a Responses provider from ``OPENAI_BASE_URL`` /
    ``OPENAI_API_KEY``; the rollout under ``CODEX_HOME``; OpenTelemetry to the OTLP receiver."""

    def __init__(self) -> None:
        super().__init__("codex", "codex", "codex", otel="otlp", otel_name="codex-otel.jsonl")

    def launch(self, trial: PresetTrial) -> Launch:
        codex_home = trial.home / ".codex"
        codex_home.mkdir(parents=True, exist_ok=True)
        base_url = trial.env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        model = f"model = {json.dumps(trial.model)}\n" if trial.model else ""
        config = CODEX_CONFIG.format(model=model, base_url=json.dumps(base_url))
        if trial.quiet:
            config += CODEX_QUIET
        if trial.otlp_endpoint:
            config += CODEX_OTEL.format(url=trial.otlp_endpoint)
        (codex_home / "config.toml").write_text(config, encoding="utf-8")
        env = trial.base_env(CODEX_HOME=str(codex_home))
        argv = [trial.executable, "exec", "--json", "--skip-git-repo-check",
                "--dangerously-bypass-approvals-and-sandbox", "-C", str(trial.workspace),
                *trial.args, trial.prompt]
        return Launch(argv, env)

    def endpoint(self, trial: PresetTrial) -> str | None:
        return trial.env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"

    def model_route(self, trial: PresetTrial) -> ModelRoute | None:
        return ModelRoute("OPENAI_BASE_URL", "https://api.openai.com/v1", ("OPENAI_API_KEY",))

    def collect(self, trial: PresetTrial, stdout: str) -> Records:
        thread = _session_id(stdout, "thread_id")
        sessions = trial.home / ".codex" / "sessions"
        path = newest(sorted(sessions.glob(f"*/*/*/rollout-*{thread or ''}.jsonl")))
        rollout = _read(path)
        return Records(load("codex", stdout, rollout), events=rollout)


class CopilotCli(Preset):
    """``copilot -p --output-format json --share``; session events under ``COPILOT_HOME``;
    the OpenTelemetry file exporter writes ``copilot-otel.jsonl`` into the artifacts dir.

    BYOK (``COPILOT_PROVIDER_BASE_URL``, ``COPILOT_PROVIDER_API_KEY``, ...) or a GitHub login
    (``COPILOT_GITHUB_TOKEN`` / ``GH_TOKEN``) come from the variant's env. ``COPILOT_OFFLINE``
    is set for BYOK runs only (it would cut a GitHub-authenticated run off its model)."""

    def __init__(self) -> None:
        super().__init__("copilot-cli", "copilot", "copilot", otel="file",
                         otel_name="copilot-otel.jsonl")

    def launch(self, trial: PresetTrial) -> Launch:
        env = trial.base_env(COPILOT_HOME=str(trial.home / ".copilot"),
                             COPILOT_OTEL_FILE_EXPORTER_PATH=str(trial.artifacts /
                                                                 self.otel_name))
        if trial.model:
            env["COPILOT_MODEL"] = trial.model
        if trial.quiet:
            env["COPILOT_AUTO_UPDATE"] = "false"
            if env.get("COPILOT_PROVIDER_BASE_URL"):
                env["COPILOT_OFFLINE"] = "true"
        argv = [trial.executable, "-p", trial.prompt, "--allow-all-tools", "--no-ask-user",
                "--output-format", "json", f"--share={trial.artifacts / 'session.md'}",
                *trial.args]
        return Launch(argv, env)

    def endpoint(self, trial: PresetTrial) -> str | None:
        return trial.env.get("COPILOT_PROVIDER_BASE_URL") or None

    def model_route(self, trial: PresetTrial) -> ModelRoute | None:
        """BYOK only: with a GitHub login Copilot talks to GitHub's own service."""
        return ModelRoute("COPILOT_PROVIDER_BASE_URL", None, ("COPILOT_PROVIDER_API_KEY",))

    def collect(self, trial: PresetTrial, stdout: str) -> Records:
        session = _session_id(stdout, "sessionId")
        state = trial.home / ".copilot" / "session-state"
        path = newest(sorted(state.glob(f"{session or '*'}/events.jsonl")))
        events = _read(path)
        share = _read(trial.artifacts / "session.md")
        return Records(load("copilot", stdout, events), events=events, session_md=share)


GEMINI_SETTINGS: dict[str, object] = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
}
GEMINI_QUIET: dict[str, object] = {
    "privacy": {"usageStatisticsEnabled": False},
    "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
}


class GeminiCli(Preset):
    """``gemini -p --yolo --skip-trust --output-format stream-json``; the chat file under
    ``$HOME/.gemini/tmp``; telemetry to a local file, converted to ``gemini-cli-otel.jsonl``.
    Endpoint and key: ``GOOGLE_GEMINI_BASE_URL`` and ``GEMINI_API_KEY``."""

    def __init__(self) -> None:
        super().__init__("gemini-cli", "gemini", "gemini", otel="file",
                         otel_name="gemini-cli-otel.jsonl")

    def launch(self, trial: PresetTrial) -> Launch:
        gemini_dir = trial.home / ".gemini"
        gemini_dir.mkdir(parents=True, exist_ok=True)
        settings = dict(GEMINI_SETTINGS, **(GEMINI_QUIET if trial.quiet else {}))
        (gemini_dir / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
        env = trial.base_env(GEMINI_TELEMETRY_ENABLED="true", GEMINI_TELEMETRY_TARGET="local",
                             GEMINI_TELEMETRY_OUTFILE=str(trial.home / "telemetry.log"))
        argv = [trial.executable, "-p", trial.prompt, "--yolo", "--skip-trust",
                "--output-format", "stream-json"]
        if trial.model:
            argv += ["-m", trial.model]
        return Launch(argv + list(trial.args), env)

    def endpoint(self, trial: PresetTrial) -> str | None:
        return (trial.env.get("GOOGLE_GEMINI_BASE_URL")
                or "https://generativelanguage.googleapis.com")

    def model_route(self, trial: PresetTrial) -> ModelRoute | None:
        return ModelRoute("GOOGLE_GEMINI_BASE_URL", "https://generativelanguage.googleapis.com",
                          ("GEMINI_API_KEY", "GOOGLE_API_KEY"))

    def collect(self, trial: PresetTrial, stdout: str) -> Records:
        session = _session_id(stdout, "session_id")
        chats = sorted((trial.home / ".gemini" / "tmp").glob("*/chats/session-*.json*"))
        if session:
            chats = [p for p in chats if session[:8] in p.name] or chats
        chat = _read(newest(chats))
        telemetry = _read(trial.home / "telemetry.log")
        from .otlp import otlp_lines_from_pretty_json  # its HTTP server: only for presets

        otel = otlp_lines_from_pretty_json(telemetry) if telemetry else None
        return Records(load("gemini", stdout, chat), events=chat, otel=otel)


class Opencode(Preset):
    """``opencode run --format json``; its session exported with ``opencode export``. With
    ``OPENAI_BASE_URL`` set, an OpenAI-compatible provider ``evalrun`` is configured (key from
    ``OPENAI_API_KEY``, read by opencode itself); otherwise the model names one of opencode's
    own providers (``anthropic/claude-sonnet-4-5``). No OpenTelemetry."""

    def __init__(self) -> None:
        super().__init__("opencode", "opencode", "opencode")

    def config(self, trial: PresetTrial) -> dict[str, object]:
        config: dict[str, object] = {
            "$schema": "https://opencode.ai/config.json",
            "permission": {"edit": "allow", "bash": "allow", "webfetch": "deny"},
        }
        if trial.quiet:
            config.update({"autoupdate": False, "share": "disabled"})
        base_url = trial.env.get("OPENAI_BASE_URL")
        if base_url and trial.model:
            model = f"evalrun/{trial.model}"
            config.update({"model": model, "small_model": model, "provider": {"evalrun": {
                "npm": "@ai-sdk/openai-compatible", "name": "evalrun",
                "options": {"baseURL": base_url, "apiKey": "{env:OPENAI_API_KEY}"},
                "models": {trial.model: {"name": trial.model,
                                         "limit": {"context": 200000, "output": 32000}}},
            }}})
        elif trial.model:
            config.update({"model": trial.model, "small_model": trial.model})
        return config

    def launch(self, trial: PresetTrial) -> Launch:
        config_dir = trial.home / ".config" / "opencode"
        (config_dir / "node_modules").mkdir(parents=True, exist_ok=True)
        if trial.quiet:  # skips its background `npm install @opencode-ai/plugin`
            lock = {"packages": {"": {"dependencies": {"@opencode-ai/plugin": "*"}}}}
            (config_dir / "package-lock.json").write_text(json.dumps(lock), encoding="utf-8")
        (config_dir / "opencode.json").write_text(json.dumps(self.config(trial)),
                                                  encoding="utf-8")
        env = trial.base_env()
        if trial.quiet:
            env.update({"OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1",
                        "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1", "OPENCODE_DISABLE_SHARE": "1"})
        return Launch([trial.executable, "run", "--format", "json", *trial.args, trial.prompt],
                      env)

    def endpoint(self, trial: PresetTrial) -> str | None:
        return trial.env.get("OPENAI_BASE_URL") or None

    def model_route(self, trial: PresetTrial) -> ModelRoute | None:
        """The ``evalrun`` OpenAI-compatible provider only (``OPENAI_BASE_URL`` and a model)."""
        if not trial.model:
            return None
        return ModelRoute("OPENAI_BASE_URL", None, ("OPENAI_API_KEY",))

    def followups(self, trial: PresetTrial, stdout: str) -> list[tuple[list[str], Path]]:
        """``opencode export <session>`` into a file (through a pipe its output stops at
        128 KiB when it exits): the session lives in SQLite."""
        session = _session_id(stdout, "sessionID")
        if session is None:
            return []
        return [([trial.executable, "export", session], trial.home / "opencode-export.json")]

    def collect(self, trial: PresetTrial, stdout: str) -> Records:
        export = _read(trial.home / "opencode-export.json")
        start = export.find("\n{") + 1 if export and not export.startswith("{") else 0
        document = export[start:] if export and "{" in export else None
        try:
            parsed = json.loads(document) if document else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            return Records(load("opencode", stdout))
        run = load("opencode", stdout, document)
        lines = [json.dumps({"type": "session", "info": parsed.get("info")})]
        lines += [json.dumps(dict(m, type="message")) for m in parsed.get("messages") or []
                  if isinstance(m, dict)]
        return Records(run, events="\n".join(lines) + "\n")


BUILTIN: dict[str, Preset] = {p.name: p for p in (ClaudeCode(), Codex(), CopilotCli(),
                                                  GeminiCli(), Opencode())}
