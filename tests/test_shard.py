"""--eval-shard K/N: disjoint, deterministic shares that together cover the selection."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from conftest import Suite

from pytest_evalrun.shard import ShardSpec, parse_shard, plan, select, weight_key

TASKS = [
    {
        "name": name,
        "prompt": "WRITE answer.txt ok",
        "fixture": "fixtures/basic",
        "verify": "grep -q ok answer.txt",
        "tags": [tag],
    }
    for name, tag in (("t-one", "smoke"), ("t-two", "slow"), ("t-three", "smoke"))
]


def _keys(
    n_variants: int = 3, n_tasks: int = 7, n_trials: int = 5
) -> list[tuple[str, str, str, int]]:
    return [
        ("exp", f"v{v}", f"t{t}", k)
        for v in range(n_variants)
        for t in range(n_tasks)
        for k in range(1, n_trials + 1)
    ]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 200])
def test_plan_is_a_partition_balanced_by_count(count: int) -> None:
    keys = _keys()
    shard_of = plan(keys, count, {})
    sizes = [shard_of.count(s) for s in range(count)]
    assert sum(sizes) == len(keys) and max(sizes) - min(sizes) <= 1
    assert all(0 <= s < count for s in shard_of)
    shuffled = keys[:]
    random.Random(4).shuffle(shuffled)  # the plan depends on the keys, not their order
    again = dict(zip(shuffled, plan(shuffled, count, {}), strict=True))
    assert again == dict(zip(keys, shard_of, strict=True))


def test_plan_balances_expected_durations() -> None:
    keys = _keys(n_variants=2, n_tasks=6, n_trials=4)
    weights = {
        weight_key("exp", f"v{v}", f"t{t}"): float(1 + 10 * (t == 0) + t)
        for v in range(2)
        for t in range(6)
    }
    count = 3
    shard_of = plan(keys, count, weights)
    sizes = [shard_of.count(s) for s in range(count)]
    assert max(sizes) - min(sizes) <= 1
    loads = [0.0] * count
    for key, s in zip(keys, shard_of, strict=True):
        loads[s] += weights[weight_key(*key[:3])]
    heaviest = max(weights.values())
    assert max(loads) - min(loads) <= heaviest
    by_count = plan(keys, count, {})
    count_loads = [0.0] * count
    for key, s in zip(keys, by_count, strict=True):
        count_loads[s] += weights[weight_key(*key[:3])]
    assert max(loads) - min(loads) < max(count_loads) - min(count_loads)


def test_select_keeps_items_that_are_not_trials() -> None:
    items = ["ordinary-test", "a", "b", "c", "spec-error"]
    key_of = {1: ("e", "v", "t", 1), 2: ("e", "v", "t", 2), 3: ("e", "v", "t", 3)}
    seen: list[str] = []
    for k in (1, 2, 3):
        kept, dropped = select(items, key_of, ShardSpec(k, 3), {})
        assert kept[0] == "ordinary-test" and kept[-1] == "spec-error"
        assert len(kept) == 3 and len(dropped) == 2
        seen += kept[1:-1]
    assert sorted(seen) == ["a", "b", "c"]


@pytest.mark.parametrize("bad", ["0/3", "4/3", "x", "3", "1/0", "-1/2", "a/b", ""])
def test_bad_shard_values_are_rejected(bad: str) -> None:
    with pytest.raises(Exception, match="K/N"):
        parse_shard(bad)


def test_bad_shard_is_a_usage_error(suite: Suite) -> None:
    suite.experiment()
    for bad in ("0/3", "4/3", "x"):
        result = suite.pytester.runpytest_subprocess(
            f"--eval-shard={bad}", "-p", "no:cacheprovider"
        )
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*--eval-shard*K/N*"])


def _collected(suite: Suite, root: Path, *args: str) -> list[str]:
    result = suite.pytester.runpytest_subprocess(
        str(root), "--co", "-q", "-p", "no:cacheprovider", *args
    )
    assert result.ret == 0, result.stdout.str()
    return [line for line in result.outlines if "::trial-" in line]


def test_shards_cover_the_selection_on_separate_checkouts(suite: Suite, tmp_path: Path) -> None:
    suite.experiment(trials=3, tasks=TASKS, variants={"a": {}, "b": {}})
    # three "machines": three copies of the suite, nothing shared
    copies = []
    for k in range(3):
        copy = tmp_path / f"machine-{k}"
        shutil.copytree(suite.root, copy)
        copies.append(copy)
    for selection in ([], ["-m", "smoke"], ["-k", "b and not t-three"]):
        everything = _collected(suite, suite.root, *selection)
        shares = [
            _collected(suite, copies[k], f"--eval-shard={k + 1}/3", *selection) for k in range(3)
        ]
        strip = [[line.split("::", 1)[1] for line in share] for share in shares]
        flat = [nodeid for share in strip for nodeid in share]
        assert sorted(flat) == sorted(line.split("::", 1)[1] for line in everything)
        assert len(flat) == len(set(flat))  # disjoint
        assert max(map(len, strip)) - min(map(len, strip)) <= 1
        # the same share again, on another machine
        again = _collected(suite, copies[0], "--eval-shard=2/3", *selection)
        assert [line.split("::", 1)[1] for line in again] == strip[1]


def test_a_shard_runs_its_share_under_xdist(suite: Suite) -> None:
    suite.experiment(trials=2, tasks=TASKS, variants={"a": {}, "b": {}})
    result = suite.pytester.runpytest_subprocess(
        "-n", "2", "--eval-shard=2/3", "-p", "no:cacheprovider"
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*shard 2/3, balanced by count*"])
    # 12 trials in all: this shard ran 4 of them, and recorded exactly those
    result.assert_outcomes(passed=4)
    metas = list(suite.results().glob("exp/*/variants/*/tasks/*/trials/*/meta.json"))
    assert len(metas) == 4


def test_durations_of_an_earlier_run_balance_the_shares(suite: Suite) -> None:
    sleepy = [dict(TASKS[0], prompt="SLEEP 0.6\nWRITE answer.txt ok"), TASKS[1], TASKS[2]]
    suite.experiment(trials=2, tasks=sleepy, variants={"a": {}})
    first = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert first.ret == 0
    (earlier,) = [p.name for p in suite.run_dirs()]
    shares = []
    for k in (1, 2):
        header = suite.pytester.runpytest_subprocess("--co", f"--eval-shard={k}/2")
        header.stdout.fnmatch_lines(
            [f"*shard {k}/2, balanced by expected durations from exp run {earlier}*"]
        )
        shares.append(_share(suite, f"--eval-shard={k}/2"))
    # the two slow trials (t-one) go to different shards
    assert [sum("t-one" in line for line in share) for share in shares] == [1, 1]


def _share(suite: Suite, *args: str) -> list[str]:
    result = suite.pytester.runpytest_subprocess("--co", "-q", "-p", "no:cacheprovider", *args)
    assert result.ret == 0, result.stdout.str()
    return sorted(line for line in result.outlines if "::trial-" in line)


def test_a_resumed_shard_plans_the_same_share(suite: Suite) -> None:
    slow_one = [dict(TASKS[0], prompt="SLEEP 0.8\nWRITE answer.txt ok"), TASKS[1], TASKS[2]]
    slow_two = [TASKS[0], dict(TASKS[1], prompt="SLEEP 0.8\nWRITE answer.txt ok"), TASKS[2]]
    suite.experiment(trials=2, tasks=slow_one, variants={"a": {}})
    history = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert history.ret == 0
    (earlier,) = [p.name for p in suite.run_dirs()]
    planned = _share(suite, "--eval-shard=1/2")
    first = suite.pytester.runpytest_subprocess(
        "--eval-shard=1/2", "--eval-run-id=r1", "-p", "no:cacheprovider"
    )
    assert first.ret == 0
    # the session was cut short: one of its trials never got recorded
    metas = sorted(suite.results().glob("exp/r1/variants/*/tasks/*/trials/*"))
    assert len(metas) == 3
    shutil.rmtree(metas[0])
    # a newer run of the experiment: a new shard would plan from its durations ...
    suite.experiment(trials=2, tasks=slow_two, variants={"a": {}})
    newer = suite.pytester.runpytest_subprocess("-p", "no:cacheprovider", "--eval-run-id=r2")
    assert newer.ret == 0
    fresh = suite.pytester.runpytest_subprocess("--co", "--eval-shard=1/2")
    fresh.stdout.fnmatch_lines(["*balanced by expected durations from exp run r2"])
    # ... but the run being resumed plans from the run before it, as its first session did
    suite.experiment(trials=2, tasks=slow_one, variants={"a": {}})
    resume = ("--eval-shard=1/2", "--eval-run-id=r1", "--eval-resume")
    assert _share(suite, *resume) == planned
    header = suite.pytester.runpytest_subprocess("--co", *resume)
    header.stdout.fnmatch_lines([f"*balanced by expected durations from exp run {earlier}"])
    again = suite.pytester.runpytest_subprocess(*resume, "-p", "no:cacheprovider")
    assert again.ret == 0, again.stdout.str()
    again.assert_outcomes(passed=3)
    assert sorted(suite.results().glob("exp/r1/variants/*/tasks/*/trials/*")) == metas
