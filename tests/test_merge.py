"""Shards on separate machines, merged, equal one machine's run (but timings and hosts)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
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
    # a fact of that run, like its durations: how many processes a step left behind (it
    # differed between the single machine and a shard for one trial in a full-suite run)
    "killed_leftovers",
}


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


class _Here:
    """What :class:`conftest.Suite` needs of pytester (a module-scoped fixture has none)."""

    def __init__(self, path: Path) -> None:
        self.path = path


def _suite(base: Path) -> Suite:
    base.mkdir(parents=True)
    return Suite(_Here(base))  # type: ignore[arg-type]


def _session(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A real pytest session over the experiment files of ``root`` ("a machine"), in an
    environment without the pytest session running this test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "EVALRUN_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(root), f"--rootdir={root}", "-p",
         "no:cacheprovider", *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _machine(
    suite: Suite,
    base: Path,
    name: str,
    *args: str,
    run_id: str = RUN,
    results_from: Path | None = None,
) -> Path:
    """A copy of the suite in its own directory ("a machine"), run with ``args``; with
    ``results_from``, that machine's results/ (and jobs/) restored there first."""
    root = base / name
    shutil.copytree(suite.root, root, ignore=shutil.ignore_patterns("results", "jobs"))
    if results_from is not None:
        for part in ("results", "jobs"):
            if (results_from / part).is_dir():
                shutil.copytree(results_from / part, root / part, symlinks=True)
    # its own agent and shared/, named as a user would (the same text on every machine): the
    # original's would be hidden in the sandbox
    yaml_file = root / "exp.eval.yaml"
    text = yaml_file.read_text().replace(str(suite.root / "agent.py"), "{experiment_dir}/agent.py")
    yaml_file.write_text(text.replace(str(suite.shared), "shared"))
    result = _session(root, f"--eval-run-id={run_id}", *args)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    (root / "session.out").write_text(result.stdout)
    (root / "session.rc").write_text(str(result.returncode))
    (root / "origin").write_text(str(root))  # where it ran (a test may get a copy)
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


#: The gate every machine of ``machines`` runs with: "bad" (0/2) and "broken" (errors only)
#: are below it, so the run's gate fails, on one machine and merged alike.
MIN_PASS_RATE = "--eval-min-pass-rate=0.4"


