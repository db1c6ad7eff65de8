"""The records ``evalrun merge`` (:mod:`.merge`) writes for a merged run: its run.json (every
shard's sessions, the worst status, hosts, ``merged_from``, the gates' inputs), the gates and
the variants and tasks the summary is recomputed with, variant.json and task.json, and the Pier
job's config.json and result.json."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..finish import Gates
from ..layoutjson import MergedFrom, RunGates, RunJson, RunSession, Summary
from . import runs
from .atomic import dumps, write_bytes_if_changed, write_json_atomic
from .pier.job import PierJob
from .pier.recorder import pier_job_id
from .shardrun import Shard, read_dict, recorded_gates

#: run.json's lifecycle, worst first: the merged run takes the worst of its shards.
_WORST_FIRST = (runs.FAILED, runs.INTERRUPTED, runs.RUNNING, runs.COMPLETED)


def _json_bytes(obj: Any) -> bytes:
    return dumps(obj).encode("utf-8")


def merged_from_entries(shards: Sequence[Shard], old: RunJson) -> list[MergedFrom]:
    """Which directory gave which shards and how many selected trials: an earlier merge's
    entries and this merge's, one per shard (the same shard merged again counts once)."""
    entries: dict[str, MergedFrom] = {}

    def add(entry: MergedFrom) -> None:
        key = ",".join(entry["shards"]) or entry["source"]
        entries[key] = entry

    for entry in old.get("merged_from") or []:
        if isinstance(entry, dict) and isinstance(entry.get("shards"), list):
            add(
                {
                    "source": str(entry.get("source")),
                    "shards": entry["shards"],
                    "total": int(entry.get("total") or 0),
                }
            )
    for s in shards:
        add(
            {
                "source": str(s.root),
                "shards": sorted(
                    {str(x.get("shard")) for x in s.run.get("sessions") or [] if x.get("shard")}
                ),
                "total": int((s.run.get("counts") or {}).get("total") or 0),
            }
        )
    return sorted(entries.values(), key=lambda e: (e["shards"], e["source"]))


def _combined_run_json(
    shards: Sequence[Shard],
    counts: dict[str, int],
    old: RunJson,
    merged_from: list[MergedFrom],
) -> RunJson:
    """run.json of the merged run: this merge's shards and what an earlier merge into the
    same directory recorded (``old``, {} when none; ``merged_from`` from both)."""
    runs_json = [s.run for s in shards] + ([old.copy()] if old else [])
    base = old.copy() if old else shards[0].run.copy()  # an earlier merge's stays the base
    sessions: dict[str, RunSession] = {}
    for run in runs_json:
        for session in run.get("sessions") or []:
            if isinstance(session, dict):
                sessions.setdefault(str(session.get("id")), session)
    base["sessions"] = sorted(sessions.values(), key=lambda s: str(s.get("started_at") or ""))
    starts = [str(r["started_at"]) for r in runs_json if r.get("started_at")]
    ends = [r.get("finished_at") for r in runs_json]
    if starts:  # (every run.json has one: start_run and finish_run write it)
        base["started_at"] = min(starts)
    base["finished_at"] = None if None in ends else max(str(e) for e in ends)
    statuses = {str(r.get("status")) for r in runs_json}
    base["status"] = next((st for st in _WORST_FIRST if st in statuses), runs.COMPLETED)
    base["counts"] = counts
    hosts = {str(s.run.get("host")) for s in shards if s.run.get("host")}
    hosts.update(str(h) for h in old.get("hosts") or [])
    base["hosts"] = sorted(hosts)
    base["merged_from"] = merged_from
    base.pop("updated_at", None)
    return base


