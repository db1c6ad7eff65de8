"""Shards on separate machines, merged, equal one machine's run (but timings and hosts)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import evalrun
from conftest import VERIFY, Suite

from pytest_evalrun.store.merge import MergeError, merge

RUN = "r-2026"
TASKS = [
    {
        "name": "good",
        "prompt": "WRITE answer.txt ok",
        "fixture": "fixtures/basic",
        "verify": VERIFY,
    },
    {
        "name": "bad",
        "prompt": "WRITE answer.txt nope",
        "fixture": "fixtures/basic",
        "verify": VERIFY,
    },
    {
        "name": "broken",
        "prompt": "EXIT 0",
        "fixture": "fixtures/basic",
        "verify": "no-such-checker-x",
    },
    {
        "name": "tagged",
        "prompt": "WRITE answer.txt ok",
        "fixture": "fixtures/basic",
        "verify": VERIFY,
        "min_pass_rate": 0.5,
    },
]
#: Fields that differ between two runs of the same trials: when and where they ran.
VOLATILE = {
    "started_at",
    "finished_at",
    "updated_at",
    "duration",
    "setup_duration",
    "agent_duration",
    "verify_duration",
    "trial_dir",
    "pier_trial_dir",
    "worker",
    "results_dir",
    "jobs_dir",
    "mean_agent_duration",
    "host",
    "hosts",
    "sessions",
    "pytest_args",
    "merged_from",
    "experiment_file",
    "git",
    "platform",
    "python",
    "id",
    "n_concurrent_trials",
}


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _machine(suite: Suite, base: Path, name: str, *args: str) -> Path:
    """A copy of the suite in its own directory ("a machine"), run with ``args``."""
    root = base / name
    shutil.copytree(suite.root, root, ignore=shutil.ignore_patterns("results", "jobs"))
    # its own agent and shared/, named as a user would (the same text on every machine): the
    # original's would be hidden in the sandbox
    yaml_file = root / "exp.eval.yaml"
    text = yaml_file.read_text().replace(str(suite.root / "agent.py"), "{experiment_dir}/agent.py")
    yaml_file.write_text(text.replace(str(suite.shared), "shared"))
    result = suite.pytester.run(
        "python",
        "-m",
        "pytest",
        str(root),
        f"--rootdir={root}",
        "-p",
        "no:cacheprovider",
        f"--eval-run-id={RUN}",
        *args,
    )
    assert result.ret in (0, 1), result.stdout.str()
    return root


def _trials(root: Path) -> dict[str, dict[str, Any]]:
    run = root / "results" / "exp" / RUN
    return {
        str(p.parent.relative_to(run)): json.loads(p.read_text())
        for p in sorted(run.glob("variants/*/tasks/*/trials/*/meta.json"))
    }


def _index_rows(root: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(root / "results" / "index.db") as conn:
        return sorted(
            conn.execute(
                "SELECT experiment, run_id, variant, task, trial, status, reward, seed, "
                "fingerprint, error_kind FROM trials"
            ).fetchall()
        )


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and not p.name.startswith("index.db")
    }


@pytest.fixture
def sharded(suite: Suite, tmp_path: Path) -> tuple[Path, list[Path], Path]:
    suite.experiment(trials=2, tasks=TASKS, variants={"alpha": {}, "beta": {}})
    single = _machine(suite, tmp_path, "single")
    shards = [
        _machine(
            suite, tmp_path, f"shard-{k}", f"--eval-shard={k}/3", *(["-n", "2"] if k == 2 else [])
        )
        for k in (1, 2, 3)
    ]
    into = tmp_path / "merged"
    result = evalrun("merge", *map(str, shards), "--into", str(into), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"exp run {RUN}: 16 trials from 3 shard(s) (16 added) -> {into / 'results' / 'exp' / RUN}"
    )
    return single, shards, into


def test_merged_shards_equal_a_single_run(sharded: tuple[Path, list[Path], Path]) -> None:
    single, shards, into = sharded
    # the shards are disjoint and each ran a third of the 16 trials
    assert sorted(len(_trials(s)) for s in shards) == [5, 5, 6]
    one, merged = _trials(single), _trials(into)
    assert sorted(merged) == sorted(one) and len(one) == 16
    for key in one:  # same trials, seeds, fingerprints, statuses, rewards
        assert _strip(merged[key]) == _strip(one[key]), key
        assert merged[key]["trial_dir"] == str(into / "results" / "exp" / RUN / key)
    run_single = single / "results" / "exp" / RUN
    run_merged = into / "results" / "exp" / RUN
    s1 = json.loads((run_single / "summary.json").read_text())
    s2 = json.loads((run_merged / "summary.json").read_text())
    assert _strip(s2) == _strip(s1)
    exp = s2["experiments"][0]
    rates = {(c["variant"], c["task"]): (c["passed"], c["n"]) for c in exp["cells"]}
    assert rates[("alpha", "good")] == (2, 2) and rates[("beta", "bad")] == (0, 2)
    assert exp["totals"]["errors"] == 4 and s2["verdict"]["passed"] is True
    def md(run: Path, root: Path) -> str:  # timings (mean agent time: 0.1s) differ, as they may
        text = (run / "summary.md").read_text().replace(str(root), "ROOT")
        return re.sub(r"\b\d+(\.\d+)?s\b", "<time>", text)

    assert md(run_merged, into) == md(run_single, single)
    r1 = json.loads((run_single / "run.json").read_text())
    r2 = json.loads((run_merged / "run.json").read_text())
    assert r2["counts"] == r1["counts"] and r2["status"] == r1["status"] == "completed"
    assert r2["plan"] == r1["plan"]
    assert sorted(s["shard"] for s in r2["sessions"]) == ["1/3", "2/3", "3/3"]
    assert _index_rows(into) == _index_rows(single)
    # one Pier job with every trial, the same names and the same job id as one machine's
    job1, job2 = single / "jobs" / f"{RUN}__exp", into / "jobs" / f"{RUN}__exp"
    names1 = sorted(p.name for p in job1.iterdir() if (p / "result.json").exists())
    names2 = sorted(p.name for p in job2.iterdir() if (p / "result.json").exists())
    assert names2 == names1 and len(names1) == 16
    res1 = json.loads((job1 / "result.json").read_text())
    res2 = json.loads((job2 / "result.json").read_text())
    assert res2["id"] == res1["id"]
    assert _strip(res2) == _strip(res1)
    conf1 = json.loads((job1 / "config.json").read_text())
    conf2 = json.loads((job2 / "config.json").read_text())
    assert _strip(conf2) == _strip(conf1)


def test_merging_twice_changes_nothing(sharded: tuple[Path, list[Path], Path]) -> None:
    _, shards, into = sharded
    before = _tree_digest(into)
    again = evalrun("merge", *map(str, shards), "--into", str(into), cwd=into)
    assert again.returncode == 0 and "already merged, nothing changed" in again.stdout
    assert _tree_digest(into) == before


def test_the_same_trial_in_two_shards_is_a_conflict(
    sharded: tuple[Path, list[Path], Path], tmp_path: Path
) -> None:
    _, shards, _ = sharded
    twin = tmp_path / "twin"
    shutil.copytree(shards[0], twin, symlinks=True)
    target = tmp_path / "nowhere"
    result = evalrun(
        "merge", str(shards[0]), str(twin), str(shards[1]), "--into", str(target), cwd=tmp_path
    )
    assert result.returncode == 1
    conflicts = result.stderr.strip().splitlines()
    assert conflicts and all(line.startswith("evalrun merge: conflict: ") for line in conflicts)
    assert all("is in two shards" in line for line in conflicts)
    assert str(shards[0]) in conflicts[0] and str(twin) in conflicts[0]
    assert not target.exists()  # nothing written


def test_different_definitions_are_a_conflict(suite: Suite, tmp_path: Path) -> None:
    suite.experiment(trials=2, tasks=TASKS[:2], variants={"alpha": {}})
    first = _machine(suite, tmp_path, "m1", "--eval-shard=1/2")
    changed = [dict(TASKS[0], prompt="WRITE answer.txt ok\nSAY changed"), TASKS[1]]
    suite.experiment(trials=2, tasks=changed, variants={"alpha": {}})
    second = _machine(suite, tmp_path, "m2", "--eval-shard=2/2")
    with pytest.raises(MergeError, match=r"task\.json differs between .*m1 and .*m2"):
        merge([first, second], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_not_a_shard(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(MergeError, match="holds no results/"):
        merge([tmp_path / "empty"], tmp_path / "out")


def test_move_gives_the_same_run_and_uses_the_shards_up(
    sharded: tuple[Path, list[Path], Path], tmp_path: Path
) -> None:
    _, shards, linked = sharded
    copies = []
    for shard in shards:
        copy = tmp_path / "moved-from" / shard.name
        shutil.copytree(shard, copy, symlinks=True)
        copies.append(copy)
    into = tmp_path / "moved"
    first = evalrun("merge", "--move", *map(str, copies), "--into", str(into), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "(16 added)" in first.stdout
    moved, expected = _trials(into), _trials(linked)
    assert sorted(moved) == sorted(expected)
    for key in expected:
        assert _strip(moved[key]) == _strip(expected[key])
        assert moved[key]["trial_dir"] == str(into / "results" / "exp" / RUN / key)
    assert not any(_trials(copy) for copy in copies)  # used up
    s1 = json.loads((linked / "results" / "exp" / RUN / "summary.json").read_text())
    s2 = json.loads((into / "results" / "exp" / RUN / "summary.json").read_text())
    assert _strip(s2) == _strip(s1)
    before = _tree_digest(into)
    again = evalrun("merge", "--move", *map(str, copies), "--into", str(into), cwd=tmp_path)
    assert again.returncode == 0 and "already merged, nothing changed" in again.stdout
    assert _tree_digest(into) == before
