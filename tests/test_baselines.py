"""Baselines as people use them: pins (`evalrun baseline`), `--eval-baseline-run baseline`,
`last-passing`, `latest` skipping partial and unfinished runs, a missing baseline as a usage
error before any trial, and unfair baselines (partial, unmerged shard, another retry policy)
refused or named. Real pytest sessions and the real `evalrun` command."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import evalrun, evalrun_json
from conftest import VERIFY, Suite

from pytest_evalrun.store.baseline import partial_reason, retry_policy
from pytest_evalrun.store.index_schema import SCHEMA_VERSION

USAGE = pytest.ExitCode.USAGE_ERROR


def _tasks(broken: frozenset[int] = frozenset(), n: int = 3) -> list[dict[str, Any]]:
    return [
        {
            "name": f"task-{i}",
            "prompt": f"WRITE answer.txt {'nope' if i in broken else 'ok'}",
            "fixture": "fixtures/basic",
            "verify": VERIFY,
        }
        for i in range(n)
    ]


def _exp(suite: Suite, broken: frozenset[int] = frozenset(), trials: int = 2) -> None:
    suite.experiment(trials=trials, tasks=_tasks(broken), variants={"a": {}})


def _run(suite: Suite, *args: str, xdist: bool = False) -> pytest.RunResult:
    extra = ("-n", "2") if xdist else ()
    return suite.pytester.runpytest_subprocess("-p", "no:cacheprovider", *extra, *args)


def _run_json(suite: Suite, run_id: str, results: Path | None = None) -> dict[str, Any]:
    base = results or suite.results()
    data: dict[str, Any] = json.loads((base / "exp" / run_id / "run.json").read_text())
    return data


def _summary_exp(suite: Suite, run_id: str, results: Path | None = None) -> dict[str, Any]:
    base = results or suite.results()
    data = json.loads((base / "exp" / run_id / "summary.json").read_text())
    exp: dict[str, Any] = data["experiments"][0]
    return exp


def _ran(suite: Suite) -> list[str]:
    return [p.name for p in suite.run_dirs()]


def _against(result: pytest.RunResult, run_id: str, how: str) -> None:
    """The session compared with ``run_id``: its header says so, and so does the gate."""
    result.stdout.fnmatch_lines(
        [
            f"evalrun: regression gate of exp against run {run_id} ({how})",
            f"regression gate against run {run_id} *",
        ]
    )


def test_a_pinned_baseline_is_used_survives_reindex_and_gc(suite: Suite) -> None:
    _exp(suite)
    assert _run(suite, "--eval-run-id=good").ret == 0
    _exp(suite, broken=frozenset({0, 1, 2}))
    assert _run(suite, "--eval-run-id=bad").ret == 1  # ungated: failed trials fail it
    root = suite.root

    # pin the good run: the default pin name is "baseline"
    pinned = evalrun("baseline", "set", "good", cwd=root)
    assert pinned.returncode == 0, pinned.stderr
    assert "pinned exp/good as 'baseline'" in pinned.stdout
    listed = evalrun_json("baseline", "list", cwd=root)
    assert [(p["experiment"], p["name"], p["run_id"], p["state"]) for p in listed] == [
        ("exp", "baseline", "good", "completed")
    ]
    assert json.loads((suite.results() / "baselines.json").read_text())["pins"][0]["run_id"] == (
        "good"
    )
    table = evalrun("runs", cwd=root).stdout.splitlines()
    assert table[0].split()[:3] == ["experiment", "run", "pinned"]
    assert [line.split()[:3] for line in table[2:]] == [
        ["exp", "bad", "completed"],
        ["exp", "good", "baseline"],
    ]
    assert {r["run_id"]: r["pinned"] for r in evalrun_json("runs", cwd=root)} == {
        "bad": [],
        "good": ["baseline"],
    }

    # the newest run ("bad") is what latest would take; the pin takes "good": the now
    # fixed agent is no worse than the pinned run, and a broken one is caught against it
    _exp(suite, broken=frozenset({0, 1, 2}))
    result = _run(suite, "--eval-run-id=cand", "--eval-baseline-run=baseline", "-n", "2")
    assert result.ret == 1, result.stdout.str()
    _against(result, "good", "pin 'baseline'")
    assert _summary_exp(suite, "cand")["regression"]["baseline_run"] == "good"

    # the index is rebuilt from the files: the pin survives
    (suite.results() / "index.db").unlink()
    assert evalrun("reindex", cwd=root).returncode == 0
    assert [p["run_id"] for p in evalrun_json("baseline", cwd=root)] == ["good"]
    assert {r["run_id"]: r["pinned"] for r in evalrun_json("runs", cwd=root)}["good"] == [
        "baseline"
    ]

    # gc never deletes the pinned run, and says so
    gc = evalrun("gc", "--keep", "1", cwd=root)
    assert gc.returncode == 0, gc.stderr
    assert "kept exp/good: pinned as baseline 'baseline'" in gc.stdout
    assert _ran(suite) == ["cand", "good"]

    unset = evalrun("baseline", "unset", cwd=root)
    assert unset.returncode == 0 and "unpinned exp/good" in unset.stdout
    assert evalrun_json("baseline", cwd=root) == []
    # with no pin left, the same session is a usage error before any trial
    result = _run(suite, "--eval-run-id=after", "--eval-baseline-run=baseline")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(
        ["ERROR: --eval-baseline-run baseline: experiment 'exp' has no pinned baseline "
         "'baseline' in *results (pin one with: evalrun baseline set RUN -e exp)"]
    )  # fmt: skip
    assert "after" not in _ran(suite)


def test_named_pins_and_a_pinned_run_that_is_gone(suite: Suite) -> None:
    _exp(suite)
    assert _run(suite, "--eval-run-id=r1").ret == 0
    assert _run(suite, "--eval-run-id=r2").ret == 0
    root = suite.root
    assert evalrun("baseline", "set", "r1", "--name", "nightly", cwd=root).returncode == 0
    assert evalrun("baseline", "set", "latest", cwd=root).returncode == 0  # r2
    bad_name = evalrun("baseline", "set", "r1", "--name", "a:b", cwd=root)
    assert bad_name.returncode == 2 and "pin name 'a:b'" in bad_name.stderr
    pins = {p["name"]: p["run_id"] for p in evalrun_json("baseline", cwd=root)}
    assert pins == {"baseline": "r2", "nightly": "r1"}

    result = _run(suite, "--eval-run-id=c1", "--eval-baseline-run=baseline:nightly")
    assert result.ret == 0, result.stdout.str()
    _against(result, "r1", "pin 'nightly'")

    # the pinned run deleted by hand (or an artifact restored without it): a usage error
    shutil.rmtree(suite.results() / "exp" / "r1")
    result = _run(suite, "--eval-run-id=c2", "--eval-baseline-run=baseline:nightly")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(
        ["ERROR: --eval-baseline-run baseline:nightly: the pinned baseline 'nightly' of "
         "experiment 'exp' is run r1, which is not in *results (deleted, or not restored)"]
    )  # fmt: skip
    assert "c2" not in _ran(suite)
    listed = {p["name"]: p for p in evalrun_json("baseline", cwd=root)}
    assert listed["nightly"]["exists"] is False


def test_latest_skips_partial_and_interrupted_runs(suite: Suite) -> None:
    _exp(suite)
    assert _run(suite, "--eval-run-id=full").ret == 0
    assert _run(suite, "--eval-run-id=part", "-k", "task-0").ret == 0
    _exp(suite, broken=frozenset({1}))
    stopped = _run(suite, "--eval-run-id=stopped", "-x")
    assert stopped.ret == 1
    assert _run_json(suite, "stopped")["status"] == "interrupted"
    part = _run_json(suite, "part")
    assert part["status"] == "completed"
    assert part["sessions"][0]["selection"] == {"trials": 2, "of": 6}
    assert partial_reason(part) == "selected 2 of its 6 trials (-k/-m/node ids/--lf)"
    assert partial_reason(_run_json(suite, "full")) == ""

    _exp(suite)
    result = _run(suite, "--eval-run-id=c1", "--eval-baseline-run=latest")
    assert result.ret == 0, result.stdout.str()
    _against(result, "full", "latest")
    # nothing complete before "full": latest~1 is not found, and says what it skipped
    result = _run(suite, "--eval-run-id=c2", "--eval-baseline-run=latest~2")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(
        ["ERROR: --eval-baseline-run latest~2: experiment 'exp' has 2 complete earlier runs "
         "(latest~2 needs 3) in *results (skipped: 1 interrupted, 1 partial)"]
    )  # fmt: skip
    result = _run(suite, "--eval-run-id=c3", "--eval-baseline-run=latest~1")
    assert result.ret == 0
    _against(result, "full", "latest~1")  # c1 is the latest complete run now


def test_last_passing_takes_the_newest_run_whose_gate_passed(suite: Suite) -> None:
    _exp(suite)
    assert _run(suite, "--eval-run-id=passing", "--eval-min-pass-rate=1.0").ret == 0
    _exp(suite, broken=frozenset({0, 1, 2}))
    assert _run(suite, "--eval-run-id=failing", "--eval-min-pass-rate=1.0").ret == 1
    assert _run(suite, "--eval-run-id=ungated").ret == 1
    _exp(suite)
    result = _run(suite, "--eval-run-id=cand", "--eval-baseline-run=last-passing")
    assert result.ret == 0, result.stdout.str()
    _against(result, "passing", "last-passing")


def test_no_index_or_no_results_is_a_usage_error_unless_optional(suite: Suite) -> None:
    _exp(suite)
    assert _run(suite, "--eval-run-id=base").ret == 0
    # a CI cache restored the runs but not index.db: the baseline is still found, and its
    # counts are there for the gate (a broken agent is caught)
    (suite.results() / "index.db").unlink()
    _exp(suite, broken=frozenset({0, 1, 2}))
    result = _run(suite, "--eval-run-id=c1", "--eval-baseline-run=latest")
    assert result.ret == 1, result.stdout.str()
    _against(result, "base", "latest")
    regression = _summary_exp(suite, "c1")["regression"]
    assert regression["regressed"] == ["a"], regression
    _exp(suite)
    # a failed artifact restore: no results/ at all, no gate would be a silent pass
    elsewhere = suite.root / "restored"
    result = _run(suite, f"--eval-results={elsewhere}", "--eval-baseline-run=latest")
    assert result.ret == USAGE
    assert result.stderr.lines[0].startswith(
        "ERROR: --eval-baseline-run latest: experiment 'exp' has no earlier run in "
    )
    assert not (elsewhere / "exp").exists()  # no trial ran
    result = _run(
        suite, f"--eval-results={elsewhere}", "--eval-baseline-run=latest",
        "--eval-baseline-optional",
    )  # fmt: skip
    assert result.ret == 0
    result.stdout.fnmatch_lines(["note: regression gate: *not gated on regression*"])


def test_a_partial_baseline_is_refused_for_a_full_run_and_named_for_a_partial_one(
    suite: Suite,
) -> None:
    _exp(suite)
    assert _run(suite, "--eval-run-id=part", "-k", "task-0").ret == 0
    result = _run(suite, "--eval-run-id=full", "--eval-baseline-run=part")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(
        ["ERROR: --eval-baseline-run part: baseline run part of experiment 'exp': it is "
         "partial: selected 2 of its 6 trials (-k/-m/node ids/--lf), while this session runs "
         "every trial: *"]
    )  # fmt: skip
    assert _ran(suite) == ["part"]
    # the same part selected here: compared, and named in every report
    result = _run(suite, "--eval-run-id=same", "--eval-baseline-run=part", "-k", "task-0")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["note: regression gate: baseline run part is not a complete run*"])
    notes = _summary_exp(suite, "same")["notes"]
    assert any("baseline run part is not a complete run" in n and "(-k)" in n for n in notes)
    # another part: its tasks are not in the baseline, and the reports say so
    result = _run(suite, "--eval-run-id=other", "--eval-baseline-run=part", "-k", "task-1")
    assert result.ret == 0
    notes = _summary_exp(suite, "other")["notes"]
    assert any(
        "baseline run part has no judged trial of 1 of the 1 tasks variant 'a' ran here "
        "(task-1): those are not compared" in n
        for n in notes
    )


def test_shards_not_merged_are_refused_and_merged_ones_are_complete(suite: Suite) -> None:
    _exp(suite)
    for k in (1, 2):
        shard = suite.root / f"shard-{k}"
        result = _run(
            suite, f"--eval-shard={k}/2", "--eval-run-id=sharded",
            f"--eval-results={shard / 'results'}", f"--eval-jobs={shard / 'jobs'}",
        )  # fmt: skip
        assert result.ret == 0, result.stdout.str()
    one = suite.root / "shard-1" / "results"
    assert partial_reason(_run_json(suite, "sharded", one)) == (
        "shard 1/2 of 2, not merged with the others"
    )
    result = _run(suite, f"--eval-results={one}", "--eval-baseline-run=latest")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(["*has no complete earlier run in *results (skipped: 1 partial)"])
    result = _run(suite, f"--eval-results={one}", "--eval-baseline-run=sharded")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(["*it is partial: shard 1/2 of 2, not merged with the others*"])

    merged = evalrun(
        "merge", str(suite.root / "shard-1"), str(suite.root / "shard-2"), "--into", "merged",
        cwd=suite.root,
    )  # fmt: skip
    assert merged.returncode == 0, merged.stderr
    results = suite.root / "merged" / "results"
    assert partial_reason(_run_json(suite, "sharded", results)) == ""
    result = _run(suite, f"--eval-results={results}", "--eval-baseline-run=latest")
    assert result.ret == 0, result.stdout.str()
    _against(result, "sharded", "latest")
    # a shard of the next run compared with the merged baseline: it runs a part, so it is
    # compared on the tasks it holds
    result = _run(
        suite, f"--eval-results={results}", "--eval-shard=1/2", "--eval-baseline-run=sharded",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()


def test_another_retry_policy_is_refused_and_compare_warns(suite: Suite) -> None:
    _exp(suite, broken=frozenset({2}))
    assert _run(suite, "--eval-run-id=plain").ret == 1  # task-2 fails, no gate
    assert _run(suite, "--eval-run-id=retried").ret == 1
    resumed = _run(
        suite, "--eval-run-id=retried", "--eval-resume", "--eval-retry=failed,error"
    )
    assert resumed.ret == 1, resumed.stdout.str()
    data = _run_json(suite, "retried")
    assert [set(s["retry"]) for s in data["sessions"]] == [set(), {"failed", "error"}]
    assert retry_policy(data) == {"failed"}

    result = _run(suite, "--eval-run-id=c1", "--eval-baseline-run=retried")
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(
        ["ERROR: --eval-baseline-run retried: baseline run retried of experiment 'exp' was run "
         "with --eval-retry failed, this run with no --eval-retry of judged trials: *"]
    )  # fmt: skip
    assert "c1" not in _ran(suite)
    # latest is the retried run: refused the same way, never silently another run
    assert _run(suite, "--eval-run-id=c2", "--eval-baseline-run=latest").ret == USAGE
    # retrying errors only changes nothing a gate counts: not another retry policy
    assert _run(suite, "--eval-run-id=plain", "--eval-resume", "--eval-retry=error").ret == 1
    ok = _run(suite, "--eval-run-id=c3", "--eval-baseline-run=plain")
    assert ok.ret == 0, ok.stdout.str()

    compare = evalrun("compare", "plain", "retried", cwd=suite.root)
    assert compare.returncode == 0
    assert (
        "warning: base was run with no --eval-retry of judged trials, cand with --eval-retry "
        "failed: rerunning judged trials raises pass rates, the comparison is not fair"
    ) in compare.stdout
    (data_json,) = evalrun_json("compare", "plain", "retried", cwd=suite.root)
    assert len(data_json["warnings"]) == 1
    (fair,) = evalrun_json("compare", "plain", "c3", cwd=suite.root)
    assert fair["warnings"] == []


def test_an_index_of_schema_2_opens_and_gets_the_pins(suite: Suite) -> None:
    _exp(suite)
    assert _run(suite, "--eval-run-id=r1").ret == 0
    assert evalrun("baseline", "set", "r1", cwd=suite.root).returncode == 0
    db = suite.results() / "index.db"
    with sqlite3.connect(db) as conn:  # as 0.2.0 left it
        conn.execute("DROP TABLE baselines")
        conn.execute("PRAGMA user_version = 2")
    runs = evalrun_json("runs", cwd=suite.root)
    assert [(r["run_id"], r["pinned"]) for r in runs] == [("r1", ["baseline"])]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_partial_reason_and_retry_policy_of_older_run_json() -> None:
    plan = {"variants": ["a", "b"], "trials_per_task": {"t1": 2, "t2": 2}}
    # recorded before sessions kept their selection: the last session's count and the plan
    assert partial_reason({"plan": plan, "counts": {"total": 8}, "sessions": [{}]}) == ""
    assert partial_reason({"plan": plan, "counts": {"total": 2}, "sessions": [{}]}) == (
        "selected 2 of its 8 trials"
    )
    old = {"sessions": [{"pytest_args": ["--eval-resume", "--eval-retry", "timeout,error"]}]}
    assert retry_policy(old) == {"timeout"}
    assert retry_policy({"sessions": [{"pytest_args": ["--eval-retry=failed"]}]}) == {"failed"}
    # a -k session and then a resume that selected every trial: complete
    sel = [{"selection": {"trials": 2, "of": 8}}, {"selection": {"trials": 8, "of": 8}}]
    assert partial_reason({"sessions": sel}) == ""
    # every shard present, but their selections were cut by -k
    shards = [
        {"shard": "1/2", "selection": {"trials": 2, "of": 8}},
        {"shard": "2/2", "selection": {"trials": 3, "of": 8}},
    ]
    assert partial_reason({"sessions": shards}) == (
        "its shards selected 5 of its 8 trials (-k/-m/node ids/--lf)"
    )


def test_an_experiment_that_runs_no_trial_here_needs_no_baseline(suite: Suite) -> None:
    _exp(suite)
    assert _run(suite, "--eval-run-id=base").ret == 0
    # a second experiment file, never run: ignored by pytest, or all its trials deselected
    suite.experiment("other", tasks=_tasks(), variants={"a": {}})
    suite.write("conftest.py", 'collect_ignore = ["other.eval.yaml"]\n')
    result = _run(suite, "--eval-run-id=c1", "--eval-baseline-run=latest")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    _against(result, "base", "latest")
    (suite.root / "conftest.py").unlink()
    result = _run(suite, "--eval-run-id=c2", "--eval-baseline-run=latest", "-k", "not other")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    # ... but once its trials run, it needs one (before any trial, with xdist too)
    result = _run(suite, "--eval-run-id=c3", "--eval-baseline-run=latest", xdist=True)
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(
        ["ERROR: --eval-baseline-run latest: experiment 'other' has no earlier run in *"]
    )
    assert not (suite.results() / "other").exists()
    assert "c3" not in _ran(suite)


def _simulated_alarms(seed: int, base_retry: bool, cand_retry: bool, drop: float) -> float:
    """Share of 1,000 comparisons (10 tasks x 5 trials, true rates 0.4-0.9) the gate calls
    regressed, when a run "retried" reruns each failed trial once (--eval-retry failed)."""
    import random

    from pytest_evalrun.report.regression import compare_variant

    rng = random.Random(seed)
    hits = 0
    for _ in range(1000):
        base: dict[str, tuple[int, int]] = {}
        cand: dict[str, tuple[int, int]] = {}
        for i in range(10):
            p = rng.uniform(0.4, 0.9)
            q = max(0.0, p - drop)
            pb = 1 - (1 - p) ** 2 if base_retry else p
            pc = 1 - (1 - q) ** 2 if cand_retry else q
            base[f"t{i}"] = (sum(rng.random() < pb for _ in range(5)), 5)
            cand[f"t{i}"] = (sum(rng.random() < pc for _ in range(5)), 5)
        hits += compare_variant(base, cand, alpha=0.05).regressed
    return hits / 1000


def test_why_another_retry_policy_is_refused_seeded_simulation() -> None:
    # a retried baseline against a run that was not: no real change, and the gate fails
    # most runs (the issue measured 73.6%)
    assert _simulated_alarms(11, base_retry=True, cand_retry=False, drop=0.0) > 0.6
    # a retried candidate against a baseline that was not: a 30-point drop mostly slips through
    assert _simulated_alarms(12, base_retry=False, cand_retry=True, drop=0.3) < 0.4
    # the same policy on both sides is a fair comparison: false alarms <= alpha, power >= 80%
    assert _simulated_alarms(13, base_retry=True, cand_retry=True, drop=0.0) <= 0.05
    assert _simulated_alarms(14, base_retry=True, cand_retry=True, drop=0.3) >= 0.8


def test_merge_carries_the_pins_the_shards_agree_on(tmp_path: Path) -> None:
    """evalrun merge's pins: a pin whose run is in DIR and that every shard holding it agrees
    on is carried; shards pinning different runs, or a pin whose run is not in DIR, are named
    in a note and not carried; a pin DIR already has is kept."""
    from pytest_evalrun.store.pins import Pin, carry_pins, read_pins, set_pin

    into = tmp_path / "merged" / "results"
    for run in ("r1", "r2"):
        (into / "exp" / run).mkdir(parents=True)
        (into / "exp" / run / "run.json").write_text("{}")
    a, b = tmp_path / "a", tmp_path / "b"
    for shard in (a, b):
        set_pin(shard, Pin("exp", "baseline", "r1", "2026-12-01T00:00:00Z"))
        set_pin(shard, Pin("exp", "gone", "r9", "2026-12-01T00:00:00Z"))
    set_pin(a, Pin("exp", "nightly", "r1", "2026-12-01T00:00:00Z"))
    set_pin(b, Pin("exp", "nightly", "r2", "2026-12-01T00:00:00Z"))
    set_pin(into, Pin("exp", "release", "r2", "2026-12-02T00:00:00Z"))
    pins, notes = carry_pins(into, [a, b])
    assert [(p.name, p.run_id) for p in pins] == [("baseline", "r1"), ("release", "r2")]
    assert read_pins(into) == pins
    assert len(notes) == 2
    assert any("nightly" in n and "r1" in n and "r2" in n for n in notes)
    assert any("gone" in n and "r9" in n for n in notes)
    # again: nothing changes
    assert carry_pins(into, [a, b])[0] == pins
