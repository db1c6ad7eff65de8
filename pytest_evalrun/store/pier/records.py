"""Harbor's ``TrialConfig`` and ``TrialResult`` dicts of one trial, from its outcome.

Pure functions (the only reads are the standard trial directory's traceback files, for
``exception_info``); :mod:`.trial` writes what they return.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_evalrun import __version__
from pytest_evalrun.experiment.model import Experiment, Task, Variant
from pytest_evalrun.outcome import ERROR, FAILED, TIMEOUT, TrialOutcome
from pytest_evalrun.secrets import Redactor
from pytest_evalrun.store.pier.config import agent_config
from pytest_evalrun.store.pier.files import now, read_text
from pytest_evalrun.store.pier.harborvalues import (
    float_or_none,
    fmt_time,
    int_or_none,
    parse_time,
    reward_number,
)

_EXCEPTION_TYPES = {
    "setup_failed": "SetupFailedError",
    "agent_missing": "AgentNotFoundError",
    "verify_missing": "VerifierNotFoundError",
    "verify_crashed": "VerifierCrashedError",  # 0.2.0's errors, and judged failures now
    "verify_timeout": "VerifierTimeoutError",
    "verify_bad_reward": "VerifierOutputParseError",
    "no_model_call": "ApiError",
    "model_unreachable": "NetworkConnectionError",
    "replay_unmatched": "ApiError",
    "model_auth": "AgentAuthenticationError",
    "sandbox": "EnvironmentStartError",
    "worker_crashed": "WorkerCrashedError",
    "internal": "InternalError",
}
#: Judged failures Harbor records with an exception as well (its reward stays 0, as Harbor
#: scores a trial whose verifier timed out or could not be parsed).
_VERIFY_PROBLEMS = frozenset({"verify_timeout", "verify_crashed", "verify_bad_reward",
                              "verify_missing"})
_NAMESPACE = uuid.UUID("6f1d3c0e-8a52-4c7b-9a55-3e0f6b1d2c4a")
_PHASES = ("environment_setup", "agent_setup", "agent_execution", "verifier")


@dataclass(frozen=True)
class TrialContext:
    """What a trial's records need beyond its outcome: where it is, and its spec when known."""

    name: str
    path: Path
    job_dir: Path
    job_id: str
    run_id: str
    experiment: Experiment | None
    variant: Variant | None
    task: Task | None
    src: Path | None
    redactor: Redactor
    version: str
    model_info: dict[str, Any] | None


def task_path(experiment_path: str, task_slug: str) -> str:
    """The (virtual) task path: the experiment file, then the task, so its name is the task."""
    return str(Path(experiment_path) / task_slug)


def exception_type(outcome: TrialOutcome) -> str | None:
    """Harbor's exception type of a trial: a timeout is ``AgentTimeoutError``, as in Harbor; a
    judged failure of verify (timed out, crashed, a bad reward) Harbor's verifier exception."""
    if outcome.status == TIMEOUT:
        return "AgentTimeoutError"
    if outcome.status == FAILED and outcome.failure_kind in _VERIFY_PROBLEMS:
        return _EXCEPTION_TYPES[outcome.failure_kind]
    if outcome.status != ERROR:
        return None
    kind = outcome.error_kind or ""
    if kind in _EXCEPTION_TYPES:
        return _EXCEPTION_TYPES[kind]
    words = [w for w in re.split(r"[^A-Za-z0-9]+", kind) if w]
    return "".join(w[:1].upper() + w[1:] for w in words) + "Error" if words else "TrialError"


def trial_config(ctx: TrialContext, outcome: TrialOutcome) -> dict[str, Any]:
    """Harbor's ``TrialConfig``."""
    experiment_path = str(ctx.experiment.path) if ctx.experiment else outcome.experiment
    task_slug = outcome.task_slug or (ctx.task.slug if ctx.task else None) or outcome.task
    harbor = getattr(ctx.task, "harbor", None)  # a Harbor task: its own directory, as Harbor
    path = str(harbor.directory) if harbor is not None else task_path(experiment_path, task_slug)
    config: dict[str, Any] = {
        "task": {"path": path, "source": outcome.experiment},
        "trial_name": ctx.name,
        "trials_dir": str(ctx.job_dir),
        "timeout_multiplier": 1.0,
        "agent": agent_config(ctx.variant, ctx.task, ctx.redactor, outcome.variant),
        "job_id": ctx.job_id,
    }
    if ctx.task is not None:
        config["verifier"] = {"override_timeout_sec": float(ctx.task.verify_timeout)}
    if ctx.variant is None and outcome.model:
        config["agent"]["model_name"] = outcome.model
    return config


