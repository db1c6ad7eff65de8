"""Where everything lives in the standard trial layout::

    <results>/index.db
    <results>/.evalrun/steps/<cookie>.json  the steps running now (reaped when orphaned)
    <results>/<experiment>/<run-id>/run.json, summary.json, summary.md, metrics.txt
        variants/<variant>/variant.json
        variants/<variant>/tasks/<task>/task.json
        variants/<variant>/tasks/<task>/trials/<NNN>/meta.json, prompt.md, stdout.txt, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .layout import RUN_JSON, SUMMARY_JSON


def trial_number(n: int) -> str:
    """``1 -> "001"``; widths grow past 999 (``1000 -> "1000"``)."""
    return f"{n:03d}"


@dataclass(frozen=True)
class RunPaths:
    """Paths of one experiment's run."""

    results: Path
    experiment: str  # slug
    run_id: str

    @cached_property
    def run_dir(self) -> Path:
        # built once: a resume asks for it for every item
        return self.results / self.experiment / self.run_id

    @property
    def run_json(self) -> Path:
        return self.run_dir / RUN_JSON

    @property
    def lock(self) -> Path:
        return self.run_dir / ".run.lock"

    @property
    def summary_json(self) -> Path:
        return self.run_dir / SUMMARY_JSON

    @property
    def summary_md(self) -> Path:
        return self.run_dir / "summary.md"

    @property
    def openmetrics(self) -> Path:
        return self.run_dir / "metrics.txt"

    def variant_dir(self, variant: str) -> Path:
        return self.run_dir / "variants" / variant

    def task_dir(self, variant: str, task: str) -> Path:
        return self.variant_dir(variant) / "tasks" / task

    def trial_dir(self, variant: str, task: str, trial: int) -> Path:
        # one Path built from a string: this runs for every item of a resume
        return Path(f"{self.run_dir}/variants/{variant}/tasks/{task}/trials/{trial:03d}")


def index_db(results: Path) -> Path:
    return results / "index.db"


def step_records(results: Path) -> Path:
    """Where running steps are recorded, so that the next session can kill what a pytest
    killed outright left running (:func:`pytest_evalrun.trial.process.reap_orphans`)."""
    return results / ".evalrun" / "steps"
