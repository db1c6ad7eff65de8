"""The Pier jobs layout: Harbor 0.25.0's ``jobs/`` format, written beside the standard layout.

Why "Pier": docs/pier-layout.md ("Why Pier") says it, once. Nothing here runs or imports
Harbor.

Layout (see ``docs/pier-layout.md`` for the field-by-field mapping)::

    jobs/<job-name>/
        config.json              JobConfig                        (config.py)
        result.json              JobResult, live then final       (result.py, jobstats.py)
        job.log, .result.lock, .pending.jsonl, .evalrun-job.json  (files.py)
        <trial-name>/            <task slug, 32 chars>__<7 chars> (jobnames.py, claims.py)
            config.json          TrialConfig                      (records.py)
            result.json          TrialResult                      (records.py)
            trial.log, exception.txt, .evalrun.json
            agent/               command-0/, trajectory.json (trajectory.py), agent logs
            verifier/            reward.txt | reward.json, test-stdout.txt, verify.json, ...
            artifacts/           workspace.diff and whatever else the agent left

Modules: :mod:`.job` (:class:`PierJob`, what the recorder calls), :mod:`.trial` (one trial's
directory), :mod:`.records` (TrialConfig/TrialResult dicts), :mod:`.result` (the job's
result.json), :mod:`.config` (JobConfig), :mod:`.claims` and :mod:`.jobnames` (trial names),
:mod:`.jobstats` (JobStats), :mod:`.trajectory` (ATIF, the one writer of trajectories),
:mod:`.links` (hard links, symlinks, copies), :mod:`.files` (paths, lock, log),
:mod:`.harborvalues` (timestamps, numbers),
:mod:`.relocate` (a merged trial's records rewritten to where it is now).
"""

from __future__ import annotations

from pytest_evalrun.store.pier.config import split_model
from pytest_evalrun.store.pier.job import PierJob
from pytest_evalrun.store.pier.links import LinkMode, link_file

__all__ = [
    "HARBOR_VERSION",
    "LinkMode",
    "PierJob",
    "link_file",
    "split_model",
]

#: The Harbor release whose ``jobs/`` format this package writes.
HARBOR_VERSION = "0.25.0"
