"""Values and files an agent leaves that the plugin must read without stalling, crashing or being
misled (issue 18 item 1, issue 20's FIFO): absurd numbers in artifacts/metrics.json and the
OpenTelemetry JSONL, and FIFOs, devices, sockets, huge files and deep trees where the plugin reads
after the agent step. The trial is judged by its verify as usual (never ``internal``), the bad
value is left out with a note, and every JSON file the plugin writes is strict JSON. Each case
through a real pytest session, serial and with two xdist workers; a deadline catches a hang."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import pytest
from cli_helpers import evalrun
from conftest import VERIFY, Suite
from test_trial_verdicts import all_strict

#: An agent that writes answer.txt, then runs the snippet given as its first argument with
#: ``art`` (the artifacts dir) and ``os`` at hand.
AGENT = """
import os, socket, sys
art = os.environ["EVALRUN_ARTIFACTS_DIR"]
open("answer.txt", "w").write("ok\\n")
exec(sys.argv[1])
"""

#: Python expressions for the text of artifacts/metrics.json.
METRICS_VALUES = {
    "overflow": "'{\"input_tokens\": 1e309, \"output_tokens\": 5}'",
    "infinity": "'{\"input_tokens\": Infinity, \"cost_usd\": -Infinity}'",
    "nan": "'{\"input_tokens\": NaN, \"cost_usd\": NaN, \"model\": \"m\"}'",
    "negative": "'{\"input_tokens\": -5, \"output_tokens\": 3, \"cost_usd\": -1000}'",
    "digits": "'{\"input_tokens\": ' + '9' * 400 + ', \"cost_usd\": ' + '9' * 400 + '}'",
    "float-digits": "'{\"input_tokens\": 1e300, \"cost_usd\": 1e300}'",
    "nested": "'[' * 200_000 + ']' * 200_000",
    "nested-value": "'{\"input_tokens\": ' + '[' * 200_000 + ']' * 200_000 + '}'",
    "bool": "'{\"input_tokens\": true, \"cost_usd\": \"12\", \"model\": 7}'",
}

#: Snippets that leave a file the plugin reads, but not a regular file (or one too big).
SPECIAL_FILES = {
    "fifo-metrics": "os.mkfifo(os.path.join(art, 'metrics.json'))",
    "fifo-otel": "os.mkfifo(os.path.join(art, 'agent-otel.jsonl'))",
    "fifo-promoted": "[os.mkfifo(os.path.join(art, n)) for n in "
                     "('events.jsonl', 'session.md', 'analysis.json')]",
    "fifo-workspace": "os.mkfifo('pipe.txt'); os.mkfifo(os.path.join(art, 'x.fifo'))",
    "link-device": "os.symlink('/dev/zero', os.path.join(art, 'metrics.json')); "
                   "os.symlink('/dev/zero', os.path.join(art, 'z-otel.jsonl'))",
    # (a sandboxed step may not create AF_UNIX sockets; mknod still leaves a socket file)
    "socket": "import stat; os.mknod(os.path.join(art, 'metrics.json'), stat.S_IFSOCK | 0o600)",
    "huge-metrics": "f = open(os.path.join(art, 'metrics.json'), 'wb'); "
                    "f.truncate(100 * 1024 ** 2); f.close()",
    "huge-otel": "f = open(os.path.join(art, 'big-otel.jsonl'), 'wb'); "
                 "f.truncate(100 * 1024 ** 2); f.close()",
    "deep-tree": "p = 'deep'\nfor _ in range(1500):\n    p = os.path.join(p, 'd')\n"
                 "os.makedirs(p)\nopen(os.path.join(p, 'leaf.txt'), 'w').write('x')",
    "events-nested": "open(os.path.join(art, 'events.jsonl'), 'w')"
                     ".write('{\"a\": ' + '[' * 200000 + ']' * 200000 + '}\\n')",
    "metrics-non-utf8": "open(os.path.join(art, 'metrics.json'), 'wb')"
                        ".write(b'{\"input_tokens\": 3, \"model\": \"\\xff\"}')",
    "otel-values": "open(os.path.join(art, 'v-otel.jsonl'), 'w').write("
                   "'{\"attributes\": {\"gen_ai.usage.input_tokens\": 1e309}}\\n'"
                   "'{\"attributes\": {\"gen_ai.usage.output_tokens\": -4}}\\n'"
                   "'{\"attributes\": {\"gen_ai.usage.cost\": NaN}}\\n'"
                   "'{\"attributes\": {\"gen_ai.usage.input_tokens\": 12}}\\n' + "
                   "'[' * 200000 + ']' * 200000 + '\\n')",
}


def experiment(suite: Suite, snippets: dict[str, str]) -> None:
    suite.write("hostile.py", AGENT)
    agent = [sys.executable, str(suite.root / "hostile.py")]
    # a secret in the env: every file of the trial is masked, through the agent's tree
    suite.experiment(
        variants={name: {"agent": {"command": [*agent, code]},
                         "env": {"MY_API_TOKEN": "tok-3f9a8b7c6d5e4f3a2b1c"}}
                  for name, code in snippets.items()},
        tasks=[{"name": "t", "prompt": "x", "fixture": "fixtures/basic", "verify": VERIFY}],
    )


def run(suite: Suite, workers: list[str]) -> pytest.RunResult:
    # a deadline: a hang fails the test instead of stalling the suite
    return suite.pytester.runpytest_subprocess("-p", "no:cacheprovider", *workers,
                                               timeout=420)


def check_judged(suite: Suite, result: pytest.RunResult, names: list[str]) -> None:
    result.assert_outcomes(passed=len(names))
    assert "internal" not in result.stdout.str()
    for name in names:
        meta = suite.meta(name, "t")
        assert meta["status"] == "passed" and meta["error_kind"] is None, (name, meta)
        m = meta["metrics"]
        for key in ("input_tokens", "output_tokens", "cache_tokens"):
            value = m[key]
            assert value is None or (isinstance(value, int) and 0 <= value < 10**15), (name, m)
        assert m["cost_usd"] is None or (math.isfinite(m["cost_usd"])
                                         and 0 <= m["cost_usd"] < 10**9), (name, m)
        assert m["model"] is None or isinstance(m["model"], str)
    assert all_strict(suite.results(), suite.root / "jobs") > 3 * len(names)
    # every trial is in the Harbor job too (none lost to what its agent left)
    assert len(list((suite.root / "jobs").glob("*/*/result.json"))) == len(names)
    assert "Pier jobs layout not written" not in result.stdout.str()
    r = evalrun("report", "-o", "report.html", cwd=suite.root)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    r = evalrun("check", cwd=suite.root)
    assert r.returncode == 0, (r.stdout, r.stderr)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_absurd_metrics_are_left_out_with_a_note(suite: Suite, workers: list[str]) -> None:
    snippets = {name: f"open(os.path.join(art, 'metrics.json'), 'w').write({text})"
                for name, text in METRICS_VALUES.items()}
    experiment(suite, snippets)
    result = run(suite, workers)
    check_judged(suite, result, list(snippets))
    meta = suite.meta("overflow", "t")
    assert meta["metrics"]["input_tokens"] is None and meta["metrics"]["output_tokens"] == 5
    assert any("input_tokens" in n for n in meta["metrics"]["notes"])
    neg = suite.meta("negative", "t")["metrics"]
    assert neg["input_tokens"] is None and neg["cost_usd"] is None and neg["output_tokens"] == 3
    assert len(neg["notes"]) == 2
    stored = json.loads((suite.trial_dir("negative", "t", 1) / "metrics.json").read_text())
    assert stored["notes"] == neg["notes"]


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_special_files_never_stall_nor_crash_a_trial(suite: Suite, workers: list[str]) -> None:
    experiment(suite, SPECIAL_FILES)
    result = run(suite, workers)
    check_judged(suite, result, list(SPECIAL_FILES))
    for name in ("fifo-metrics", "socket", "huge-metrics", "link-device"):
        notes = suite.meta(name, "t")["metrics"]["notes"]
        assert any("metrics.json" in n for n in notes), (name, notes)
    otel = suite.meta("otel-values", "t")["metrics"]
    assert otel["input_tokens"] == 12 and otel["output_tokens"] == 0, otel
    assert otel["cost_usd"] is None
    for key in ("input_tokens", "output_tokens", "cost"):
        assert any(key in n for n in otel["notes"]), otel["notes"]
    assert any("nested too deep" in n for n in otel["notes"]), otel["notes"]
    diff = (suite.trial_dir("fifo-workspace", "t", 1) / "workspace.diff").read_text()
    assert "+++ b/answer.txt" in diff


def test_a_run_on_disk_with_nan_is_read_and_checked_without_a_crash(suite: Suite) -> None:
    """An old run (0.2.0 wrote NaN rewards and metrics): report, show, compare and check read
    it; check does not call the untouched trials hand-edited."""
    suite.experiment()
    suite.pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(
        passed=1, failed=1)
    trial = suite.trial_dir("base", "bad", 1)
    for name in ("meta.json", "verify.json", "metrics.json"):
        data: dict[str, Any] = json.loads((trial / name).read_text())
        if name == "meta.json":
            data["reward"] = float("nan")
            data["rewards"] = {"reward": float("nan")}
            data["metrics"]["cost_usd"] = float("inf")
        elif name == "verify.json":
            data["reward"] = float("nan")
        else:
            data["cost_usd"] = float("nan")
        (trial / name).write_text(json.dumps(data))  # NaN, as 0.2.0 wrote it
    # the index as 0.2.0 left it: SQLite stores NaN as NULL
    import sqlite3

    con = sqlite3.connect(suite.results() / "index.db")
    con.execute("UPDATE trials SET reward = ? WHERE task = 'bad'", (float("nan"),))
    con.commit()
    con.close()
    for cmd in (["report", "-o", "report.html"], ["show"], ["runs"],
                ["export", "--format", "jsonl"], ["export", "--format", "csv"]):
        r = evalrun(*cmd, cwd=suite.root)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
    r = evalrun("check", cwd=suite.root)
    assert "hand-edited" not in r.stdout, r.stdout
    assert r.returncode == 0, (r.stdout, r.stderr)
    html = suite.root / "report.html"
    assert "NaN" not in html.read_text()


def test_an_agent_cannot_choose_which_of_its_trials_count(suite: Suite) -> None:
    """Issue 18's replay: on the trials it fails the agent writes ``{"input_tokens": 1e309}``
    (0.2.0 made them ``internal`` errors: 2/8 honest became 2/2, a gate of 0.9 met)."""
    suite.write("chooser.py", """
        import os, pathlib
        good = int(os.environ["EVALRUN_TRIAL"]) <= 2
        pathlib.Path("answer.txt").write_text("ok\\n" if good else "nope\\n")
        if not good:
            art = pathlib.Path(os.environ["EVALRUN_ARTIFACTS_DIR"])
            (art / "metrics.json").write_text('{"input_tokens": 1e309}')
    """)
    suite.experiment(
        retries=2,
        variants={"chooser": {"agent": {"command": [sys.executable,
                                                    str(suite.root / "chooser.py")]}}},
        tasks=[{"name": "t", "prompt": "x", "fixture": "fixtures/basic", "verify": VERIFY,
                "trials": 8}],
    )
    result = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2",
                                                 "--eval-min-pass-rate=0.9", timeout=300)
    result.assert_outcomes(passed=2, failed=6)
    assert result.ret == 1  # the gate sees 2/8 (2/2 would meet it)
    summary = json.loads((suite.run_dirs()[-1] / "summary.json").read_text())
    variant = summary["experiments"][0]["variants"][0]
    assert (variant["passed"], variant["n"], variant["errors"]) == (2, 8, 0)
    for n in range(3, 9):
        meta = suite.meta("chooser", "t", n)
        assert meta["status"] == "failed" and meta["attempt"] == 1
        assert meta["metrics"]["input_tokens"] is None and meta["metrics"]["notes"]