def trial_result(
    ctx: TrialContext,
    outcome: TrialOutcome,
    config: dict[str, Any],
    verify_json: Mapping[str, Any],
) -> dict[str, Any]:
    """Harbor's ``TrialResult``."""
    started = parse_time(outcome.started_at)
    finished = parse_time(outcome.finished_at)
    if finished is None and started is not None and outcome.duration:
        finished = datetime.fromtimestamp(started.timestamp() + outcome.duration, timezone.utc)
    identity = json.dumps([ctx.job_id, ctx.name, outcome.started_at, outcome.finished_at])
    result: dict[str, Any] = {
        "id": str(uuid.uuid5(_NAMESPACE, identity)),
        "task_name": outcome.task,
        "trial_name": ctx.name,
        "trial_uri": ctx.path.resolve().as_uri(),
        "task_id": {"path": config["task"]["path"]},
        "source": outcome.experiment,
        "task_checksum": _task_checksum(outcome, ctx.task),
        "config": config,
        "agent_info": {
            "name": outcome.variant,
            "version": ctx.version,
            "model_info": ctx.model_info,
        },
        "agent_result": _agent_result(ctx, outcome),
        "verifier_result": verifier_result(outcome),
        "exception_info": _exception_info(ctx, outcome, finished, verify_json),
        "started_at": fmt_time(started),
        "finished_at": fmt_time(finished),
    }
    result.update(_timings(outcome, started, finished))
    return result


def _agent_result(ctx: TrialContext, outcome: TrialOutcome) -> dict[str, Any]:
    m = outcome.metrics
    metadata: dict[str, Any] = {
        "evalrun_version": __version__,
        "run_id": outcome.run_id or ctx.run_id,
        "experiment": outcome.experiment,
        "variant": outcome.variant,
        "task": outcome.task,
        "trial": outcome.trial,
        "status": outcome.status,
        "passed": outcome.passed,
        "reward": outcome.reward,
        "pass_threshold": outcome.pass_threshold,
        "message": outcome.message,
        "error_kind": outcome.error_kind,
        "failure_kind": outcome.failure_kind,
        "seed": outcome.seed,
        "nodeid": outcome.nodeid,
        "duration": outcome.duration,
        "setup_exit": outcome.setup_exit,
        "agent_exit": outcome.agent_exit,
        "verify_exit": outcome.verify_exit,
        "resumed": outcome.resumed,
        "crashed": outcome.crashed,
        "worker": outcome.worker,
        "fingerprint": outcome.fingerprint,
        "metrics_source": m.source,
        "metrics_model": m.model,
        "trial_dir": str(ctx.src) if ctx.src is not None else (outcome.trial_dir or None),
    }
    return {
        "n_input_tokens": int_or_none(m.input_tokens),
        "n_cache_tokens": int_or_none(m.cache_tokens),
        "n_output_tokens": int_or_none(m.output_tokens),
        "cost_usd": float_or_none(m.cost_usd),
        "metadata": ctx.redactor.redact_obj(metadata),
    }


def _exception_info(
    ctx: TrialContext,
    outcome: TrialOutcome,
    finished: datetime | None,
    verify_json: Mapping[str, Any],
) -> dict[str, Any] | None:
    kind = exception_type(outcome)
    if kind is None:
        return None
    message = outcome.message or (
        "the agent ran out of time" if outcome.status == TIMEOUT else "the trial errored"
    )
    parts = [f"{kind}: {message}"]
    if ctx.src is not None:
        for candidate in ("traceback.txt", "error.txt", "exception.txt"):
            text = read_text(ctx.src / candidate, limit=64 * 1024)
            if text:
                parts.append(text.rstrip())
                break
    tail = verify_json.get("stdout_tail") or outcome.verify_tail
    if isinstance(tail, str) and tail.strip() and outcome.status in (ERROR, FAILED):
        parts.append("verify output (tail):\n" + tail.rstrip())
    occurred = finished or parse_time(outcome.started_at) or now()
    return {
        "exception_type": kind,
        "exception_message": ctx.redactor.redact(message),
        "exception_traceback": ctx.redactor.redact("\n\n".join(parts)),
        "occurred_at": fmt_time(occurred),
    }


