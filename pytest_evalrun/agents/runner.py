"""The ``preset`` agent kind: run a preset's CLI for one trial and write its evidence.

``agent: {preset: NAME, executable: PROGRAM, args: [...]}``. The CLI is started with the
same process function the ``command`` kind uses (:func:`~pytest_evalrun.trial.process.run_step`:
timeout, output capture, process-tree kill, and whatever isolation that function applies), in
the workspace, with the trial's own config home ``<trial>/agent-home/``. Afterwards the preset
reads the CLI's records and :mod:`.evidence` writes the files into the artifacts dir. A preset
that cannot read its records never fails the trial: the problem is written to
``artifacts/preset-error.txt`` and the trial is judged by its verify step as usual.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..spec.model import Step
from ..trial.phases import safe_reads
from ..trial.process import ProcessResult, run_step
from ..trial.sandbox import Sandbox
from ..trial.steps import StepContext
from .evidence import write_evidence
from .otlp import OtlpReceiver
from .preset import Preset, PresetTrial

#: The trial's config home, inside the trial directory (kept after the trial).
HOME_DIR = "agent-home"
#: Longest a follow-up command (e.g. an export of the session) may take, seconds.
FOLLOWUP_TIMEOUT = 120.0


def resolve_executable(name: str, env: Mapping[str, str], base: Path) -> str | None:
    """``name`` as a path: absolute, relative to ``base`` (the experiment file's directory) when
    it holds a slash, else looked up on the step's PATH."""
    if os.sep in name:
        path = Path(name) if os.path.isabs(name) else base / name
        return str(path) if os.access(path, os.X_OK) and path.is_file() else None
    return shutil.which(name, path=env.get("PATH", os.defpath))


def make_trial(preset: Preset, step: Step, ctx: StepContext, executable: str,
               otlp_endpoint: str | None = None) -> PresetTrial:
    value: Mapping[str, Any] = step.value if isinstance(step.value, Mapping) else {}
    trial_dir = Path(ctx.values.get("trial_dir") or ctx.output.parent)
    return PresetTrial(
        preset=preset.name,
        executable=executable,
        args=tuple(str(a) for a in value.get("args") or ()),
        prompt=ctx.values.get("prompt", ""),
        model=ctx.values.get("model") or None,
        # as the CLI sees it: /tmp/workspace in the sandbox
        workspace=Path(ctx.sandbox.inside(ctx.cwd)) if ctx.sandbox is not None else ctx.cwd,
        home=trial_dir / HOME_DIR,
        artifacts=Path(ctx.values.get("artifacts_dir") or trial_dir / "artifacts"),
        env=ctx.env,
        otlp_endpoint=otlp_endpoint,
    )


@contextlib.contextmanager
def _receiver(preset: Preset, artifacts: Path) -> Iterator[OtlpReceiver | None]:
    if preset.otel != "otlp" or not preset.otel_name:
        yield None
        return
    with OtlpReceiver(artifacts / preset.otel_name) as receiver:
        yield receiver


def _sandbox(preset: Preset, trial: PresetTrial, ctx: StepContext) -> Sandbox | None:
    """The step's sandbox with what the CLI needs: its program (and node) readable, its
    config home writable. The network is the variant's (``network: false`` cuts the CLI off
    from its model API, as asked); the CLI's HOME is its config home, at the same path."""
    if ctx.sandbox is None:
        return None
    needs = preset.needs(trial)
    protect = ctx.sandbox.policy.protect
    box = ctx.own_program([trial.executable], *safe_reads(needs.read_paths, protect))
    return box.extended(write=needs.write_paths)


def run_preset(preset: Preset, step: Step, ctx: StepContext) -> ProcessResult:
    """Run ``preset``'s CLI as the trial's agent step, then collect its evidence."""
    value: Mapping[str, Any] = step.value if isinstance(step.value, Mapping) else {}
    program = str(value.get("executable") or preset.program)
    executable = resolve_executable(program, ctx.env, ctx.experiment_dir)
    if executable is None:
        ctx.output.parent.mkdir(parents=True, exist_ok=True)
        ctx.output.write_text(f"{preset.name}: {program!r} not found on PATH\n")
        return ProcessResult(None, False, 0.0,
                             start_error=f"preset {preset.name}: {program!r} not found on PATH "
                                         "(install the CLI or give 'executable:')")
    probe = make_trial(preset, step, ctx, executable)
    shutil.rmtree(probe.home, ignore_errors=True)  # a retried attempt starts afresh
    probe.home.mkdir(parents=True, exist_ok=True)
    probe.artifacts.mkdir(parents=True, exist_ok=True)
    with _receiver(preset, probe.artifacts) as receiver:
        trial = make_trial(preset, step, ctx, executable,
                           receiver.endpoint if receiver is not None else None)
        launch = preset.launch(trial)
        box = _sandbox(preset, trial, ctx)
        argv, cwd = box.wrap(launch.argv, ctx.cwd) if box else (list(launch.argv), ctx.cwd)
        result = run_step(argv, cwd=cwd, env=launch.env, timeout=ctx.timeout, output=ctx.output)
        stdout = _read(ctx.output)
        for followup, out in preset.followups(trial, stdout):
            argv, cwd = box.wrap(followup, ctx.cwd) if box else (list(followup), ctx.cwd)
            run_step(argv, cwd=cwd, env=launch.env, timeout=FOLLOWUP_TIMEOUT, output=out)
    collect_evidence(preset, trial, stdout, ctx.pricing)
    return result


def collect_evidence(preset: Preset, trial: PresetTrial, stdout: str,
                     pricing: Mapping[str, float] | None = None,
                     clock: Callable[[], float] = time.perf_counter) -> float:
    """Read the CLI's records and write the evidence; return the seconds it took."""
    started = clock()
    try:
        records = preset.collect(trial, stdout)
        write_evidence(trial.artifacts, records, preset=preset.name, otel_name=preset.otel_name,
                       pricing=pricing)
    except Exception:  # a record we cannot read must not cost the trial its verdict
        (trial.artifacts / "preset-error.txt").write_text(
            f"preset {preset.name} could not read the CLI's records:\n{traceback.format_exc()}",
            encoding="utf-8")
    return clock() - started


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
