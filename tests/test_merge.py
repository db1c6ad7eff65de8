"""Shards on separate machines, merged, equal one machine's run (but timings and hosts)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import evalrun
from conftest import GOOD_AND_BAD, VERIFY, Suite

from pytest_evalrun.store.merge import MergeError, merge

RUN = "r-2026"
TASKS = [
    *GOOD_AND_BAD,
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


def _index_paths(root: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(root / "results" / "index.db") as conn:
        return set(conn.execute("SELECT trial_dir, pier_trial_dir FROM trials").fetchall())


def _copies(shards: list[Path], where: Path) -> list[Path]:
    copies = []
    for shard in shards:
        copy = where / shard.name
        shutil.copytree(shard, copy, symlinks=True)
        copies.append(copy)
    return copies


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and not p.name.startswith("index.db")
    }


@pytest.fixture
def machines(suite: Suite, tmp_path: Path) -> tuple[Path, list[Path]]:
    """One machine's run of the suite, and 3 shards of it, each in its own directory."""
    suite.experiment(trials=2, tasks=TASKS, variants={"alpha": {}, "beta": {}})
    single = _machine(suite, tmp_path, "single")
    shards = [
        _machine(
            suite, tmp_path, f"shard-{k}", f"--eval-shard={k}/3", *(["-n", "2"] if k == 2 else [])
        )
        for k in (1, 2, 3)
    ]
    # the shards are disjoint and each ran a third of the 16 trials
    assert sorted(len(_trials(s)) for s in shards) == [5, 5, 6]
    return single, shards


