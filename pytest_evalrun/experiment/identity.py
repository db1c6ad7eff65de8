"""A trial's run-independent identity: its seed and its definition's fingerprint."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..secrets import Redactor
from .model import Task, Variant

#: Keys that do not change what a trial does (so changing them reruns nothing on resume).
#: ``sandbox`` and ``network`` are isolation, not definition: tightening the sandbox of a
#: resumed run does not rerun its finished trials (each meta.json records its isolation).
_TASK_KEYS_IGNORED = frozenset({"trials", "min_pass_rate", "description", "tags", "retries"})
_VARIANT_KEYS_IGNORED = frozenset({"description", "retries", "sandbox", "network"})

_fixture_cache: dict[Path, str] = {}


def seed(experiment: str, variant: str, task: str, trial: int) -> int:
    """A 31-bit integer from (experiment, variant, task, trial) names: same everywhere, always."""
    digest = hashlib.sha256(f"{experiment}\0{variant}\0{task}\0{trial}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def fixture_digest(fixture: Path | None) -> str:
    """sha256 over the fixture tree's relative paths, modes and contents (cached per process)."""
    if fixture is None:
        return ""
    cached = _fixture_cache.get(fixture)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(fixture):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(fixture).as_posix()
            h.update(rel.encode() + b"\0")
            try:
                if path.is_symlink():
                    h.update(b"L" + os.readlink(path).encode())
                else:
                    h.update(b"X" if os.access(path, os.X_OK) else b"F")
                    with open(path, "rb") as fh:
                        for block in iter(lambda: fh.read(1 << 20), b""):
                            h.update(block)
            except OSError:
                h.update(b"?")
            h.update(b"\0")
    digest = h.hexdigest()
    _fixture_cache[fixture] = digest
    return digest


def _definition(variant: Variant, task: Task) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "variant": {
            "agent": variant.agent.describe(),
            "setup": variant.setup.describe() if variant.setup else None,
            "model": variant.model,
            "env": dict(sorted(variant.env.items())),
            "raw": {k: v for k, v in variant.raw.items() if k not in _VARIANT_KEYS_IGNORED},
        },
        "task": {
            "prompt": task.prompt,
            "verify": task.verify.describe(),
            "timeout": task.timeout,
            "setup_timeout": task.setup_timeout,
            "verify_timeout": task.verify_timeout,
            "pass_threshold": task.pass_threshold,
            "env": dict(sorted(task.env.items())),
            "raw": {k: v for k, v in task.raw.items() if k not in _TASK_KEYS_IGNORED},
        },
        "fixture": fixture_digest(task.fixture),
    }
    if variant.env_passthrough:  # the inherited variables a step gets (none in 0.1.0 files)
        definition["env_passthrough"] = sorted(variant.env_passthrough)
    return definition


def _definition_text(variant: Variant, task: Task, redactor: Redactor | None) -> str:
    key = (id(variant), id(task), id(redactor))
    cached = _definition_cache.get(key)
    if cached is None or cached[0] is not variant or cached[1] is not task:
        definition: Any = _definition(variant, task)
        if redactor:
            definition = redactor.redact_obj(definition)
        text = json.dumps(definition, sort_keys=True, default=str)
        cached = _definition_cache[key] = (variant, task, text)
    return cached[2]


def fingerprint(variant: Variant, task: Task, trial: int, redactor: Redactor | None = None) -> str:
    """Changes exactly when what the trial would do changes (variant, task, prompt, fixture).

    Secret values are masked first, so rotating a token does not make every trial run again.
    """
    payload = f"[{_definition_text(variant, task, redactor)}, {trial}]"
    return hashlib.sha256(payload.encode()).hexdigest()


def definition_digest(variant: Variant, task: Task, redactor: Redactor | None = None) -> str:
    """The variant x task definition's digest (a trial's fingerprint without its number):
    equal on every machine for the same experiment, wherever its files are."""
    return hashlib.sha256(_definition_text(variant, task, redactor).encode()).hexdigest()


#: (variant, task) -> their definition's JSON; the objects are kept so ids stay valid.
_definition_cache: dict[tuple[int, int, int], tuple[Variant, Task, str]] = {}
