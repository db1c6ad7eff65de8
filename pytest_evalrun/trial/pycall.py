"""Run a Python-callable step: ``python -m pytest_evalrun.trial.pycall ROLE pkg.mod:func``.

The callable gets one argument, a :class:`Context` built from the ``EVALRUN_*`` environment.
An agent's return value is ignored. A verifier returns ``None`` or ``True`` (pass), ``False``
(fail), a number (the reward) or a mapping of numbers (rewards, ``reward`` the main one); an
``AssertionError`` is a fail with its message; ``SystemExit`` exits with its code. Any other
exception means the step crashed (exit status 70): for a verifier that makes the trial an
``error``. A callable that cannot be imported exits 71: the step is missing (an ``error``).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CRASHED = 70
#: Exit status when the callable cannot be imported or found.
NOT_FOUND = 71


@dataclass(frozen=True)
class Context:
    role: str
    prompt: str
    prompt_file: Path
    workspace: Path
    trial_dir: Path
    artifacts_dir: Path
    verifier_dir: Path | None
    experiment_dir: Path
    run_id: str
    experiment: str
    variant: str
    task: str
    trial: int
    seed: int
    model: str | None
    env: dict[str, str] = field(default_factory=dict)


def context_from_env(role: str, env: dict[str, str]) -> Context:
    prompt_file = Path(env.get("EVALRUN_PROMPT_FILE", ""))
    try:
        prompt = prompt_file.read_text(encoding="utf-8")
    except OSError:
        prompt = ""
    verifier = env.get("EVALRUN_VERIFIER_DIR")
    return Context(
        role=role,
        prompt=prompt,
        prompt_file=prompt_file,
        workspace=Path(env.get("EVALRUN_WORKSPACE", os.getcwd())),
        trial_dir=Path(env.get("EVALRUN_TRIAL_DIR", "")),
        artifacts_dir=Path(env.get("EVALRUN_ARTIFACTS_DIR", "")),
        verifier_dir=Path(verifier) if verifier else None,
        experiment_dir=Path(env.get("EVALRUN_EXPERIMENT_DIR", "")),
        run_id=env.get("EVALRUN_RUN_ID", ""),
        experiment=env.get("EVALRUN_EXPERIMENT", ""),
        variant=env.get("EVALRUN_VARIANT", ""),
        task=env.get("EVALRUN_TASK", ""),
        trial=int(env.get("EVALRUN_TRIAL", "0") or 0),
        seed=int(env.get("EVALRUN_SEED", "0") or 0),
        model=env.get("EVALRUN_MODEL") or None,
        env=env,
    )


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _write_rewards(ctx: Context, result: Any) -> int:
    if result is None or result is True:
        return 0
    if result is False:
        return 1
    if ctx.verifier_dir is None:
        return 0
    ctx.verifier_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(result, (int, float)):
        (ctx.verifier_dir / "reward.txt").write_text(f"{float(result)}\n", encoding="utf-8")
    elif isinstance(result, dict):
        (ctx.verifier_dir / "reward.json").write_text(json.dumps(result), encoding="utf-8")
    else:
        raise TypeError(f"a verifier must return None, a bool, a number or a dict, not {result!r}")
    return 0


def import_path(role: str, base: list[str], env: dict[str, str], cwd: str) -> list[str]:
    """``sys.path`` for the callable (the interpreter runs with ``-I``, so ``base`` holds
    neither the working directory nor ``PYTHONPATH``).

    The experiment's directory comes first, then ``PYTHONPATH`` (the step's declared
    environment, not the agent's).  A verifier gets the workspace *last*: it can import the
    agent's code, but a ``json.py`` or ``pytest.py`` the agent left there never shadows the
    standard library, an installed package or the verifier's own modules.  An agent gets the
    workspace right after the experiment's directory (its own code is its own business)."""
    first = [p for p in (env.get("EVALRUN_PYCALL_PATH"),) if p]
    python_path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if role == "verify":
        path = [*first, *python_path, *base, cwd]
    else:
        path = [*first, cwd, *python_path, *base]
    return list(dict.fromkeys(path))


def main(argv: list[str]) -> int:
    role, target = argv[0], argv[1]
    sys.path[:] = import_path(role, list(sys.path), dict(os.environ), os.getcwd())
    ctx = context_from_env(role, dict(os.environ))
    try:
        func = _load(target)
    except Exception:
        traceback.print_exc()
        return NOT_FOUND
    try:
        result = func(ctx)
        return _write_rewards(ctx, result) if role == "verify" else 0
    except AssertionError as exc:
        print(f"verification failed: {exc}" if role == "verify" else f"AssertionError: {exc}")
        return 1
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException:
        traceback.print_exc()
        return CRASHED


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    raise SystemExit(main(sys.argv[1:]))
