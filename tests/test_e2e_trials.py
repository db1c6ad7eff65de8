"""End to end: real pytest sessions run real agent subprocesses and leave the standard layout."""

from __future__ import annotations

import json
import sys

import psutil
import pytest
from conftest import VERIFY, Suite, assert_all_json_parse

LAYOUT_FILES = (
    "meta.json",
    "prompt.md",
    "stdout.txt",
    "metrics.json",
    "workspace.diff",
    "verify.json",
)


def test_pass_and_fail_leave_the_standard_layout(suite: Suite) -> None:
    suite.experiment(trials=2)
    result = suite.pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=2)
    run = suite.run_dirs()[0]
    for name in ("run.json", "summary.json", "summary.md", "metrics.txt"):
        assert (run / name).is_file(), name
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert (run / "variants/base/variant.json").is_file()
    for task in ("good", "bad"):
        assert (run / f"variants/base/tasks/{task}/task.json").is_file()
        for n in (1, 2):
            trial = suite.trial_dir("base", task, n)
            for name in LAYOUT_FILES:
                assert (trial / name).is_file(), (task, n, name)
            assert (trial / "workspace" / "README.md").is_file()
            assert (trial / "events.jsonl").is_file()
            assert (trial / "otel.jsonl").is_file()
    good = suite.meta("base", "good")
    assert good["status"] == "passed" and good["success"] is True and good["reward"] == 1.0
    assert good["agent_exit"] == 0 and good["verify_exit"] == 0
    assert good["seed"] == suite.meta("base", "good", 1)["seed"]
    assert good["seed"] != suite.meta("base", "good", 2)["seed"]
    bad = suite.meta("base", "bad")
    assert bad["status"] == "failed" and bad["success"] is False
    diff = (suite.trial_dir("base", "good", 1) / "workspace.diff").read_text()
    assert "answer.txt" in diff and "+ok" in diff
    metrics = json.loads((suite.trial_dir("base", "good", 1) / "metrics.json").read_text())
    assert metrics["input_tokens"] == 100 and metrics["output_tokens"] == 7
    assert metrics["model"] == "m1"
    assert (suite.trial_dir("base", "good", 1) / "prompt.md").read_text() == "WRITE answer.txt ok"
    assert assert_all_json_parse(suite.results(), suite.root / "jobs") > 10
    # the failure report says what a person needs first
    result.stdout.fnmatch_lines(
        [
            "*FAILED: base / bad / trial 1*",
            "*verify rejected the result (exit status 1)*",
            "*trial directory: *trials/001*",
        ]
    )


def test_rewards_and_pass_threshold(suite: Suite) -> None:
    suite.write(
        "fixtures/basic/score.sh",
        """
        #!/bin/sh
        echo "$1" > "$EVALRUN_VERIFIER_DIR/reward.txt"
    """,
    ).chmod(0o755)
    suite.write(
        "fixtures/basic/multi.sh",
        """
        #!/bin/sh
        echo '{"reward": 0.75, "style": 0.5}' > "$EVALRUN_VERIFIER_DIR/reward.json"
    """,
    ).chmod(0o755)
    suite.experiment(
        tasks=[
            {
                "name": "half-ok",
                "prompt": "x",
                "fixture": "fixtures/basic",
                "verify": "./score.sh 0.5",
                "pass_threshold": 0.5,
            },
            {
                "name": "half-low",
                "prompt": "x",
                "fixture": "fixtures/basic",
                "verify": "./score.sh 0.4",
                "pass_threshold": 0.5,
            },
            {
                "name": "json",
                "prompt": "x",
                "fixture": "fixtures/basic",
                "verify": "./multi.sh",
                "pass_threshold": 0.7,
            },
            {
                "name": "garbage",
                "prompt": "x",
                "fixture": "fixtures/basic",
                "verify": "./score.sh not-a-number",
            },
        ]
    )
    result = suite.pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=2)
    assert suite.meta("base", "half-ok")["reward"] == 0.5
    low = suite.meta("base", "half-low")
    assert low["status"] == "failed" and "below the pass threshold" in low["message"]
    js = suite.meta("base", "json")
    assert js["rewards"] == {"reward": 0.75, "style": 0.5} and js["status"] == "passed"
    garbage = suite.meta("base", "garbage")  # a bad reward is judged: a failure, reward 0
    assert garbage["status"] == "failed" and garbage["reward"] == 0.0
    assert garbage["failure_kind"] == "verify_bad_reward" and garbage["error_kind"] is None