def merged_gates(shards: Sequence[Shard], old: RunJson) -> tuple[Gates, list[str]]:
    """The gates' inputs of the merged run, and notes: those the shards recorded (checked to
    agree), else an earlier merge's, else (shards an older pytest-evalrun wrote) the min pass
    rate and the baseline variant their summaries state."""
    recorded = recorded_gates(shards)
    if recorded:
        return Gates.from_json(recorded[0][1]), []
    if isinstance(old.get("gates"), dict):
        return Gates.from_json(old["gates"]), []
    first = shards[0].summary
    notes = []
    regressions = {
        str((e.get("regression") or {}).get("baseline_run"))
        for s in shards
        for e in s.summary.get("experiments") or []
        if e.get("regression")
    }
    if regressions:
        notes.append(
            "regression gate: the shards' run.json do not record the gates' inputs (written "
            "by an older pytest-evalrun): the regression gate against run "
            f"{', '.join(sorted(regressions))} could not be recomputed for the merged run"
        )
    rate = first.get("cli_min_pass_rate")
    base = first.get("baseline")
    return (
        Gates(
            min_pass_rate=float(rate) if isinstance(rate, (int, float)) else None,
            baseline_variant=str(base) if base is not None else None,
        ),
        notes,
    )


def selected(shards: Sequence[Shard], old_summary: Summary) -> tuple[set[str], set[str]]:
    """The variant and task names the shards (and an earlier merge) selected."""
    variants: set[str] = set()
    tasks: set[str] = set()
    for summary in [*(s.summary for s in shards), old_summary]:
        for exp in summary.get("experiments") or []:
            variants.update(str(v.get("name")) for v in exp.get("variants") or [])
            tasks.update(str(t.get("name")) for t in exp.get("tasks") or [])
    return variants, tasks


def copy_definitions(shards: Sequence[Shard], run_dir: Path) -> None:
    """variant.json and task.json, as the shards wrote them (the same in every shard)."""
    made: set[str] = set()
    for shard in shards:
        base = str(shard.run_dir)
        for rel in shard.definitions:
            dst = f"{run_dir}/{rel}"
            if rel in made or os.path.exists(dst):
                continue
            parent = os.path.dirname(dst)
            os.makedirs(parent, exist_ok=True)
            shutil.copyfile(f"{base}/{rel}", dst)
            made.add(rel)


def merged_run_json(
    shards: Sequence[Shard],
    counts: Mapping[str, int],
    old: RunJson,
    merged_from: list[MergedFrom],
    recorded: Sequence[tuple[Shard, RunGates]],
) -> RunJson:
    """:func:`_combined_run_json` with the gates' inputs the shards recorded."""
    data = _combined_run_json(shards, dict(counts), old, merged_from)
    if recorded:
        data["gates"] = recorded[0][1]
    return data


def merge_pier_job(
    shards: Sequence[Shard],
    job_name: str,
    job_dir: Path,
    total: int,
    run_json: RunJson,
    tasks: Sequence[str],
) -> None:
    # an earlier merge's config first: merging more shards later keeps it (but the tasks)
    configs = [
        read_dict(path)
        for path in [job_dir / "config.json"]
        + [s.root / "jobs" / job_dir.name / "config.json" for s in shards]
        if path.exists()
    ]
    if configs:
        config = dict(configs[0])
        datasets = config.get("datasets")
        if isinstance(datasets, list) and datasets and isinstance(datasets[0], dict):
            dataset = dict(datasets[0])
            dataset["task_names"] = list(tasks)
            config["datasets"] = [dataset, *datasets[1:]]
        concurrent = [c.get("n_concurrent_trials") for c in configs]
        if all(isinstance(c, int) for c in concurrent):
            config["n_concurrent_trials"] = max(concurrent)  # type: ignore[type-var]
        write_bytes_if_changed(job_dir / "config.json", _json_bytes(config))
    if not (job_dir / "result.json").exists():
        firsts = [read_dict(s.root / "jobs" / job_dir.name / "result.json") for s in shards]
        started = sorted(str(r["started_at"]) for r in firsts if r.get("started_at"))
        if started:
            first = next(r for r in firsts if r.get("started_at") == started[0])
            write_json_atomic(job_dir / "result.json", first)
    job = PierJob(
        job_dir.parent, job_name, job_id=pier_job_id(job_name), run_id=str(run_json["run_id"])
    )
    finished = str(run_json.get("finished_at") or runs.utc_now())
    # every trial directory of the merged job, read once (they came from the shards)
    job.finalize([], n_total_trials=total, finished_at=finished, include_existing=True)