def trial_log(ctx: TrialContext, outcome: TrialOutcome, result: Mapping[str, Any]) -> str:
    """``trial.log``: a short human summary of the trial."""
    lines = [
        f"trial {ctx.name}",
        f"experiment={outcome.experiment} variant={outcome.variant} task={outcome.task} "
        f"trial={outcome.trial} seed={outcome.seed}",
        f"started_at={result.get('started_at')} finished_at={result.get('finished_at')}",
    ]
    for phase in _PHASES:
        block = result.get(phase)
        if block:
            lines.append(f"{phase}: {block['started_at']} -> {block['finished_at']}")
    lines.append(
        f"exit codes: setup={outcome.setup_exit} agent={outcome.agent_exit} "
        f"verify={outcome.verify_exit}"
    )
    reward = "-" if outcome.reward is None else f"{outcome.reward:g}"
    lines.append(f"status={outcome.status} reward={reward}")
    if outcome.message:
        lines.append(f"message: {outcome.message}")
    if outcome.trial_dir:
        lines.append(f"standard trial dir: {outcome.trial_dir}")
    return ctx.redactor.redact("\n".join(lines) + "\n")


def _task_checksum(outcome: TrialOutcome, task: Task | None) -> str:
    """sha256 of the task's definition (prompt, verify, fixture path, limits)."""
    if task is not None:
        described: Any = {
            "name": task.name,
            "prompt": task.prompt,
            "verify": task.verify.describe(),
            "fixture": str(task.fixture) if task.fixture else None,
            "timeout": task.timeout,
            "setup_timeout": task.setup_timeout,
            "verify_timeout": task.verify_timeout,
            "pass_threshold": task.pass_threshold,
        }
    else:
        described = {"experiment": outcome.experiment, "task": outcome.task,
                     "fingerprint": outcome.fingerprint}
    text = json.dumps(described, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def verifier_result(outcome: TrialOutcome) -> dict[str, Any] | None:
    """``{"rewards": ...}`` holding the main ``reward`` first; None without a main reward.

    Harbor's viewer and its ``Mean`` average each reward key over every trial of an agent, a
    trial without the key counting 0: every trial that has rewards carries ``reward``, so its
    column is the mean reward. A trial whose verify wrote numbers but no main reward (an
    error) has none: its numbers stay in ``verifier/reward.json``.
    """
    main = reward_number(outcome.reward)
    if main is None:
        return None
    rewards: dict[str, float | int] = {"reward": float(main)}
    for key, value in (outcome.rewards or {}).items():
        number = reward_number(value)
        if number is not None and str(key) != "reward":
            rewards[str(key)] = number
    return {"rewards": rewards}


def _timings(
    outcome: TrialOutcome, started: datetime | None, finished: datetime | None
) -> dict[str, dict[str, Any] | None]:
    """The four phase blocks, laid end to end, the last step ending when the trial finished.

    Only durations are recorded, so the steps are placed back to back ending at
    ``finished_at`` (verify, before it the agent, before it the setup); the environment
    setup (workspace copy and snapshot) runs from ``started_at`` to the first step. A step
    that did not run has no block.
    """
    blocks: dict[str, dict[str, Any] | None] = dict.fromkeys(_PHASES)
    if started is None or finished is None:
        return blocks
    end = finished.timestamp()
    phases = (
        ("verifier", outcome.verify_duration),
        ("agent_execution", outcome.agent_duration),
        ("agent_setup", outcome.setup_duration),
    )
    for phase, duration in phases:
        if duration is None or not math.isfinite(duration) or duration < 0:
            continue
        begin = max(end - duration, started.timestamp())
        blocks[phase] = {
            "started_at": fmt_time(datetime.fromtimestamp(begin, timezone.utc)),
            "finished_at": fmt_time(datetime.fromtimestamp(end, timezone.utc)),
        }
        end = begin
    blocks["environment_setup"] = {
        "started_at": fmt_time(started),
        "finished_at": fmt_time(datetime.fromtimestamp(end, timezone.utc)),
    }
    return blocks
