"""Harbor's ``JobConfig`` and ``AgentConfig`` dicts of a Pier job: pure functions, no files.

A variant is an agent (its name; its model as ``model_name``; its agent and setup steps in
``kwargs``; its env with secrets masked); an experiment is a dataset, named (Harbor's
``DatasetConfig`` takes a path or a name, never both) by the experiment name, which is also
every trial's ``source``, so the viewer's job source, its task rows and the stats' evals keys
agree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_evalrun import __version__
from pytest_evalrun.experiment.model import Experiment, Task, Variant
from pytest_evalrun.secrets import Redactor, is_secret_name


def split_model(model: str | None) -> dict[str, Any] | None:
    """Harbor's ``ModelInfo``: ``"provider/name"`` splits at the first ``/``; else no provider."""
    if not model:
        return None
    provider, sep, name = model.partition("/")
    if sep and provider and name:
        return {"name": name, "provider": provider}
    return {"name": model, "provider": None}


#: A version string as CLIs print them (``2.1.328``, ``0.171.0-alpha.1``, ``1.0.0+build``).
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_~-]{0,63}")


def agent_version(variant: Variant | None, cli_version: str | None = None) -> str:
    """Harbor's ``agent_info.version``: the variant's ``version:`` key when it has one; else,
    for a preset agent, the version of the agent CLI its records reported (``cli_version``,
    e.g. Claude Code's ``2.1.328``); else the plugin's version."""
    if variant is not None:
        raw = variant.raw.get("version") if isinstance(variant.raw, Mapping) else None
        if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
            return str(raw)
        if (
            variant.agent.kind == "preset"
            and isinstance(cli_version, str)
            and _VERSION.fullmatch(cli_version)
            and cli_version != "unknown"
        ):
            return cli_version
    return __version__


def _redacted_env(env: Mapping[str, str], redactor: Redactor) -> dict[str, str]:
    return {
        str(k): ("***" if is_secret_name(str(k)) else redactor.redact(str(v)))
        for k, v in env.items()
    }


def agent_config(
    variant: Variant | None, task: Task | None, redactor: Redactor, name: str = ""
) -> dict[str, Any]:
    """Harbor's ``AgentConfig`` of a variant (with the task's timeouts when given)."""
    if variant is None:
        return {"name": name}
    agent: dict[str, Any] = {"name": variant.name}
    if variant.model:
        agent["model_name"] = variant.model
    if task is not None:
        agent["override_timeout_sec"] = float(task.timeout)
        agent["override_setup_timeout_sec"] = float(task.setup_timeout)
    kwargs: dict[str, Any] = {"evalrun_agent": variant.agent.describe()}
    if variant.setup is not None:
        kwargs["evalrun_setup"] = variant.setup.describe()
    agent["kwargs"] = redactor.redact_obj(kwargs)
    if variant.env:
        agent["env"] = _redacted_env(variant.env, redactor)
    return agent


def dataset_config(experiment: Experiment) -> dict[str, Any]:
    """Harbor's ``DatasetConfig`` of an experiment: its name and its tasks."""
    return {"name": experiment.name, "task_names": [t.name for t in experiment.tasks]}


def job_config(
    job_name: str,
    jobs_dir: Path,
    experiments: Sequence[Experiment],
    n_concurrent_trials: int | None,
) -> dict[str, Any]:
    """Harbor's ``JobConfig`` of a job running ``experiments``."""
    agents: list[dict[str, Any]] = []
    datasets: list[dict[str, Any]] = []
    n_attempts = 1
    for experiment in experiments:
        redactor = Redactor(experiment.secret_values)
        for variant in experiment.variants:
            agent = agent_config(variant, None, redactor)
            if agent not in agents:
                agents.append(agent)
        datasets.append(dataset_config(experiment))
        n_attempts = max([n_attempts, *(t.trials for t in experiment.tasks)])
    config: dict[str, Any] = {
        "job_name": job_name,
        "jobs_dir": str(jobs_dir),
        "n_attempts": n_attempts,
        "timeout_multiplier": 1.0,
        "agents": agents,
        "datasets": datasets,
        "tasks": [],
    }
    if n_concurrent_trials is not None:
        config["n_concurrent_trials"] = max(1, n_concurrent_trials)
    return config


def _is_valid_dataset(item: Any) -> bool:
    """A dataset Harbor's model accepts: an earlier version wrote both ``path`` and ``name``."""
    return isinstance(item, dict) and not ("path" in item and "name" in item)


def merge_config(new: dict[str, Any], old: Any, *, keep_concurrency: bool) -> dict[str, Any]:
    """``new`` with the agents and datasets of an existing config.json (``old``) kept.

    A dataset an earlier version wrote with both ``path`` and ``name`` is dropped (the new
    one, by name, replaces it). ``keep_concurrency``: keep the old ``n_concurrent_trials``.
    """
    if not isinstance(old, dict):
        return new
    merged = dict(new)
    for field in ("agents", "datasets"):
        items = [
            item
            for item in (old.get(field) or [])
            if field != "datasets" or _is_valid_dataset(item)
        ]
        for item in new[field]:
            if item not in items:
                items.append(item)
        merged[field] = items
    if keep_concurrency and isinstance(old.get("n_concurrent_trials"), int):
        merged["n_concurrent_trials"] = old["n_concurrent_trials"]
    return merged
