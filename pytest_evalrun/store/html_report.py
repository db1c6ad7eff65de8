"""Write a run's HTML report: read the run directory (:mod:`.runview`), render the page
(:mod:`pytest_evalrun.report.html`), write the file atomically.

This is the entry point ``evalrun report`` calls. It lives in ``store`` because it reads files;
the renderer below it is a pure function of the data.
"""

from __future__ import annotations

from pathlib import Path

from ..report.html import render_html
from .atomic import write_text_atomic
from .runview import TextLimits, load_run

__all__ = ["render_report", "write_report"]


def render_report(run_dir: Path, limits: TextLimits | None = None) -> str:
    """The HTML report of one run directory (``results/<experiment>/<run-id>/``)."""
    return render_html(load_run(run_dir, limits).to_json())


def write_report(run_dir: Path, out: Path, limits: TextLimits | None = None) -> None:
    """Write the HTML report of ``run_dir`` to ``out`` (replaced atomically)."""
    write_text_atomic(out, render_report(run_dir, limits))
