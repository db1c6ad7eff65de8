"""Harbor's ``JobStats`` of a Pier job, from TrialResult dicts: pure functions, no files.

:func:`stats_entry` takes what the stats need from one trial result; :func:`apply_entry` adds
or removes it (the incremental view kept while trials finish, with :func:`progress_mean`);
:func:`compute_job_stats` recomputes everything at the end, with ``pass@k``.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_evalrun.store.pier.harborvalues import reward_number


def evals_key(agent_name: str, model_name: str | None, source: str | None) -> str:
    """``JobStats.format_agent_evals_key``: ``agent__model__source`` (``agent__source``)."""
    dataset = source or "adhoc"
    if model_name:
        return f"{agent_name}__{model_name}__{dataset}"
    return f"{agent_name}__{dataset}"


def stats_entry(result: Mapping[str, Any]) -> dict[str, Any]:
    """What the job stats need from one TrialResult (a dict as read from result.json)."""
    agent_info = result.get("agent_info") or {}
    model_info = agent_info.get("model_info") or None
    verifier = result.get("verifier_result") or None
    rewards = verifier.get("rewards") if isinstance(verifier, Mapping) else None
    exception = result.get("exception_info") or None
    agent_result = result.get("agent_result") or {}
    return {
        "trial_name": str(result.get("trial_name", "")),
        "task_name": str(result.get("task_name", "")),
        "evals_key": evals_key(
            str(agent_info.get("name", "")),
            model_info.get("name") if isinstance(model_info, Mapping) else None,
            result.get("source"),
        ),
        "rewards": dict(rewards) if isinstance(rewards, Mapping) else None,
        "exception_type": exception.get("exception_type")
        if isinstance(exception, Mapping)
        else None,
        "tokens": [
            agent_result.get("n_input_tokens"),
            agent_result.get("n_cache_tokens"),
            agent_result.get("n_output_tokens"),
            agent_result.get("cost_usd"),
        ],
    }


def empty_stats() -> dict[str, Any]:
    return {
        "n_completed_trials": 0,
        "n_errored_trials": 0,
        "n_running_trials": 0,
        "n_pending_trials": 0,
        "n_cancelled_trials": 0,
        "n_retries": 0,
        "evals": {},
        "n_input_tokens": None,
        "n_cache_tokens": None,
        "n_output_tokens": None,
        "cost_usd": None,
    }


def _empty_eval() -> dict[str, Any]:
    return {
        "n_trials": 0,
        "n_errors": 0,
        "metrics": [],
        "pass_at_k": {},
        "reward_stats": {},
        "exception_stats": {},
    }


def _bucket(buckets: dict[str, list[str]], value: float | int) -> str:
    """The key of ``value``'s bucket: Harbor keys by number, so 1 and 1.0 share one."""
    for key in buckets:
        with contextlib.suppress(ValueError):
            if float(key) == float(value):
                return key
    return str(value)


def apply_entry(stats: dict[str, Any], entry: Mapping[str, Any], sign: int) -> None:
    """``JobStats.increment`` (sign=+1) / ``remove_trial`` (sign=-1) on a stats dict."""
    name = entry["trial_name"]
    stats["n_completed_trials"] += sign
    group = stats["evals"].setdefault(entry["evals_key"], _empty_eval())
    rewards = entry.get("rewards")
    if rewards is not None:
        group["n_trials"] += sign
        for key, raw in rewards.items():
            value = reward_number(raw)
            if value is None:
                continue
            buckets = group["reward_stats"].setdefault(key, {})
            bucket = _bucket(buckets, value)
            if sign > 0:
                bisect.insort(buckets.setdefault(bucket, []), name)
            elif name in buckets.get(bucket, []):
                buckets[bucket].remove(name)
                if not buckets[bucket]:
                    del buckets[bucket]
                if not buckets:
                    del group["reward_stats"][key]
    exc = entry.get("exception_type")
    if exc is not None:
        names = group["exception_stats"].setdefault(exc, [])
        if sign > 0:
            bisect.insort(names, name)
        elif name in names:
            names.remove(name)
            if not names:
                del group["exception_stats"][exc]
        group["n_errors"] += sign
        stats["n_errored_trials"] += sign
        if exc == "CancelledError":
            stats["n_cancelled_trials"] += sign
    fields = ("n_input_tokens", "n_cache_tokens", "n_output_tokens", "cost_usd")
    for field, value in zip(fields, entry["tokens"], strict=False):
        number = reward_number(value)
        if number is None:
            continue
        if field != "cost_usd":
            number = int(number)
        current = stats[field]
        if sign > 0:
            stats[field] = (current or 0) + number
        elif current is not None:
            stats[field] = max(0, current - number)
    if (
        sign < 0
        and group["n_trials"] <= 0
        and group["n_errors"] <= 0
        and not group["reward_stats"]
        and not group["exception_stats"]
    ):
        del stats["evals"][entry["evals_key"]]


