"""Each real coding-agent CLI through the plugin and its model gateway, against the mock model
server, sandboxed: the real key never enters the sandbox (searched by the model's own shell call
in the agent's environment, /proc/*/environ and cmdline of every process it sees, and every file
it can read but the system's /usr), tokens per call are the mock's truth counted by the gateway
(title and background calls included), and a transcript the model's tool rewrote changes nothing
reported (the CLI's own, forged figures are kept beside, with the difference noted).

One short session per CLI (one trial); run with ``-n 2``. Skips as in ``test_presets.py``.
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import pytest
import yaml
from agentcli_env import DEFAULT_MODELS
from mockllm import MockLLM, Script, Usage, custom_tool, say, shell, tool
from test_agent_clis_mock import WRITE, require_cli
from test_presets import PRESETS, PRICING, all_served, endpoint_env, price

KEY_ENV = {"claude": "ANTHROPIC_API_KEY", "codex": "OPENAI_API_KEY",
           "opencode": "OPENAI_API_KEY", "copilot": "COPILOT_PROVIDER_API_KEY",
           "gemini": "GEMINI_API_KEY"}
#: Token fields of each CLI's own records, rewritten by the model's shell call.
FORGE = ("find \"$HOME\" -type f \\( -name '*.jsonl' -o -name '*.json' \\) -exec sed -i -E "
         "'s/\"(input_tokens|inputTokens|input|prompt_tokens)\":[0-9]+/\"\\1\":900000000/g' "
         "{} + ; echo forged")


def search(pattern: str) -> str:
    """A shell command that looks for ``pattern`` (a regex that matches the key without
    containing it) where the agent could read it, writing what it saw into the workspace:
    its environment, every process's environ and cmdline, every file but the system's
    (/usr, /proc, /sys, /dev) and the CLIs' node_modules. Base64-encoded: Copilot CLI asks for
    an approval, which nobody gives, for a command naming paths outside the workspace."""
    script = (f"P='{pattern}'; {{ env; for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; "
              "do tr '\\000' '\\n' < \"$f\"; echo; done; } > probe-env.txt 2>/dev/null; "
              "grep -rIlE \"$P\" / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev "
              "--exclude-dir=usr --exclude-dir=node_modules > probe-files.txt 2>/dev/null; "
              "echo $? > probe-grep-status.txt; "
              "grep -cE \"$P\" probe-env.txt > probe-count.txt; ls /proc | grep -c '^[0-9]' "
              "> probe-procs.txt; echo searched")
    return f"echo {base64.b64encode(script.encode()).decode()} | base64 -d | sh"


def script(cli: str, pattern: str) -> Script:
    name, payload = WRITE[cli]
    u = [Usage(input=1000 + 100 * i, output=20 + i, cache_read=10 * i) for i in range(4)]
    write = (custom_tool(name, payload, u[1]) if isinstance(payload, str)
             else tool(name, payload, u[1]))
    return Script([shell(search(pattern), u[0]), write, shell(FORGE, u[2]), say("done", u[3])])


@pytest.mark.slow
@pytest.mark.parametrize("cli", list(PRESETS))
def test_a_cli_through_the_gateway(cli: str, pytester: pytest.Pytester, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    exe = require_cli(cli)
    hexpart = secrets.token_hex(12)
    real = f"sk-real-{hexpart}"
    pattern = f"sk-rea[l]-{hexpart}"
    monkeypatch.setenv("EVALRUN_TEST_REAL_KEY", real)
    plan = script(cli, pattern)
    with MockLLM(plan, log_path=tmp_path / "mock.jsonl") as mock:
        preset = PRESETS[cli]
        spec = {
            "experiment": f"gw-{cli}", "timeout": 300,
            "variants": {preset: {
                "agent": {"preset": preset, "executable": exe},
                "model": DEFAULT_MODELS[cli], "pricing": PRICING,
                "env": {KEY_ENV[cli]: "${EVALRUN_TEST_REAL_KEY}", **endpoint_env(cli, mock.url),
                        **mock.proxy_env()},
            }},
            "tasks": [{"name": "t", "prompt": "Do as told.",
                       "verify": ["{python}", "-c", "import pathlib, sys; sys.exit(0 if "
                                  "pathlib.Path('hello.txt').is_file() else 1)"]}],
        }
        (pytester.path / f"{cli}.eval.yaml").write_text(yaml.safe_dump(spec))
        run = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    run.assert_outcomes(passed=1)
    (meta_path,) = pytester.path.glob(f"results/gw-{cli}/*/variants/*/tasks/t/trials/001/"
                                      "meta.json")
    trial = meta_path.parent
    meta = json.loads(meta_path.read_text())
    assert meta["isolation"]["sandbox"] == "bwrap", meta["isolation"]
    work = trial / "workspace"

    # The key is nowhere the agent could look; the search did run (its positive controls).
    env_seen = (work / "probe-env.txt").read_text()
    assert real not in env_seen
    assert "evalrun-" in env_seen  # the stand-in is in its environment
    assert int((work / "probe-procs.txt").read_text()) >= 2
    assert (work / "probe-count.txt").read_text().strip() == "0"
    # grep ran to its end (1: no match; 2: no match, some unreadable file)
    assert (work / "probe-grep-status.txt").read_text().strip() in ("1", "2")
    assert (work / "probe-files.txt").read_text() == "", "the key is in a file the agent reads"
    assert all(real not in json.dumps(r["headers"]) for r in mock.requests)  # redacted anyway
    for path in trial.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert real.encode() not in path.read_bytes(), f"the key in {path}"

    # Tokens: the mock's truth, every call, counted by the gateway.
    every = all_served(mock, plan)
    assert len(every) >= len(plan.turns)
    metrics = json.loads((trial / "artifacts" / "metrics.json").read_text())
    assert metrics["token_source"] == "gateway"
    assert [(c["input_tokens"], c["cache_read_tokens"], c["output_tokens"])
            for c in metrics["calls"]] == [(u.input, u.cache_read, u.output) for u in every]
    assert meta["metrics"]["source"] == "gateway"
    assert meta["metrics"]["input_tokens"] == sum(u.input for u in every)
    assert meta["metrics"]["output_tokens"] == sum(u.output for u in every)
    assert meta["metrics"]["cost_usd"] == pytest.approx(sum(price(u) for u in every))
    # The CLI's own figures, forged by the model's tool where they are text files, are beside.
    cli_figures = meta["metrics"]["cli"]
    assert cli_figures is not None
    if cli_figures["input_tokens"] >= 900_000_000:
        assert "by the CLI" in cli_figures["difference"]
    gateway = metrics["gateway"]
    assert all(r["latency_ms"] is not None for r in gateway["requests"])
    print(json.dumps({"cli": cli, "gateway_calls": len(every),
                      "gateway_input": meta["metrics"]["input_tokens"],
                      "gateway_output": meta["metrics"]["output_tokens"],
                      "cli_calls": cli_figures["model_calls"],
                      "cli_input": cli_figures["input_tokens"],
                      "cli_output": cli_figures["output_tokens"],
                      "difference": cli_figures["difference"]}))