def test_merged_shards_equal_a_single_run(
    machines: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    single, shards = machines
    written = {k: v for shard in shards for k, v in _trials(shard).items()}
    into = tmp_path / "merged"
    result = evalrun("merge", *map(str, shards), "--into", str(into), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_merged = into / "results" / "exp" / RUN
    assert (
        result.stdout.strip()
        == f"exp run {RUN}: 16 trials from 3 shard(s) (16 added) -> {run_merged}"
    )
    one, merged = _trials(single), _trials(into)
    assert sorted(merged) == sorted(one) and len(one) == 16
    for key in one:  # same trials, seeds, fingerprints, statuses, rewards
        assert _strip(merged[key]) == _strip(one[key]), key
        assert merged[key] == written[key]  # moved, not rewritten: it says where it ran
    run_single = single / "results" / "exp" / RUN
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
    # the index says where the trials are now
    assert _index_paths(into) == {
        (str(run_merged / key), str(job2 / Path(written[key]["pier_trial_dir"]).name))
        for key in written
    }
    res1 = json.loads((job1 / "result.json").read_text())
    res2 = json.loads((job2 / "result.json").read_text())
    assert res2["id"] == res1["id"]
    assert _strip(res2) == _strip(res1)
    conf1 = json.loads((job1 / "config.json").read_text())
    conf2 = json.loads((job2 / "config.json").read_text())
    assert _strip(conf2) == _strip(conf1)
    # the shards are used up, and say where their trials went
    assert not any(_trials(s) for s in shards)
    assert not any(
        p.name != "config.json"
        for s in shards
        for p in (s / "jobs" / job2.name).iterdir()
        if (p / "config.json").exists()
    )
    for shard in shards:
        marker = json.loads((shard / "results" / "exp" / RUN / "merged-into.json").read_text())
        assert marker["into"] == str(into)
    # merging again changes nothing
    before = _tree_digest(into)
    again = evalrun("merge", *map(str, shards), "--into", str(into), cwd=into)
    assert again.returncode == 0 and "already merged, nothing changed" in again.stdout
    assert _tree_digest(into) == before
    # merging the used-up shards elsewhere would make a run without their trials: refused
    elsewhere = tmp_path / "elsewhere"
    other = evalrun("merge", *map(str, shards), "--into", str(elsewhere), cwd=tmp_path)
    assert other.returncode == 1 and not elsewhere.exists()
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 3 and all(f"were moved into {into}" in line for line in lines), lines


def test_keep_leaves_the_shards_as_they_were(
    machines: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    _, shards = machines
    moved_into = tmp_path / "moved"
    assert (
        evalrun(
            "merge",
            *map(str, _copies(shards, tmp_path / "copies")),
            "--into",
            str(moved_into),
            cwd=tmp_path,
        ).returncode
        == 0
    )
    before = [_tree_digest(s) for s in shards]
    into = tmp_path / "kept"
    first = evalrun("merge", "--keep", *map(str, shards), "--into", str(into), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "(16 added)" in first.stdout
    assert [_tree_digest(s) for s in shards] == before  # untouched
    # the merged Harbor records name where the trials are now; the shards keep their own
    merged_records = [*(into / "jobs").glob("*/config.json"), *(into / "jobs").glob("*/*/*.json")]
    assert len(merged_records) > 16
    for path in merged_records:
        assert not any(str(s) in path.read_text() for s in shards), path
    assert not list(tmp_path.glob("shard-*/results/exp/*/merged-into.json"))
    kept, moved = _trials(into), _trials(moved_into)
    assert sorted(kept) == sorted(moved) and len(kept) == 16
    for key in kept:
        assert _strip(kept[key]) == _strip(moved[key])
    run = into / "results" / "exp" / RUN
    s1 = json.loads((moved_into / "results" / "exp" / RUN / "summary.json").read_text())
    assert _strip(json.loads((run / "summary.json").read_text())) == _strip(s1)
    assert _index_rows(into) == _index_rows(moved_into)
    # hard links: the same files, not copies
    key = sorted(kept)[0]
    shard_meta = next(
        s / "results" / "exp" / RUN / key / "meta.json"
        for s in shards
        if (s / "results" / "exp" / RUN / key).is_dir()
    )
    assert (run / key / "meta.json").stat().st_ino == shard_meta.stat().st_ino
    # merging again, keeping or moving, changes nothing (the trials are there already)
    digest = _tree_digest(into)
    for extra in (["--keep"], []):
        again = evalrun("merge", *extra, *map(str, shards), "--into", str(into), cwd=tmp_path)
        assert again.returncode == 0 and "already merged, nothing changed" in again.stdout
        assert _tree_digest(into) == digest
    assert [_tree_digest(s) for s in shards] == before


def test_a_trial_unlike_the_one_merged_earlier_is_a_conflict(
    machines: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    _, shards = machines
    into = tmp_path / "merged"
    assert (
        evalrun("merge", "--keep", *map(str, shards), "--into", str(into), cwd=tmp_path).returncode
        == 0
    )
    changed = _copies(shards[:1], tmp_path / "changed")[0]
    meta = sorted(changed.glob("results/exp/*/variants/*/tasks/*/trials/*/meta.json"))[0]
    record = json.loads(meta.read_text())
    record["status"], record["reward"] = "passed", 1.0
    meta.unlink()  # a hard link of the merged file: replace it, do not write through it
    meta.write_text(json.dumps(record))
    digest = _tree_digest(into)
    result = evalrun("merge", str(changed), "--into", str(into), cwd=tmp_path)
    assert result.returncode == 1
    assert f"of {changed} differs from the one an earlier merge put in {into}" in result.stderr
    assert result.stderr.count("evalrun merge: conflict: ") == 1
    assert _tree_digest(into) == digest
    assert meta.parent.is_dir()  # nothing moved


def test_the_same_trial_in_two_shards_is_a_conflict(
    machines: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    _, shards = machines
    twin = tmp_path / "twin"
    shutil.copytree(shards[0], twin, symlinks=True)
    before = _tree_digest(shards[0])
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
    assert _tree_digest(shards[0]) == before  # nothing moved


def test_an_interrupted_merge_finishes_when_run_again(
    machines: tuple[Path, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    single, shards = machines
    into = tmp_path / "merged"
    real_rename, calls = os.rename, []

    def rename(src: Any, dst: Any) -> None:
        calls.append(src)
        if len(calls) == 7:  # the merge dies after moving 6 directories
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        merge(shards, into)
    monkeypatch.setattr(os, "rename", real_rename)
    placed = _trials(into)
    assert 0 < len(placed) < 16
    assert len(placed) + sum(len(_trials(s)) for s in shards) == 16  # nothing lost
    [done] = merge(shards, into)
    assert (done.trials, done.added) == (16, 16 - len(placed))
    assert sorted(_trials(into)) == sorted(_trials(single))
    s1 = json.loads((single / "results" / "exp" / RUN / "summary.json").read_text())
    s2 = json.loads((into / "results" / "exp" / RUN / "summary.json").read_text())
    assert _strip(s2) == _strip(s1)
    assert _index_rows(into) == _index_rows(single)


def test_a_merge_killed_before_its_summaries_is_redone(
    machines: tuple[Path, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    single, shards = machines
    into = tmp_path / "merged"

    def boom(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    # every trial moved, then killed before the index and run.json are written
    monkeypatch.setattr("pytest_evalrun.store.merge.record_trials", boom)
    with pytest.raises(KeyboardInterrupt):
        merge(shards, into)
    monkeypatch.undo()
    assert len(_trials(into)) == 16 and not (into / "results" / "exp" / RUN / "run.json").exists()
    [done] = merge(shards, into)
    assert (done.trials, done.added) == (16, 0)
    assert _index_rows(into) == _index_rows(single)
    r1 = json.loads((single / "results" / "exp" / RUN / "run.json").read_text())
    r2 = json.loads((into / "results" / "exp" / RUN / "run.json").read_text())
    assert r2["counts"] == r1["counts"]


def test_a_shard_merged_later_joins_the_earlier_merge(
    machines: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    single, shards = machines
    into = tmp_path / "merged"
    first = evalrun("merge", *map(str, shards[:2]), "--into", str(into), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run = into / "results" / "exp" / RUN
    partial = json.loads((run / "run.json").read_text())
    assert partial["counts"]["not_run"] == 0 and partial["counts"]["total"] < 16
    later = evalrun("merge", str(shards[2]), "--into", str(into), cwd=tmp_path)
    assert later.returncode == 0, later.stderr
    assert f"16 trials from 1 shard(s) ({16 - partial['counts']['total']} added)" in later.stdout
    r1 = json.loads((single / "results" / "exp" / RUN / "run.json").read_text())
    r2 = json.loads((run / "run.json").read_text())
    assert r2["counts"] == r1["counts"]
    assert sorted(s["shard"] for s in r2["sessions"]) == ["1/3", "2/3", "3/3"]
    assert [e["shards"] for e in r2["merged_from"]] == [["1/3"], ["2/3"], ["3/3"]]
    s1 = json.loads((single / "results" / "exp" / RUN / "summary.json").read_text())
    assert _strip(json.loads((run / "summary.json").read_text())) == _strip(s1)
    assert _index_rows(into) == _index_rows(single)
    res1 = json.loads((single / "jobs" / f"{RUN}__exp" / "result.json").read_text())
    res2 = json.loads((into / "jobs" / f"{RUN}__exp" / "result.json").read_text())
    assert _strip(res2) == _strip(res1)
    # all three again: nothing changes
    digest = _tree_digest(into)
    again = evalrun("merge", *map(str, shards), "--into", str(into), cwd=tmp_path)
    assert again.returncode == 0 and "already merged, nothing changed" in again.stdout
    assert _tree_digest(into) == digest


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
