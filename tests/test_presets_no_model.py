"""Infrastructure failures are not agent failures (issue 18 item 5; docs/running.md "Statuses"): a
preset's real CLI that made no model call (no key, a model API refusing the credentials with
401, an endpoint that accepts no connection) gives an ``error`` trial (``no_model_call`` or
``model_unreachable``, the CLI's own words in the message), never a judged failed or timeout;
a CLI that made calls and then failed stays judged. Run through the plugin (one pytest session
with two xdist workers per CLI) against the mock model server, offline.

Skips name what is missing, as in ``test_presets.py``."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentcli_env import DEFAULT_MODELS
from mockllm import MockLLM, Script, Usage, api_error, shell
from test_agent_clis_mock import require_cli
from test_presets import PRESETS, endpoint_env, key_env

VERIFY = ["{python}", "-c", "import pathlib, sys; sys.exit(0 if pathlib.Path('hello.txt')"
          ".is_file() else 1)"]


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def fail_fast_env(cli: str, directory: Path) -> dict[str, str]:
    """The CLI's own settings for fewer retries against a model API that refuses or is not
    there (each retried with backoff until the trial's timeout otherwise: 90 s a task). What
    the test checks is unchanged: the CLI still makes no model call and says so. (Codex's are
    its arguments: :data:`FAIL_FAST_ARGS`.)"""
    if cli == "claude":
        return {"CLAUDE_CODE_MAX_RETRIES": "0"}
    if cli == "gemini":  # read from the workspace (the sandbox has a /tmp of its own)
        fixture = directory / "fixture"
        fixture.mkdir(exist_ok=True)
        settings = {"general": {"maxAttempts": 1, "retryFetchErrors": False}}
        (fixture / GEMINI_SETTINGS).write_text(json.dumps(settings))
        return {"GEMINI_CLI_SYSTEM_SETTINGS_PATH": GEMINI_SETTINGS}
    return {}


GEMINI_SETTINGS = ".gemini-system-settings.json"
#: Codex retries a refused request 4 times and a stream 5 times with backoff (8 s for the
#: 401 task, 27 s for the closed port): its provider's retry settings, as ``-c`` overrides
#: of the config the preset writes.
FAIL_FAST_ARGS = {"codex": ["-c", "model_providers.evalrun.request_max_retries=0",
                            "-c", "model_providers.evalrun.stream_max_retries=0"]}
#: The unreachable task's timeout: long enough for a CLI to start and try (a few seconds),
#: short of the 90 s the CLIs that retry a closed port would otherwise spend (opencode and
#: Copilot have no setting for fewer retries: they are stopped here, and what is checked,
#: no model call and an endpoint that accepts no connection, is told the same way).
UNREACHABLE_TIMEOUT = 15


def trial_meta(root: Path, cli: str, task: str) -> dict[str, Any]:
    found = list((root / "results").glob(f"*/*/variants/*/tasks/{task}/trials/001/meta.json"))
    assert len(found) == 1, found
    data: dict[str, Any] = json.loads(found[0].read_text())
    return data


@pytest.mark.slow
@pytest.mark.parametrize("cli", ["claude", "codex", "opencode", "copilot", "gemini"])
def test_a_cli_that_made_no_model_call_is_an_error(
    cli: str, pytester: pytest.Pytester, tmp_path: Path
) -> None:
    exe = require_cli(cli)
    preset = PRESETS[cli]
    refuse = Script([api_error(401, "mock: invalid x-api-key")], exhausted_status=401)
    answered = Script([shell("ls", Usage(input=1200, output=30))], exhausted_status=400)
    unreachable = f"http://127.0.0.1:{closed_port()}"
    with MockLLM(refuse, log_path=tmp_path / "refuse.jsonl") as m401, \
            MockLLM(Script([api_error(401)], exhausted_status=401),
                    log_path=tmp_path / "nokey.jsonl") as nokey, \
            MockLLM(answered, log_path=tmp_path / "answered.jsonl") as m_answered:
        fast = fail_fast_env(cli, pytester.path)
        spec: dict[str, Any] = {
            "experiment": f"nomodel-{cli}",
            "timeout": 90,
            "variants": {preset: {"agent": {"preset": preset, "executable": exe,
                                            "args": FAIL_FAST_ARGS.get(cli, [])},
                                  "model": DEFAULT_MODELS[cli],
                                  "env": fast}},
            "tasks": [
                {"name": "refused", "prompt": "hi", "verify": VERIFY,
                 "env": {**endpoint_env(cli, m401.url), **key_env(cli), **m401.proxy_env()}},
                {"name": "no-key", "prompt": "hi", "verify": VERIFY,
                 "env": {**endpoint_env(cli, nokey.url), **nokey.proxy_env()}},
                # codex and opencode retry a closed port until the timeout: what is checked
                # (made no model call: model_unreachable) is told by then, so no 90 s wait
                {"name": "unreachable", "prompt": "hi", "verify": VERIFY,
                 "timeout": UNREACHABLE_TIMEOUT,
                 "env": {**endpoint_env(cli, unreachable), **key_env(cli)}},
                {"name": "answered-then-failed", "prompt": "hi", "verify": VERIFY,
                 "env": {**endpoint_env(cli, m_answered.url), **key_env(cli),
                         **m_answered.proxy_env()}},
            ],
        }
        if (pytester.path / "fixture").is_dir():  # the settings fail_fast_env wrote there
            for task in spec["tasks"]:
                task["fixture"] = "fixture"
        (pytester.path / f"{cli}.eval.yaml").write_text(yaml.safe_dump(spec))
        run = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", timeout=600)
    out = run.stdout.str()
    outcomes = run.parseoutcomes()
    assert (outcomes.get("errors"), outcomes.get("failed")) == (3, 1), out[-4000:]
    for task in ("refused", "no-key", "unreachable"):
        meta = trial_meta(pytester.path, cli, task)
        assert meta["status"] == "error", (task, meta)
        assert meta["error_kind"] == ("model_unreachable" if task == "unreachable"
                                      else "no_model_call"), (task, meta["error_kind"])
        assert "made no model call" in meta["message"] and "The CLI said:" in meta["message"]
        assert meta["reward"] is None
    assert m401.served and all(s.get("error_status") == 401 for s in m401.served)
    judged = trial_meta(pytester.path, cli, "answered-then-failed")
    assert judged["status"] == "failed" and judged["error_kind"] is None, judged
    assert m_answered.served and not m_answered.served[0].get("error_status")  # one answer
    # Harbor's exception types
    results = {p.parent.name: json.loads(p.read_text())
               for p in (pytester.path / "jobs").glob("*/*/result.json")}
    types = sorted(r["exception_info"]["exception_type"] for r in results.values()
                   if r["exception_info"])
    assert types == ["ApiError", "ApiError", "NetworkConnectionError"], types
