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
- summary.json, summary.md and metrics.txt recomputed from the merged trials;
- the index rows (``results/index.db``);
- one Pier job (``jobs/<run-id>__<experiment>/``) with every trial, its result recomputed.

Two shards holding the same trial, a shard's trial that differs from the one an earlier merge
put in the target, one experiment defined differently in two shards, or a shard whose trials
an earlier merge moved elsewhere, is a conflict: nothing is written, and the error names them.
Merging the same shards again changes nothing: a run that gains no trial and whose run.json
would stay the same is left alone.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..outcome import TrialOutcome
from ..report.summary import ExperimentMeta, build_summary
from . import runs
from .atomic import dumps, read_json, write_bytes_if_changed, write_json_atomic
from .index import record_run, record_trials
from .paths import RunPaths, index_db
from .pier.job import PierJob
from .pier.names import safe_job_name
from .pier.recorder import pier_job_id
from .pier.relocate import Relocation, relocate_job_config, relocate_trials
from .standard import write_summaries
from .trialdir import META
from .walk import iter_trial_rels
from .walk import subdirs as _subdirs

#: run.json's lifecycle, worst first: the merged run takes the worst of its shards.
_WORST_FIRST = (runs.FAILED, runs.INTERRUPTED, runs.RUNNING, runs.COMPLETED)

#: In a shard's run directory once a merge has started moving its trials out: where to.
MOVED_MARKER = "merged-into.json"

TrialKey = tuple[str, str, int]


class MergeError(Exception):
    """The shards cannot be merged (conflicts, or not shards at all); nothing was written."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass
class _Shard:
    root: Path
    run: dict[str, Any]
    run_dir: Path
    summary: dict[str, Any]
    #: (variant slug, task slug, trial number) -> trial directory, relative to run_dir
    trials: dict[TrialKey, str] = field(default_factory=dict)
    #: variant.json and task.json files, relative to run_dir
    definitions: list[str] = field(default_factory=list)


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


def _trial_dirs(run_dir: Path) -> dict[TrialKey, str]:
    """The run's trial directories, relative to it."""
    return {(v, t, n): rel for v, t, n, rel in iter_trial_rels(run_dir)}