def test_error_statuses(suite: Suite) -> None:
    suite.experiment(
        variants={
            "base": {},
            "no-agent": {"agent": {"command": ["no-such-agent-xyz"]}},
            "bad-setup": {"setup": "exit 3"},
        },
        tasks=[
            {
                "name": "t",
                "prompt": "WRITE answer.txt ok",
                "fixture": "fixtures/basic",
                "verify": VERIFY,
            }
        ],
    )
    result = suite.pytester.runpytest("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=1, errors=2)
    assert suite.meta("no-agent", "t")["error_kind"] == "agent_missing"
    assert "no-such-agent-xyz" in suite.meta("no-agent", "t")["message"]
    assert suite.meta("bad-setup", "t")["error_kind"] == "setup_failed"
    summary = json.loads((suite.run_dirs()[0] / "summary.json").read_text())
    assert summary["experiments"][0]["totals"]["errors"] == 2


def test_timeout_kills_the_whole_process_tree(suite: Suite) -> None:
    suite.write(
        "fixtures/basic/spawn.sh",
        """
        #!/bin/sh
        (trap '' TERM; sleep 3600) &
        echo $! > "$EVALRUN_ARTIFACTS_DIR/ignorer.pid"
        setsid sh -c 'echo $$ > "$EVALRUN_ARTIFACTS_DIR/escaper.pid"; exec sleep 3600' &
        sleep 3600
    """,
    ).chmod(0o755)
    suite.experiment(
        defaults={"agent": {"command": "./spawn.sh"}},
        tasks=[
            {
                "name": "slow",
                "prompt": "x",
                "fixture": "fixtures/basic",
                "verify": "true",
                "timeout": 1.5,
            }
        ],
    )
    # Every process sleeps an hour: the run ending with them dead shows the kill (the subprocess
    # timeout only keeps a broken kill from hanging the suite). Unsandboxed: the cookie and
    # session kill (the sandbox's PID namespace is tested in test_hostile.py; the pids written
    # inside it mean nothing outside).
    result = suite.pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--eval-sandbox", "none", timeout=600
    )
    result.assert_outcomes(failed=1)
    meta = suite.meta("base", "slow")
    assert meta["status"] == "timeout" and meta["reward"] == 0.0
    artifacts = suite.trial_dir("base", "slow", 1) / "artifacts"
    for name in ("ignorer.pid", "escaper.pid"):
        pid = int((artifacts / name).read_text())
        alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        assert not alive, f"{name} survived"
    result.stdout.fnmatch_lines(["*TIMEOUT: base / slow / trial 1*"])


def test_environment_and_placeholders(suite: Suite) -> None:
    suite.experiment(
        defaults={
            "agent": {
                "command": [
                    sys.executable,
                    str(suite.root / "agent.py"),
                    "{variant}",
                    "{trial}",
                    "{seed}",
                    "{run_id}",
                ]
            },
            "env": {"MY_VAR": "${MY_INPUT:-fallback}"},
        },
        variants={"v1": {"model": "prov/model-x"}},
        tasks=[
            {
                "name": "t",
                "prompt": "ENV",
                "fixture": "fixtures/basic",
                "verify": "echo '{print $1}' {task} {workspace} > out.txt; true",
            }
        ],
    )
    suite.pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    trial = suite.trial_dir("v1", "t", 1)
    env = json.loads((trial / "stdout.txt").read_text().splitlines()[-1])
    assert env["EVALRUN_VARIANT"] == "v1" and env["EVALRUN_TASK"] == "t"
    assert env["EVALRUN_TRIAL"] == "1" and env["EVALRUN_MODEL"] == "prov/model-x"
    # the workspace as the step sees it: at a neutral path in the sandbox
    inside = "/tmp/workspace"
    assert suite.meta("v1", "t")["isolation"]["sandbox"] == "bwrap"
    assert env["EVALRUN_WORKSPACE"] == inside
    assert env["EVALRUN_TRIAL_DIR"] == str(trial)
    assert env["EVALRUN_PROMPT_FILE"] == str(trial / "prompt.md")
    assert env["EVALRUN_EXPERIMENT"] == "exp" and env["MY_VAR"] == "fallback"
    assert int(env["EVALRUN_SEED"]) == suite.meta("v1", "t")["seed"]
    assert "EVALRUN_VERIFIER_DIR" not in env
    out = (trial / "workspace" / "out.txt").read_text().split()
    assert out[:2] == ["{print", "$1}"]  # unknown braces survive
    assert out[2] == "t" and out[3] == inside


