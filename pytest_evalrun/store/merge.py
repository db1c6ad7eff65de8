"""``evalrun merge``: combine the shards of a run into the run one machine would have produced.

Each shard is a directory holding one ``--eval-shard K/N`` session's ``results/`` and ``jobs/``
(where it ran, or its unpacked CI artifact). For every experiment run found in the shards (the
same run id on every machine: give the shards a common ``--eval-run-id``), the merged run gets:

- every trial directory, moved out of the shard (one rename each; the shard is used up and
  says so in ``merged-into.json``), or with ``keep`` linked (hard links where possible, else
  copies; links the agent made are recreated as links, never followed). Files are not
  rewritten: meta.json's ``trial_dir`` and ``pier_trial_dir`` keep saying where the trial
  was written; readers take a trial's place from where its meta.json is;
- variant.json and task.json; run.json with every shard's sessions;
- summary.json, summary.md and metrics.txt recomputed from the merged trials by
  :func:`pytest_evalrun.finish.finish_run`, as a session finishes a run, with the gates' inputs
  the shards recorded in run.json's ``gates`` (min pass rates, the regression gate's baseline
  run and its counts, alpha, the error and retry policies): the merged run reaches the verdict
  the same run done on one machine reaches;
- the index rows (``results/index.db``);
- one Pier job (``jobs/<run-id>__<experiment>/``) with every trial, its result recomputed.

A run that every shard holding it holds as the same copy (the same trials, byte for byte, and
the same run.json: e.g. the baseline run restored into each shard's ``results/`` so that the
shard's regression gate finds it), and that is not itself an unmerged shard, is not a shard of
anything: it is placed once into DIR as it
is (linked, never moved; the shards keep their copies), so DIR holds what one machine's
``results/`` would.

Two shards holding the same trial (of a run that is not such a copy), a shard's trial that
differs from the one an earlier merge put in the target, one experiment defined differently in
two shards, shards run with different gates, or a shard whose trials an earlier merge moved
elsewhere, is a conflict: nothing is written, and the error names them. Merging the same shards
again changes nothing: a run that gains no trial and whose run.json would stay the same is left
alone.

This module plans the merge and places each run; its parts: the shards' runs as read
(:mod:`.shardrun`), the conflicts (:mod:`.mergecheck`), trees moved or linked
(:mod:`.treeplace`) and the merged run's records (:mod:`.mergerecords`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..finish import Plan, finish_run
from ..layoutjson import RunJson, Summary, Verdict
from ..outcome import TrialOutcome
from . import runs
from .atomic import write_json_atomic
from .index import record_run, record_trials
from .layout import RUN_JSON, finished_outcome, iter_runs, read_run_json, read_summary
from .mergecheck import MOVED_MARKER, against_target, conflicts, copy_against_target, same_copy
from .mergerecords import (
    copy_definitions,
    merge_pier_job,
    merged_from_entries,
    merged_gates,
    merged_run_json,
    selected,
)
from .paths import RunPaths, index_db
from .pier.jobnames import safe_job_name
from .pier.relocate import Relocation, relocate_job_config, relocate_trials
from .shardrun import Shard, TrialKey, definition_files, recorded_gates, trial_dirs
from .standard import write_summaries
from .treeplace import link_trees, place
from .walk import iter_trial_rels


class MergeError(Exception):
    """The shards cannot be merged (conflicts, or not shards at all); nothing was written."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass
class MergedRun:
    experiment: str  # slug
    run_id: str
    shards: int
    trials: int
    #: trial directories newly placed
    added: int
    run_dir: Path
    #: False when the merged run was already as it is (merging again changed nothing)
    changed: bool = True
    #: The merged run's verdict (its experiment's ``verdict`` in summary.json).
    verdict: Verdict = field(default_factory=lambda: Verdict())
    #: The merged run's summary (summary.json's content; {} when unreadable).
    summary: Summary = field(default_factory=lambda: Summary())
    #: True for a run every shard held the same copy of (placed once, as it is).
    copy: bool = False


def _scan(shards: Sequence[Path]) -> dict[tuple[str, str], list[Shard]]:
    problems = []
    groups: dict[tuple[str, str], list[Shard]] = {}
    for root in shards:
        results = root / "results"
        if not results.is_dir():
            problems.append(f"{root} holds no results/ directory (is it a shard?)")
            continue
        for experiment, run_id, run in iter_runs(results):
            run_dir = results / experiment / run_id
            shard = Shard(root, run, run_dir, read_summary(run_dir) or {})
            shard.trials = trial_dirs(run_dir)
            shard.definitions = definition_files(run_dir)
            groups.setdefault((experiment, run_id), []).append(shard)
    if problems:
        raise MergeError(problems)
    if not groups:
        raise MergeError([f"no runs found in {', '.join(str(s) for s in shards)}"])
    return groups