def _read_dict(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _scan(shards: Sequence[Path]) -> dict[tuple[str, str], list[_Shard]]:
    problems = []
    groups: dict[tuple[str, str], list[_Shard]] = {}
    for root in shards:
        results = root / "results"
        if not results.is_dir():
            problems.append(f"{root} holds no results/ directory (is it a shard?)")
            continue
        for experiment, run_id, run in runs.iter_runs(results):
            run_dir = results / experiment / run_id
            shard = _Shard(root, run, run_dir, _read_dict(run_dir / "summary.json"))
            shard.trials = _trial_dirs(run_dir)
            shard.definitions = _definition_files(run_dir)
            groups.setdefault((experiment, run_id), []).append(shard)
    if problems:
        raise MergeError(problems)
    if not groups:
        raise MergeError([f"no runs found in {', '.join(str(s) for s in shards)}"])
    return groups


def _conflicts(experiment: str, run_id: str, shards: Sequence[_Shard]) -> list[str]:
    problems: list[str] = []
    where = f"experiment {experiment!r} run {run_id!r}"
    owner: dict[TrialKey, Path] = {}
    for shard in shards:
        for key in sorted(shard.trials):
            if key in owner:
                v, t, n = key
                problems.append(
                    f"{where}: trial {v}/{t}/{n:03d} is in two shards: {owner[key]} and "
                    f"{shard.root}"
                )
            else:
                owner[key] = shard.root
    first = shards[0]
    for shard in shards[1:]:
        if shard.run.get("plan") != first.run.get("plan"):
            problems.append(
                f"{where} is defined differently in {first.root} and {shard.root} "
                "(variants, tasks or gates)"
            )
        for option, flag in (
            ("cli_min_pass_rate", "--eval-min-pass-rate"),
            ("baseline", "--eval-baseline"),
        ):
            if shard.summary.get(option) != first.summary.get(option):
                problems.append(
                    f"{where}: {first.root} and {shard.root} were run with different {flag}"
                )
    definitions: dict[str, tuple[Path, bytes]] = {}
    for shard in shards:
        for rel in shard.definitions:
            if not rel.endswith("/task.json"):
                continue
            content = _definition(shard.run_dir / rel)
            if rel in definitions and definitions[rel][1] != content:
                problems.append(
                    f"{where}: {rel} differs between {definitions[rel][0]} and {shard.root}"
                )
            definitions.setdefault(rel, (shard.root, content))
    return problems


def _against_target(
    experiment: str,
    run_id: str,
    shards: Sequence[_Shard],
    into: Path,
    target: Path,
    merged: Mapping[TrialKey, str],
) -> list[str]:
    """Problems between the shards and what ``into`` holds already (``merged``: the trial
    directories of ``target``, the merged run): a shard an earlier merge moved elsewhere, or
    a trial of a shard that differs from the one already merged."""
    problems: list[str] = []
    where = f"experiment {experiment!r} run {run_id!r}"
    for shard in shards:
        moved_to = _read_dict(shard.run_dir / MOVED_MARKER).get("into")
        if moved_to is not None and moved_to != str(into):
            problems.append(
                f"{where}: the trials of {shard.root} were moved into {moved_to} by an "
                f"earlier evalrun merge: merge into {moved_to} again, or merge a fresh copy "
                "of the shard"
            )
    for shard in shards:
        for key in sorted(merged.keys() & shard.trials.keys()):
            mine = f"{shard.run_dir}/{shard.trials[key]}/{META}"
            if not _same_file(mine, f"{target}/{merged[key]}/{META}"):
                v, t, n = key
                problems.append(
                    f"{where}: trial {v}/{t}/{n:03d} of {shard.root} differs from the one "
                    f"an earlier merge put in {into}"
                )
    return problems


def _same_file(a: str, b: str) -> bool:
    """The same meta.json: one file (hard links) or the same bytes."""
    try:
        if os.path.samefile(a, b):
            return True
        with open(a, "rb") as fa, open(b, "rb") as fb:
            return fa.read() == fb.read()
    except OSError:
        return False


def _definition(path: Path) -> bytes:
    """A task.json's definition digest (location-independent: see
    ``spec.identity.definition_digest``); for a run written before it existed, the file
    without its absolute paths."""
    data = _read_dict(path)
    if "definition" in data:
        return str(data["definition"]).encode()
    for key in ("fixture", "prompt_file"):
        data.pop(key, None)
    return json.dumps(data, sort_keys=True).encode()


#: Trial directories per ``cp`` process (well under the argument-length limit).
_CP_BATCH = 500


def _link_tree(src: Path, dst: Path) -> None:
    """``dst`` becomes a copy of ``src``: files hard-linked (else copied), links re-made."""
    dst.mkdir(parents=True, exist_ok=True)
    with os.scandir(src) as entries:
        for entry in entries:
            target = dst / entry.name
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                if not os.path.lexists(target):
                    os.symlink(os.readlink(entry.path), target)
            elif stat.S_ISDIR(mode):
                _link_tree(Path(entry.path), target)
            elif stat.S_ISREG(mode) and not os.path.lexists(target):
                try:
                    os.link(entry.path, target)
                except OSError:
                    shutil.copy2(entry.path, target, follow_symlinks=False)


@functools.lru_cache(maxsize=1)
def _gnu_cp() -> str | None:
    """GNU cp, which links whole trees in one process (``cp -al``); None elsewhere (macOS)."""
    cp = shutil.which("cp")
    if cp is None:
        return None
    try:
        version = subprocess.run([cp, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return cp if "GNU coreutils" in version.stdout else None


def _link_trees(base: Path, names: Sequence[str], dest: Path) -> None:
    """``dest/<name>`` becomes a copy of ``base/<name>`` for each name (relative paths, kept
    as they are): files hard-linked, links re-made, never followed. GNU cp does it in a few
    processes; elsewhere :func:`_link_tree` does it in Python."""
    cp = _gnu_cp()
    if cp is None:
        for name in names:
            _link_tree(base / name, dest / name)
        return
    dest.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(names), _CP_BATCH):
        batch = list(names[start : start + _CP_BATCH])
        done = subprocess.run(
            [cp, "-a", "-l", "--no-clobber", "--parents", "-t", str(dest), "--", *batch],
            cwd=base,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:  # e.g. across file systems: copy what is left in Python
            for name in batch:
                _link_tree(base / name, dest / name)


def _place(base: Path, names: Sequence[str], dest: Path, keep: bool) -> None:
    """``dest/<name>`` for each ``base/<name>``: moved (one rename; linked instead across
    file systems, leaving the source as it is) or, with ``keep``, linked
    (:func:`_link_trees`)."""
    if keep:
        _link_trees(base, names, dest)
        return
    left = []
    made: set[str] = set()
    src, dst = str(base), str(dest)
    for name in names:
        target = f"{dst}/{name}"
        parent = os.path.dirname(target)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        try:
            os.rename(f"{src}/{name}", target)
        except OSError:
            left.append(name)
    _link_trees(base, left, dest)


def _json_bytes(obj: Any) -> bytes:
    return dumps(obj).encode("utf-8")


def _outcome(trial_dir: str, job_dir: str) -> TrialOutcome | None:
    """The trial's recorded outcome, placed where it is now (its meta.json is not rewritten:
    its paths say where the trial was written). None for a trial that never finished (no
    readable meta.json, or still ``running``)."""
    try:
        with open(f"{trial_dir}/{META}", "rb") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("status") in (None, "running"):
        return None
    try:
        outcome = TrialOutcome.from_dict(data)
    except TypeError:
        return None
    outcome.trial_dir = trial_dir
    if outcome.pier_trial_dir:
        outcome.pier_trial_dir = f"{job_dir}/{os.path.basename(outcome.pier_trial_dir)}"
    return outcome


def _merged_from(shards: Sequence[_Shard], old: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Which directory gave which shards and how many selected trials: an earlier merge's
    entries and this merge's, one per shard (the same shard merged again counts once)."""
    entries: dict[str, dict[str, Any]] = {}

    def add(entry: dict[str, Any]) -> None:
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


def _merged_run_json(
    shards: Sequence[_Shard],
    counts: dict[str, int],
    old: Mapping[str, Any],
    merged_from: list[dict[str, Any]],
) -> dict[str, Any]:
    """run.json of the merged run: this merge's shards and what an earlier merge into the
    same directory recorded (``old``, {} when none; ``merged_from`` from both)."""
    runs_json = [s.run for s in shards] + ([dict(old)] if old else [])
    base = dict(old) if old else dict(shards[0].run)  # an earlier merge's stays the base
    sessions: dict[str, dict[str, Any]] = {}
    for run in runs_json:
        for session in run.get("sessions") or []:
            if isinstance(session, dict):
                sessions.setdefault(str(session.get("id")), session)
    base["sessions"] = sorted(sessions.values(), key=lambda s: str(s.get("started_at") or ""))
    starts = [str(r["started_at"]) for r in runs_json if r.get("started_at")]
    ends = [r.get("finished_at") for r in runs_json]
    base["started_at"] = min(starts) if starts else base.get("started_at")
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


def _counts(outcomes: Iterable[TrialOutcome], total: int) -> dict[str, int]:
    counts = {k: 0 for k in ("passed", "failed", "timeout", "error", "resumed", "crashed")}
    n = 0
    for o in outcomes:
        n += 1
        counts[o.status if o.status in counts else "error"] += 1
        counts["resumed"] += int(o.resumed)
        counts["crashed"] += int(o.crashed)
    total = max(total, n)
    return {"total": total, **counts, "not_run": total - n}


def _meta(
    shards: Sequence[_Shard], outcomes: Sequence[TrialOutcome], run_dir: Path, jobs: Path
) -> tuple[ExperimentMeta, dict[str, Any]]:
    run = shards[0].run
    plan = run.get("plan") or {}
    seen_v = {o.variant for o in outcomes}
    seen_t = {o.task for o in outcomes}
    for shard in shards:
        for exp in shard.summary.get("experiments") or []:
            seen_v.update(str(v.get("name")) for v in exp.get("variants") or [])
            seen_t.update(str(t.get("name")) for t in exp.get("tasks") or [])
    variants = [v for v in plan.get("variants", []) if v in seen_v]
    tasks = [t for t in plan.get("tasks", []) if t in seen_t]
    meta = ExperimentMeta(
        name=str(run.get("experiment") or run_dir.parent.name),
        variants=variants + sorted(seen_v - set(variants)),
        tasks=tasks + sorted(seen_t - set(tasks)),
        min_pass_rate=plan.get("min_pass_rate"),
        task_min_pass_rate=plan.get("task_min_pass_rate") or {},
        trials_per_task=plan.get("trials_per_task") or {},
        run_id=run_dir.name,
        results_dir=str(run_dir),
        jobs_dir=str(jobs),
    )
    first = shards[0].summary
    return meta, {
        "cli_min_pass_rate": first.get("cli_min_pass_rate"),
        "baseline": first.get("baseline"),
    }


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
    for (experiment, run_id), group in sorted(groups.items()):
        problems += _conflicts(experiment, run_id, group)
        target = RunPaths(results, experiment, run_id).run_dir
        already[experiment, run_id] = _trial_dirs(target)
        problems += _against_target(
            experiment, run_id, group, into, target, already[experiment, run_id]
        )
    if problems:
        raise MergeError(problems)
    return [
        _merge_run(experiment, run_id, group, into, keep, set(already[experiment, run_id]))
        for (experiment, run_id), group in sorted(groups.items())
    ]


def _copy_definitions(shards: Sequence[_Shard], run_dir: Path) -> None:
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


def _definition_files(run_dir: Path) -> list[str]:
    """A run's variant.json and task.json files, relative to it."""
    found = []
    for v in _subdirs(run_dir / "variants"):
        found.append(f"variants/{v}/variant.json")
        found += [
            f"variants/{v}/tasks/{t}/task.json"
            for t in _subdirs(run_dir / "variants" / v / "tasks")
        ]
    return [rel for rel in found if os.path.isfile(f"{run_dir}/{rel}")]


def _merge_run(
    experiment: str,
    run_id: str,
    shards: Sequence[_Shard],
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
    _copy_definitions(shards, paths.run_dir)
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
        _place(shard.run_dir, new, paths.run_dir, keep)
        added += len(new)
        if pier_new:
            _place(src_job, pier_new, job_dir, keep)
            pier_added += len(pier_new)
            # their records name where they are now, not the shard
            relocate_trials(job_dir, pier_new, [_relocation(shard, job_dir, paths.run_dir)])
    old = _read_dict(paths.run_json)
    old.pop("updated_at", None)
    merged_from = _merged_from(shards, old)
    if not (added or pier_added) and old:
        # merged before, from the same shards: nothing to do if run.json would stay the same
        counts = old.get("counts") or {}
        if _merged_run_json(shards, counts, old, merged_from) == old:
            n = int(counts.get("total") or 0) - int(counts.get("not_run") or 0)
            return MergedRun(experiment, run_id, len(shards), n, 0, paths.run_dir, False)
    # The merged run is what its directory holds now: this merge's trials and an earlier
    # merge's (moved, the shards no longer hold them).
    run_dir = str(paths.run_dir)
    outcomes = [
        o
        for *_, rel in iter_trial_rels(paths.run_dir)
        if (o := _outcome(f"{run_dir}/{rel}", str(job_dir))) is not None
    ]
    counts = _counts(outcomes, sum(e["total"] for e in merged_from))
    run_json = _merged_run_json(shards, counts, old, merged_from)
    if not (added or pier_added) and old == run_json:
        return MergedRun(experiment, run_id, len(shards), len(outcomes), 0, paths.run_dir, False)
    run_json["updated_at"] = runs.utc_now()
    meta, inputs = _meta(shards, outcomes, paths.run_dir, jobs)
    summary = build_summary(
        outcomes,
        experiments_meta={meta.name: meta},
        cli_min_pass_rate=inputs["cli_min_pass_rate"],
        baseline=inputs["baseline"],
        not_run={meta.name: counts["not_run"]},
    )
    write_summaries(paths, summary)
    db = index_db(results)
    record_trials(db, outcomes)
    record_run(db, experiment, run_json, paths.run_dir, summary)
    if job_dir.is_dir():
        _merge_pier_job(shards, job_name, job_dir, counts["total"], run_json, meta)
        relocate_job_config(job_dir, [_relocation(s, job_dir, paths.run_dir) for s in shards])
    # last: a merge interrupted before this point leaves run.json as it was, so running it
    # again recomputes everything above
    write_json_atomic(paths.run_json, run_json, fsync=True)
    return MergedRun(experiment, run_id, len(shards), len(outcomes), added, paths.run_dir)


def _relocation(shard: _Shard, job_dir: Path, run_dir: Path) -> Relocation:
    """Where the shard's job and run directories were, and where they are merged."""
    old_job = shard.root / "jobs" / job_dir.name
    return Relocation(shard.root, old_job, job_dir, shard.run_dir, run_dir)


def _mark_moved(shard: _Shard, into: Path) -> None:
    """Say in the shard, before its first trial leaves, where its trials go (a merge into
    another directory would find the shard used up)."""
    marker = shard.run_dir / MOVED_MARKER
    if not marker.exists():
        write_json_atomic(marker, {"into": str(into), "at": runs.utc_now()}, fsync=True)


def _merge_pier_job(
    shards: Sequence[_Shard],
    job_name: str,
    job_dir: Path,
    total: int,
    run_json: Mapping[str, Any],
    meta: ExperimentMeta,
) -> None:
    # an earlier merge's config first: merging more shards later keeps it (but the tasks)
    configs = [
        _read_dict(path)
        for path in [job_dir / "config.json"]
        + [s.root / "jobs" / job_dir.name / "config.json" for s in shards]
        if path.exists()
    ]
    if configs:
        config = dict(configs[0])
        datasets = config.get("datasets")
        if isinstance(datasets, list) and datasets and isinstance(datasets[0], dict):
            dataset = dict(datasets[0])
            dataset["task_names"] = list(meta.tasks)
            config["datasets"] = [dataset, *datasets[1:]]
        concurrent = [c.get("n_concurrent_trials") for c in configs]
        if all(isinstance(c, int) for c in concurrent):
            config["n_concurrent_trials"] = max(concurrent)  # type: ignore[type-var]
        write_bytes_if_changed(job_dir / "config.json", _json_bytes(config))
    if not (job_dir / "result.json").exists():
        firsts = [_read_dict(s.root / "jobs" / job_dir.name / "result.json") for s in shards]
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
