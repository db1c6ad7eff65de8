"""``--eval-shard K/N``: run the K-th of N disjoint, deterministic shares of the selected trials.

The plan is a pure function of the selected trial items' identities (experiment, variant and
task slugs, trial number: not paths, so every machine's checkout plans alike) and of expected
durations. Shares differ in size by at most one item; when the controller found an earlier run
of an experiment (see :func:`shard_weights`), items are also spread so the shares' expected
durations are close. Items that are not trials (ordinary tests, experiment-file errors) run in
every shard.

The weights are decided once, by the controller, and sent to xdist workers with the other
shared decisions, so every process of a session plans the same share; the worker role applies
the plan after ``-k``, ``-m`` and ``--lf`` have deselected theirs.
"""

from __future__ import annotations

import argparse
import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
#: A trial's identity for the plan: (experiment slug, variant slug, task slug, trial number).
Key = tuple[str, str, str, int]


@dataclass(frozen=True)
class ShardSpec:
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(value: str) -> ShardSpec:
    """``"2/3"`` -> ShardSpec(2, 3); an argparse type (a bad value is a usage error)."""
    k, sep, n = value.partition("/")
    try:
        index, count = int(k), int(n)
    except ValueError:
        index = count = 0
    if not sep or count < 1 or not 1 <= index <= count:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not K/N with 1 <= K <= N (e.g. 2/3: the second of three shards)"
        )
    return ShardSpec(index, count)


def weight_key(experiment: str, variant: str, task: str) -> str:
    return f"{experiment}\x1f{variant}\x1f{task}"


def plan(keys: Sequence[Key], count: int, weights: Mapping[str, float]) -> list[int]:
    """Shard (0-based) of each key: counts within one of each other; with ``weights`` (mean
    duration per experiment/variant/task), the heaviest items first, each to the least-loaded
    shard that still has room."""
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    n = len(keys)
    capacity = [n // count + (1 if s < n % count else 0) for s in range(count)]
    shard_of = [0] * n
    known = [w for w in weights.values() if w > 0]
    if not known:
        for position, i in enumerate(order):
            shard_of[i] = position % count
        return shard_of
    default = sum(known) / len(known)

    def weight(i: int) -> float:
        e, v, t, _ = keys[i]
        w = weights.get(weight_key(e, v, t), 0.0)
        return w if w > 0 else default

    order.sort(key=lambda i: -weight(i))  # stable: ties keep the key order
    heap = [(0.0, s) for s in range(count)]
    for i in order:
        load, s = heapq.heappop(heap)
        while capacity[s] == 0:  # full: dropped, never offered again
            load, s = heapq.heappop(heap)
        shard_of[i] = s
        capacity[s] -= 1
        heapq.heappush(heap, (load + weight(i), s))
    return shard_of


def select(
    items: Iterable[T], key_of: Mapping[int, Key], shard: ShardSpec, weights: Mapping[str, float]
) -> tuple[list[T], list[T]]:
    """(kept, deselected): ``key_of`` maps an item's position to its trial key (non-trial
    items have none and are kept)."""
    items = list(items)
    positions = sorted(key_of)
    shard_of = plan([key_of[p] for p in positions], shard.count, weights)
    mine = {p for p, s in zip(positions, shard_of, strict=True) if s == shard.index - 1}
    kept: list[T] = []
    dropped: list[T] = []
    for p, item in enumerate(items):
        (kept if p not in key_of or p in mine else dropped).append(item)
    return kept, dropped