def merge(shards: Sequence[Path], into: Path, *, keep: bool = False) -> list[MergedRun]:
    """Merge the shards' runs into ``into/results`` and ``into/jobs`` (see the module doc).
    Raises :class:`MergeError` (nothing written) on conflicts. The trial directories are
    moved out of the shards (one rename each), or with ``keep`` linked."""
    shards = [Path(s).resolve() for s in shards]
    into = Path(into).resolve()
    for shard in shards:
        if into == shard or shard in into.parents or into in shard.parents:
            raise MergeError([f"--into {into} must lie outside every shard ({shard})"])
    groups = _scan(shards)
    results = into / "results"
    problems = []
    already: dict[tuple[str, str], dict[TrialKey, str]] = {}
    copies = {key for key, group in groups.items() if same_copy(group)}
    for (experiment, run_id), group in sorted(groups.items()):
        target = RunPaths(results, experiment, run_id).run_dir
        already[experiment, run_id] = trial_dirs(target)
        if (experiment, run_id) in copies:
            problems += copy_against_target(experiment, run_id, group[0], into, target)
            continue
        problems += conflicts(experiment, run_id, group)
        problems += against_target(
            experiment, run_id, group, into, target, already[experiment, run_id]
        )
    if problems:
        raise MergeError(problems)
    return [
        _place_copy(experiment, run_id, group, into)
        if (experiment, run_id) in copies
        else _merge_run(experiment, run_id, group, into, keep, set(already[experiment, run_id]))
        for (experiment, run_id), group in sorted(groups.items())
    ]


def _place_copy(experiment: str, run_id: str, shards: Sequence[Shard], into: Path) -> MergedRun:
    """A run every shard holds the same copy of: placed once into DIR as it is (linked, the
    shards keep theirs), and indexed."""
    shard = shards[0]
    results, jobs = into / "results", into / "jobs"
    paths = RunPaths(results, experiment, run_id)
    job_dir = jobs / safe_job_name(f"{run_id}__{experiment}")
    summary = shard.summary
    existed = paths.run_json.exists()
    if not existed:
        names = sorted(os.listdir(shard.run_dir))
        # run.json last: a merge interrupted before it places the copy again
        link_trees(shard.run_dir, [n for n in names if n != "run.json"], paths.run_dir)
        src_job = shard.root / "jobs" / job_dir.name
        if src_job.is_dir():
            link_trees(src_job.parent, [src_job.name], jobs)
        outcomes = _outcomes(paths.run_dir, job_dir)
        db = index_db(results)
        record_trials(db, outcomes)
        record_run(db, experiment, shard.run, paths.run_dir, summary or None)
        shutil.copyfile(shard.run_dir / RUN_JSON, paths.run_json)
    return MergedRun(
        experiment,
        run_id,
        len(shards),
        len(shard.trials),
        0 if existed else len(shard.trials),
        paths.run_dir,
        changed=not existed,
        verdict=_verdict(summary),
        summary=summary,
        copy=True,
    )