def test_python_callable_agent_and_verifier(suite: Suite) -> None:
    suite.write(
        "helpers.py",
        """
        from pathlib import Path

        def agent(ctx):
            (ctx.workspace / "answer.txt").write_text(f"{ctx.task} seed={ctx.seed}\\n")

        def verify(ctx):
            text = (ctx.workspace / "answer.txt").read_text()
            assert ctx.task in text, "wrong answer"
            return 0.9 if ctx.task == "t1" else {"reward": 0.2}

        def crash(ctx):
            raise RuntimeError("verifier bug")
    """,
    )
    suite.experiment(
        defaults={"agent": {"python": "helpers:agent"}},
        tasks=[
            {
                "name": "t1",
                "prompt": "x",
                "fixture": "fixtures/basic",
                "verify": {"python": "helpers:verify"},
                "pass_threshold": 0.8,
            },
            {
                "name": "t2",
                "prompt": "x",
                "fixture": "fixtures/basic",
                "verify": {"python": "helpers:verify"},
                "pass_threshold": 0.8,
            },
            {
                "name": "t3",
                "prompt": "x",
                "fixture": "fixtures/basic",
                "verify": {"python": "helpers:crash"},
            },
        ],
    )
    result = suite.pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    assert suite.meta("base", "t1")["reward"] == 0.9
    assert suite.meta("base", "t2")["reward"] == 0.2
    crashed = suite.meta("base", "t3")  # a verifier that raises on the agent's work: judged
    assert crashed["status"] == "failed" and crashed["reward"] == 0.0
    assert crashed["failure_kind"] == "verify_crashed" and crashed["error_kind"] is None