@pytest.fixture(scope="module")
def pristine_machines(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """One machine's run of the suite, and 3 shards of it, each in its own directory (made
    once for the module; each test gets its own copy from ``machines``)."""
    base = tmp_path_factory.mktemp("machines")
    suite = _suite(base / "suite")
    suite.experiment(trials=2, tasks=TASKS, variants={"alpha": {}, "beta": {}})
    single = _machine(suite, base, "single", MIN_PASS_RATE)
    shards = [
        _machine(
            suite,
            base,
            f"shard-{k}",
            f"--eval-shard={k}/3",
            MIN_PASS_RATE,
            *(["-n", "2"] if k == 2 else []),
        )
        for k in (1, 2, 3)
    ]
    # the shards are disjoint and each ran a third of the 16 trials
    assert sorted(len(_trials(s)) for s in shards) == [5, 5, 6]
    return single, shards


@pytest.fixture
def machines(
    pristine_machines: tuple[Path, list[Path]], tmp_path: Path
) -> tuple[Path, list[Path]]:
    """The module's machines, copied for this test (merging uses the shards up)."""
    single, shards = pristine_machines
    copies = [single, *shards]
    for machine in copies:
        shutil.copytree(machine, tmp_path / machine.name, symlinks=True)
    return tmp_path / single.name, [tmp_path / s.name for s in shards]


def md(run: Path, root: Path) -> str:
    """summary.md with the machine's paths and the timings (mean agent time: 0.1s) out: they
    differ between machines, as they may."""
    text = (run / "summary.md").read_text()
    for where in (str(root), (root / "origin").read_text() if (root / "origin").exists() else ""):
        if where:
            text = text.replace(where, "ROOT")
    return re.sub(r"\b\d+(\.\d+)?s\b", "<time>", text)


def test_merged_shards_equal_a_single_run(
    machines: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    single, shards = machines
    written = {k: v for shard in shards for k, v in _trials(shard).items()}
    into = tmp_path / "merged"
    result = evalrun("merge", *map(str, shards), "--into", str(into), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_merged = into / "results" / "exp" / RUN
    assert result.stdout.strip().splitlines() == [
        f"exp run {RUN}: 16 trials from 3 shard(s) (16 added) -> {run_merged}",
        "  gate: FAILED (2 gated cell(s) below their min pass rate)",
    ]
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
    assert exp["totals"]["errors"] == 4
    # the gate (--eval-min-pass-rate 0.4, judged with its uncertainty: the broken cells, with no
    # judged trial, fail it; bad at 0/2 cannot fail a 0.4 minimum on 2 trials) as on one machine
    assert s2["verdict"]["passed"] is False and len(s2["verdict"]["failures"]) == 2
    assert (single / "session.rc").read_text() == "1"
    for results in (single / "results", into / "results"):
        assert evalrun("show", "--results", str(results), "--gate", cwd=tmp_path).returncode == 1
    assert md(run_merged, into) == md(run_single, single)
    r1 = json.loads((run_single / "run.json").read_text())
    r2 = json.loads((run_merged / "run.json").read_text())
    assert r2["counts"] == r1["counts"] and r2["status"] == r1["status"] == "completed"
    assert r2["plan"] == r1["plan"]
    assert r2["gates"] == r1["gates"] and r1["gates"]["min_pass_rate"] == 0.4
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
    # the same shard given twice is not "the same copy of a run" (a restored baseline): a
    # conflict too
    twice = evalrun("merge", str(shards[0]), str(twin), "--into", str(target), cwd=tmp_path)
    assert twice.returncode == 1 and "is in two shards" in twice.stderr
    assert not target.exists()


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


# --- the regression gate across shards (issue 18, case 2) -----------------------------------

#: 4 tasks x 3 trials x 2 variants; "t4" fails in every run (a failed trial, not a regression).
REG_TASKS = [
    {"name": n, "prompt": f"WRITE answer.txt {'nope' if n == 't4' else 'ok'}",
     "fixture": "fixtures/basic", "verify": VERIFY}
    for n in ("t1", "t2", "t3", "t4")
]  # fmt: skip
#: The candidate's variant "a": an agent update that breaks every task.
BROKEN = "import pathlib; pathlib.Path('answer.txt').write_text('wrong')"
BASELINE = "--eval-baseline-run=base"
VERDICT = "--eval-junit-verdict=verdict.xml"


@pytest.fixture(scope="module")
def regression_machines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A baseline run "base"; then run "cand" against it (--eval-baseline-run base) on one
    machine and as 2 shards, each machine with the baseline run restored into its results/:
    "reg-*" with variant a broken (a regression), "ok-*" with nothing changed."""
    base = tmp_path_factory.mktemp("regression")
    suite = _suite(base / "suite")
    variants: dict[str, Any] = {"a": {}, "b": {}}
    suite.experiment(trials=3, tasks=REG_TASKS, variants=variants)
    out = {"base": _machine(suite, base, "base", run_id="base")}
    restored = out["base"]
    for name, args in (
        ("ok-single", ()),
        ("ok-1", ("--eval-shard=1/2",)),
        ("ok-2", ("--eval-shard=2/2", "-n", "2")),
    ):
        out[name] = _machine(
            suite, base, name, BASELINE, VERDICT, *args, run_id="cand", results_from=restored
        )
    variants["a"] = {"agent": {"command": [sys.executable, "-c", BROKEN]}}
    suite.experiment(trials=3, tasks=REG_TASKS, variants=variants)
    for name, args in (
        ("reg-single", ()),
        ("reg-1", ("--eval-shard=1/2",)),
        ("reg-2", ("--eval-shard=2/2", "-n", "2")),
        ("reg-2-alpha", ("--eval-shard=2/2", "--eval-alpha=0.1")),
    ):
        out[name] = _machine(
            suite, base, name, BASELINE, VERDICT, *args, run_id="cand", results_from=restored
        )
    return out


def _copy_machines(machines: dict[str, Path], names: list[str], where: Path) -> list[Path]:
    return _copies([machines[n] for n in names], where)


def _cand(root: Path) -> Path:
    return root / "results" / "exp" / "cand"


def _summary(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((_cand(root) / "summary.json").read_text())
    return data


def test_a_regression_found_by_each_shard_fails_the_merged_run(
    regression_machines: dict[str, Path], tmp_path: Path
) -> None:
    machines = regression_machines
    single = machines["reg-single"]
    shards = _copy_machines(machines, ["reg-1", "reg-2"], tmp_path)
    # each shard found the regression of variant a and failed (the reproduction)
    for shard in [single, *shards]:
        assert (shard / "session.rc").read_text() == "1", (shard / "session.out").read_text()
        summary = _summary(shard)
        assert summary["verdict"]["regressions"] == ["exp / a"], summary["verdict"]
        assert summary["experiments"][0]["regression"]["baseline_run"] == "base"
    into = tmp_path / "merged"
    verdict = tmp_path / "merged-verdict.xml"
    result = evalrun(
        "merge", *map(str, shards), "--into", str(into), "--gate", "--junit-verdict",
        str(verdict), cwd=tmp_path,
    )  # fmt: skip
    # before: "conflict: ... is in two shards" (the baseline run is in both)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "conflict" not in result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("exp run base: the same run in 2 shards, not a shard of a run")
    assert lines[1].startswith("exp run cand: 24 trials from 2 shard(s) (24 added)")
    assert lines[2] == "  gate: FAILED (regressed: a)"
    # before: "Gate: none set." and show --gate exited 0
    merged = _summary(into)
    assert merged["verdict"]["passed"] is False
    assert merged["verdict"]["regressions"] == ["exp / a"]
    assert _strip(merged) == _strip(_summary(single))
    assert md(_cand(into), into) == md(_cand(single), single)
    for results in (single / "results", into / "results"):
        shown = evalrun("show", "cand", "--results", str(results), "--gate", cwd=tmp_path)
        assert shown.returncode == 1, shown.stdout
    # the verdict file: the same as the one-machine session's, byte for byte; variant a's
    # regression test and the overall gate fail, b's regression test passes
    assert verdict.read_text() == (single / "verdict.xml").read_text()
    cases = {
        c.get("name", ""): bool(c.findall("failure"))
        for c in ET.parse(verdict).getroot().iter("testcase")
    }
    assert len(cases) == 3, cases
    assert [failed for name, failed in sorted(cases.items())] == [True, False, True], cases
    assert sorted(cases)[0].startswith("exp / a: regression test against run base: ")
    assert sorted(cases)[0].endswith(": REGRESSED")
    assert sorted(cases)[2] == "exp run cand: gate FAILED (regressed: a)"
    # run.json records every gate's inputs, the baseline's counts with them
    g1 = json.loads((_cand(single) / "run.json").read_text())["gates"]
    g2 = json.loads((_cand(into) / "run.json").read_text())["gates"]
    assert g1 == g2
    assert g1["baseline_run"]["ref"] == "base" and g1["baseline_run"]["run_id"] == "base"
    assert g1["baseline_run"]["counts"]["a"]["t1"] == [3, 3, 0]
    assert g1["baseline_run"]["counts"]["b"]["t4"] == [0, 3, 0]
    assert (g1["baseline_run"]["rerun_judged"], g1["baseline_run"]["notes"]) == (0, [])
    assert (g1["alpha"], g1["errors"], g1["min_pass_rate"]) == (0.05, "count", None)
    assert g1["retry"] == []
    # the baseline run is placed once, as it was; the shards keep their copies
    assert sorted(_trials_of(into, "base")) == sorted(_trials_of(machines["base"], "base"))
    for shard in shards:
        assert len(_trials_of(shard, "base")) == 24
    compared = evalrun("compare", "base", "cand", "--results", str(into / "results"), cwd=tmp_path)
    assert compared.returncode == 1, compared.stdout + compared.stderr
    # merging again changes nothing
    digest = _tree_digest(into)
    again = evalrun("merge", *map(str, shards), "--into", str(into), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _tree_digest(into) == digest


def _trials_of(root: Path, run_id: str) -> list[str]:
    run = root / "results" / "exp" / run_id
    metas = run.glob("variants/*/tasks/*/trials/*/meta.json")
    return [str(p.parent.relative_to(run)) for p in metas]


def test_the_merged_verdict_needs_no_baseline_run(
    regression_machines: dict[str, Path], tmp_path: Path
) -> None:
    """The baseline's counts are in run.json: shards without the baseline run merge to the
    same verdict."""
    shards = _copy_machines(regression_machines, ["reg-1", "reg-2"], tmp_path)
    for shard in shards:
        shutil.rmtree(shard / "results" / "exp" / "base")
    into = tmp_path / "merged"
    result = evalrun("merge", *map(str, shards), "--into", str(into), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "gate: FAILED (regressed: a)" in result.stdout
    assert not (into / "results" / "exp" / "base").exists()
    assert _strip(_summary(into)) == _strip(_summary(regression_machines["reg-single"]))


def test_no_regression_stays_passing_when_merged(
    regression_machines: dict[str, Path], tmp_path: Path
) -> None:
    single = regression_machines["ok-single"]
    shards = _copy_machines(regression_machines, ["ok-1", "ok-2"], tmp_path)
    # t4 fails in every trial (6 failed trials), but nothing regressed: the gate passes
    for shard in [single, *shards]:
        assert (shard / "session.rc").read_text() == "0", (shard / "session.out").read_text()
    into = tmp_path / "merged"
    verdict = tmp_path / "verdict.xml"
    result = evalrun(
        "merge", *map(str, shards), "--into", str(into), "--gate", "--junit-verdict",
        str(verdict), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "  gate: PASSED (0 gated cells)" in result.stdout.splitlines()
    merged = _summary(into)
    assert merged["verdict"] == {**merged["verdict"], "passed": True, "regressions": []}
    assert merged["experiments"][0]["totals"]["failed"] == 6
    assert _strip(merged) == _strip(_summary(single))
    assert verdict.read_text() == (single / "verdict.xml").read_text()
    shown = evalrun("show", "cand", "--results", str(into / "results"), "--gate", cwd=tmp_path)
    assert shown.returncode == 0, shown.stdout


def test_shards_run_with_different_gates_are_a_conflict(
    regression_machines: dict[str, Path], tmp_path: Path
) -> None:
    shards = _copy_machines(regression_machines, ["reg-1", "reg-2-alpha"], tmp_path)
    before = [_tree_digest(s) for s in shards]
    into = tmp_path / "merged"
    result = evalrun("merge", *map(str, shards), "--into", str(into), cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("evalrun merge: conflict: experiment 'exp' run 'cand': ")
    assert line.endswith("were run with different gates: --eval-alpha (0.05 vs 0.1)")
    assert not into.exists() and [_tree_digest(s) for s in shards] == before


def _edit_run_json(shard: Path, change: Any) -> None:
    path = shard / "results" / "exp" / RUN / "run.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_shards_that_recorded_no_gates_keep_their_summaries_gates(
    machines: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    """Shards an older version wrote (no run.json ``gates``): the min pass rate their
    summaries state still gates the merged run."""
    _, shards = machines
    for shard in shards:
        _edit_run_json(shard, lambda data: data.pop("gates"))
    into = tmp_path / "merged"
    result = evalrun("merge", *map(str, shards), "--into", str(into), "--gate", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "  gate: FAILED (2 gated cell(s) below their min pass rate)" in result.stdout
    assert "gates" not in json.loads((into / "results" / "exp" / RUN / "run.json").read_text())


def test_unreadable_gates_are_a_conflict(
    machines: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    _, shards = machines

    def change(data: dict[str, Any]) -> None:
        data["gates"]["alpha"] = "often"

    _edit_run_json(shards[0], change)
    into = tmp_path / "merged"
    result = evalrun("merge", *map(str, shards), "--into", str(into), cwd=tmp_path)
    assert result.returncode == 1 and not into.exists()
    lines = result.stderr.strip().splitlines()
    assert lines[0] == (
        f"evalrun merge: conflict: experiment 'exp' run '{RUN}': "
        f"{shards[0]}/results/exp/{RUN}/run.json: "
        "gates.alpha must be a number between 0 and 1, not 'often'"
    ), lines