def _merge_run(
    experiment: str,
    run_id: str,
    shards: Sequence[Shard],
    into: Path,
    keep: bool,
    merged_keys: set[TrialKey],
) -> MergedRun:
    """Place the shards' new trials (``merged_keys``: those the merged run holds already),
    then recompute the run's files from what it holds."""
    results, jobs = into / "results", into / "jobs"
    paths = RunPaths(results, experiment, run_id)
    job_name = f"{run_id}__{experiment}"
    job_dir = jobs / safe_job_name(job_name)
    copy_definitions(shards, paths.run_dir)
    added = pier_added = 0
    for shard in shards:
        new = sorted(rel for key, rel in shard.trials.items() if key not in merged_keys)
        src_job = shard.root / "jobs" / job_dir.name
        pier_new: list[str] = []
        if src_job.is_dir():
            have = set(os.listdir(job_dir)) if job_dir.is_dir() else set()
            with os.scandir(src_job) as entries:
                pier_new = sorted(
                    e.name
                    for e in entries
                    if e.name not in have
                    and e.is_dir(follow_symlinks=False)
                    and os.path.exists(f"{e.path}/config.json")
                )
        if not keep and (new or pier_new):
            _mark_moved(shard, into)
        place(shard.run_dir, new, paths.run_dir, keep)
        added += len(new)
        if pier_new:
            place(src_job, pier_new, job_dir, keep)
            pier_added += len(pier_new)
            # their records name where they are now, not the shard
            relocate_trials(job_dir, pier_new, [_relocation(shard, job_dir, paths.run_dir)])
    old: RunJson = read_run_json(paths.run_dir) or {}
    old.pop("updated_at", None)
    merged_from = merged_from_entries(shards, old)
    recorded = recorded_gates(shards)
    if not (added or pier_added) and old:
        # merged before, from the same shards: nothing to do if run.json would stay the same
        counts = old.get("counts") or {}
        if merged_run_json(shards, counts, old, merged_from, recorded) == old:
            n = int(counts.get("total") or 0) - int(counts.get("not_run") or 0)
            return _unchanged(experiment, run_id, len(shards), n, paths)
    # The merged run is what its directory holds now: this merge's trials and an earlier
    # merge's (moved, the shards no longer hold them).
    run_dir = str(paths.run_dir)
    outcomes = _outcomes(paths.run_dir, job_dir)
    total = sum(e["total"] for e in merged_from)
    gates, notes = merged_gates(shards, old)
    old_summary = read_summary(paths.run_dir) or {}
    variants, tasks = selected(shards, old_summary)
    first = shards[0].run
    done = finish_run(
        outcomes,
        Plan.from_json((old or first).get("plan")),
        gates,
        experiment=str(first.get("experiment") or experiment),
        variants=variants,
        tasks=tasks,
        total=total,
        run_id=run_id,
        results_dir=run_dir,
        jobs_dir=str(jobs),
    )
    run_json = merged_run_json(shards, done.counts, old, merged_from, recorded)
    if not (added or pier_added) and old == run_json:
        return _unchanged(experiment, run_id, len(shards), len(outcomes), paths)
    run_json["updated_at"] = runs.utc_now()
    summary = done.summary
    summary["experiments"][0]["notes"].extend(notes)
    write_summaries(paths, summary)
    db = index_db(results)
    record_trials(db, outcomes)
    record_run(db, experiment, run_json, paths.run_dir, summary)
    if job_dir.is_dir():
        task_names = [str(t["name"]) for t in summary["experiments"][0]["tasks"]]
        merge_pier_job(shards, job_name, job_dir, done.counts["total"], run_json, task_names)
        relocate_job_config(job_dir, [_relocation(s, job_dir, paths.run_dir) for s in shards])
    # last: a merge interrupted before this point leaves run.json as it was, so running it
    # again recomputes everything above
    write_json_atomic(paths.run_json, run_json, fsync=True)
    return MergedRun(
        experiment,
        run_id,
        len(shards),
        len(outcomes),
        added,
        paths.run_dir,
        verdict=_verdict(summary),
        summary=summary,
    )


def _outcomes(run_dir: Path, job_dir: Path) -> list[TrialOutcome]:
    """The outcomes of the finished trials ``run_dir`` holds, placed where they are now."""
    base = str(run_dir)
    return [
        o
        for *_, rel in iter_trial_rels(run_dir)
        if (o := finished_outcome(f"{base}/{rel}", str(job_dir))) is not None
    ]


def _unchanged(experiment: str, run_id: str, n_shards: int, n: int, paths: RunPaths) -> MergedRun:
    summary = read_summary(paths.run_dir) or {}
    return MergedRun(
        experiment,
        run_id,
        n_shards,
        n,
        0,
        paths.run_dir,
        False,
        verdict=_verdict(summary),
        summary=summary,
    )


def _verdict(summary: Summary) -> Verdict:
    """The verdict of a run's (one experiment's) summary; {} when it has none."""
    experiments = summary.get("experiments")
    if isinstance(experiments, list) and experiments and isinstance(experiments[0], dict):
        verdict = experiments[0].get("verdict")
        if isinstance(verdict, dict):
            return verdict.copy()
    return {}


def _relocation(shard: Shard, job_dir: Path, run_dir: Path) -> Relocation:
    """Where the shard's job and run directories were, and where they are merged."""
    old_job = shard.root / "jobs" / job_dir.name
    return Relocation(shard.root, old_job, job_dir, shard.run_dir, run_dir)


def _mark_moved(shard: Shard, into: Path) -> None:
    """Say in the shard, before its first trial leaves, where its trials go (a merge into
    another directory would find the shard used up)."""
    marker = shard.run_dir / MOVED_MARKER
    if not marker.exists():
        write_json_atomic(marker, {"into": str(into), "at": runs.utc_now()}, fsync=True)