def test_secrets_never_written_or_printed(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-1234567890abcdef"
    monkeypatch.setenv("SERVICE_API_TOKEN", secret)
    suite.write(
        "fixtures/basic/leak.sh",
        """
        #!/bin/sh
        echo "token is $API_TOKEN"
        echo "$API_TOKEN" > leaked.txt
        echo "$API_TOKEN" > "$EVALRUN_ARTIFACTS_DIR/session.md"
        echo "verify sees $API_TOKEN"
        exit 1
    """,
    ).chmod(0o755)
    suite.experiment(
        defaults={"agent": {"command": "./leak.sh"}, "env": {"API_TOKEN": "${SERVICE_API_TOKEN}"}},
        tasks=[
            {
                "name": "t",
                "prompt": "x",
                "fixture": "fixtures/basic",
                "verify": "echo secret=$API_TOKEN; false",
            }
        ],
    )
    result = suite.pytester.runpytest("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(failed=1)
    assert secret not in result.stdout.str() + result.stderr.str()
    trial = suite.trial_dir("base", "t", 1)
    assert "token is ***" in (trial / "stdout.txt").read_text()
    scanned = 0
    for root in (suite.results(), suite.root / "jobs"):
        for path in root.rglob("*"):
            if path.is_file() and "workspace" not in path.relative_to(root).parts:
                assert secret.encode() not in path.read_bytes(), path
                scanned += 1
    assert scanned > 15
    assert "leaked.txt" in (trial / "workspace.diff").read_text()


def test_a_masked_executable_keeps_its_mode(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret masked in a kept workspace's script leaves the script executable (755), and a
    private file private (600): masking rewrites the content, never the mode."""
    secret = "sk-test-mode-1234567890"
    monkeypatch.setenv("SERVICE_API_TOKEN", secret)
    suite.write(
        "fixtures/basic/write.sh",
        """
        #!/bin/sh
        printf '#!/bin/sh\\necho %s\\n' "$API_TOKEN" > deploy.sh
        chmod 755 deploy.sh
        echo "$API_TOKEN" > private.txt
        chmod 600 private.txt
    """,
    ).chmod(0o755)
    suite.experiment(
        defaults={"agent": {"command": "./write.sh"}, "env": {"API_TOKEN": "${SERVICE_API_TOKEN}"}},
        tasks=[{"name": "t", "prompt": "x", "fixture": "fixtures/basic", "verify": "true"}],
    )
    suite.pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    workspace = suite.trial_dir("base", "t", 1) / "workspace"
    script, private = workspace / "deploy.sh", workspace / "private.txt"
    assert secret not in script.read_text() and "***" in script.read_text()
    assert secret not in private.read_text()
    assert script.stat().st_mode & 0o7777 == 0o755
    assert private.stat().st_mode & 0o7777 == 0o600


def test_steps_record_killed_leftovers_and_cut_output(suite: Suite) -> None:
    """meta.json's steps say how many processes a step left behind (killed when it ended) and
    how many bytes of its output were cut at the output cap (10 MiB)."""
    suite.write(
        "fixtures/basic/leave.sh",
        """
        #!/bin/sh
        sleep 300 &
        sleep 300 &
        echo started
    """,
    ).chmod(0o755)
    suite.write(
        "fixtures/basic/loud.sh",
        """
        #!/bin/sh
        head -c 11534336 /dev/zero | tr '\\0' a
    """,
    ).chmod(0o755)
    suite.experiment(
        # unsandboxed: bubblewrap's PID namespace ends the leftovers itself, so what is left
        # to count there is not the agent's doing
        variants={"leave": {"agent": {"command": "./leave.sh"}, "sandbox": "none"},
                  "loud": {"agent": {"command": "./loud.sh"}, "sandbox": "none"},
                  "quiet": {"agent": {"command": "true"}, "sandbox": "none"}},
        tasks=[{"name": "t", "prompt": "x", "fixture": "fixtures/basic", "verify": "true"}],
    )
    suite.pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=3)
    leave = suite.meta("leave", "t")["steps"]["agent"]
    loud = suite.meta("loud", "t")["steps"]["agent"]
    quiet = suite.meta("quiet", "t")["steps"]
    assert leave["killed_leftovers"] == 2 and leave["output_cut"] == 0, leave
    assert loud["output_cut"] == 11534336 - 10 * 1024 * 1024 and loud["killed_leftovers"] == 0
    kept = (suite.trial_dir("loud", "t", 1) / "stdout.txt").stat().st_size
    assert 10 * 1024 * 1024 <= kept < 10 * 1024 * 1024 + 1024  # the cap, and a note of the cut
    for role in ("agent", "verify"):
        assert (quiet[role]["killed_leftovers"], quiet[role]["output_cut"]) == (0, 0), quiet


def test_fixture_contents_are_never_collected(suite: Suite) -> None:
    suite.write("fixtures/basic/test_inside.py", "def test_x():\n    assert False\n")
    suite.write("fixtures/basic/nested.eval.yaml", "not: [valid")
    suite.experiment()
    result = suite.pytester.runpytest("-p", "no:cacheprovider", "--co", "-q")
    result.stdout.fnmatch_lines(
        [
            "exp.eval.yaml::base::good::trial-001",
            "exp.eval.yaml::base::bad::trial-001",
            "2 tests collected*",
        ]
    )
    assert "test_inside" not in result.stdout.str()
    # a second run does not collect the first run's results/ and jobs/ either
    suite.pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1, failed=1)
    result = suite.pytester.runpytest("-p", "no:cacheprovider", "--co", "-q")
    result.stdout.fnmatch_lines(["2 tests collected*"])


def test_missing_agents_are_errors_and_agents_cannot_forge_rewards(suite: Suite) -> None:
    suite.write("fixtures/basic/forge.sh", """
        #!/bin/sh
        mkdir -p "$EVALRUN_TRIAL_DIR/verifier"
        echo '{"reward": 1.0}' > "$EVALRUN_TRIAL_DIR/verifier/reward.json"
    """).chmod(0o755)
    suite.experiment(
        variants={
            "shell-missing": {"agent": {"command": "no-such-agent-xyz --go"}},
            "py-missing": {"agent": {"python": "no_such_module_xyz:run"}},
            "forger": {"agent": {"command": "./forge.sh"}},
        },
        tasks=[{"name": "t", "prompt": "x", "fixture": "fixtures/basic",
                "verify": 'echo 0 > "$EVALRUN_VERIFIER_DIR/reward.txt"'}],
    )
    result = suite.pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, errors=2)
    assert suite.meta("shell-missing", "t")["error_kind"] == "agent_missing"
    assert suite.meta("py-missing", "t")["error_kind"] == "agent_missing"
    forged = suite.meta("forger", "t")
    assert forged["status"] == "failed" and forged["reward"] == 0.0


def test_duplicate_experiment_names_are_an_error(suite: Suite) -> None:
    fixture = str(suite.root / "fixtures" / "basic")
    tasks = [{"name": "t", "prompt": "x", "fixture": fixture, "verify": "true"}]
    suite.experiment("same", tasks=tasks)
    (suite.root / "other").mkdir()
    (suite.root / "same.eval.yaml").rename(suite.root / "other" / "copy.eval.yaml")
    suite.experiment("same", tasks=tasks)
    result = suite.pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*experiment name 'same' is also used by*"])


def test_files_are_readable_and_rotating_a_secret_does_not_rerun(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = suite.shared / "starts.txt"
    monkeypatch.setenv("AGENT_COUNTER", str(counter))
    monkeypatch.setenv("SVC_TOKEN", "first-secret-value")
    suite.experiment(defaults={"agent": {"command": suite.agent_cmd},
                               "env": {"API_TOKEN": "${SVC_TOKEN}"}})
    suite.pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1, failed=1)
    meta = suite.trial_dir("base", "good", 1) / "meta.json"
    assert meta.stat().st_mode & 0o044 == 0o044  # group/other readable, like open() makes
    monkeypatch.setenv("SVC_TOKEN", "second-secret-value")
    r = suite.pytester.runpytest("-p", "no:cacheprovider", "--eval-resume")
    r.assert_outcomes(passed=1, failed=1)
    assert len(counter.read_text().splitlines()) == 2