def _mean_metric(rewards: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    """Harbor's default ``Mean`` metric over one eval group's rewards (None counts 0)."""
    keys = sorted({k for r in rewards if r is not None for k in r})
    if not rewards:
        return {"mean": 0}
    if len(keys) <= 1:
        values = [0 if r is None else next(iter(r.values()), 0) for r in rewards]
        return {"mean": sum(values) / len(values)}
    return {
        key: sum(0 if r is None else r.get(key, 0) for r in rewards) / len(rewards) for key in keys
    }


def progress_mean(group: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``Mean`` metric rebuilt from a group's reward/exception stats (incremental view).

    The group's trials are the names listed anywhere in its stats; a trial with no reward
    counts 0, as in Harbor.
    """
    names: set[str] = set()
    sums: dict[str, float] = {}
    for key, buckets in group["reward_stats"].items():
        for value, listed in buckets.items():
            names.update(listed)
            with contextlib.suppress(ValueError):
                sums[key] = sums.get(key, 0.0) + float(value) * len(listed)
    for listed in group["exception_stats"].values():
        names.update(listed)
    if not names:
        return []
    if len(sums) <= 1:
        return [{"mean": next(iter(sums.values()), 0.0) / len(names)}]
    return [{key: total / len(names) for key, total in sorted(sums.items())}]


def _eligible_k_values(max_k: int) -> list[int]:
    values: set[int] = set()
    k = 2
    while k <= max_k:
        values.add(k)
        k *= 2
    k = 5
    while k <= max_k:
        values.add(k)
        k += 5
    return sorted(values)


def _pass_at_k_for_task(n: int, c: int, k: int) -> float:
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(k):
        product *= (n - c - i) / (n - i)
    return 1.0 - product


def pass_at_k_for_trials(entries: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Harbor's ``pass@k`` for one eval group: only when every reward is a single 0 or 1.

    k runs over powers of two and multiples of five up to the fewest trials of any task
    (so never k=1); the per-task unbiased estimator is averaged over tasks.
    """
    successes: dict[str, list[int]] = {}
    for entry in entries:
        rewards = entry.get("rewards")
        if rewards is None:
            successes.setdefault(entry["task_name"], []).append(0)
            continue
        if len(rewards) != 1:
            return {}
        value = next(iter(rewards.values()))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (0, 1):
            return {}
        successes.setdefault(entry["task_name"], []).append(int(value))
    if not successes:
        return {}
    ks = _eligible_k_values(min(len(s) for s in successes.values()))
    return {
        str(k): sum(_pass_at_k_for_task(len(s), sum(s), k) for s in successes.values())
        / len(successes)
        for k in ks
    }


def compute_job_stats(
    trial_results: Iterable[Mapping[str, Any]],
    *,
    n_total_trials: int | None = None,
    n_running_trials: int = 0,
    n_retries: int = 0,
) -> dict[str, Any]:
    """Harbor's final ``JobStats`` (as JSON) from TrialResult dicts, in the given order.

    ``JobStats.from_trial_results`` for the counts, ``evals`` reward/exception stats and token
    totals; the default ``Mean`` metric per eval group; ``compute_pass_at_k_by_evals``.
    """
    return stats_from_entries(
        [stats_entry(r) for r in trial_results],
        n_total_trials=n_total_trials,
        n_running_trials=n_running_trials,
        n_retries=n_retries,
    )


def stats_from_entries(
    entries: Iterable[Mapping[str, Any]],
    *,
    n_total_trials: int | None = None,
    n_running_trials: int = 0,
    n_retries: int = 0,
) -> dict[str, Any]:
    """:func:`compute_job_stats` from the trials' :func:`stats_entry` (in the given order)."""
    stats = empty_stats()
    rewards_by_group: dict[str, list[Mapping[str, Any] | None]] = {}
    entries_by_group: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries:
        apply_entry(stats, entry, +1)
        rewards_by_group.setdefault(entry["evals_key"], []).append(entry["rewards"])
        entries_by_group.setdefault(entry["evals_key"], []).append(entry)
    for key, group in stats["evals"].items():
        group["metrics"] = [_mean_metric(rewards_by_group.get(key, []))]
        group["pass_at_k"] = pass_at_k_for_trials(entries_by_group.get(key, []))
    if n_total_trials is not None:
        stats["n_running_trials"] = n_running_trials
        stats["n_pending_trials"] = max(
            n_total_trials - stats["n_completed_trials"] - n_running_trials, 0
        )
        stats["n_retries"] = n_retries
    return stats
