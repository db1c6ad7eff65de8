"""Command-line options and ini settings (see docs/options.md)."""

from __future__ import annotations

import argparse
import math

import pytest

from .outcome import ERROR, FAILED, TIMEOUT
from .report.policy import ERROR_POLICIES
from .sandboxkind import ENVIRONMENT_CHOICES, SANDBOX_MODES
from .shard import parse_shard


def _budget(text: str) -> float:
    """``--eval-budget-usd``: a finite amount > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount in USD") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the budget must be more than 0 USD")
    return value


def _rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"{value!r} is not between 0 and 1")
    return rate


RETRYABLE = (FAILED, TIMEOUT, ERROR)


def _statuses(value: str) -> tuple[str, ...]:
    """``"failed,timeout"`` -> ("failed", "timeout"); only statuses that can be rerun."""
    words = tuple(dict.fromkeys(w.strip() for w in value.split(",") if w.strip()))
    bad = [w for w in words if w not in RETRYABLE]
    if bad or not words:
        raise argparse.ArgumentTypeError(f"{value!r}: give a comma list of {', '.join(RETRYABLE)}")
    return words


def _alpha(value: str) -> float:
    try:
        alpha = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 < alpha < 1.0:
        raise argparse.ArgumentTypeError(f"{value!r} is not between 0 and 1 (e.g. 0.05)")
    return alpha


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("evalrun", "agent evaluation trials (pytest-evalrun)")
    group.addoption(
        "--eval-results",
        dest="eval_results",
        metavar="DIR",
        default=None,
        help="where the standard trial layout is written (default: <rootdir>/results; "
        "ini: evalrun_results)",
    )
    group.addoption(
        "--eval-jobs",
        dest="eval_jobs",
        metavar="DIR",
        default=None,
        help="where the Pier/Harbor jobs layout is written (default: <rootdir>/jobs; "
        "ini: evalrun_jobs)",
    )
    group.addoption(
        "--eval-run-id",
        dest="eval_run_id",
        metavar="ID",
        default=None,
        help="name of the run (default: a sortable UTC timestamp); with "
        "--eval-resume, the run to continue (or a unique prefix of it)",
    )
    group.addoption(
        "--eval-resume",
        dest="eval_resume",
        action="store_true",
        default=False,
        help="continue a run: the one --eval-run-id names, else each experiment's "
        "latest run; trials already judged with an unchanged definition are "
        "not run again",
    )
    group.addoption(
        "--eval-retry",
        dest="eval_retry",
        metavar="STATUSES",
        type=_statuses,
        default=None,
        help="with --eval-resume: run again the trials recorded with these statuses "
        "(comma list of failed,timeout,error); earlier attempts are kept, and reports say "
        "how many judged trials were rerun",
    )
    group.addoption(
        "--eval-shard",
        dest="eval_shard",
        metavar="K/N",
        type=parse_shard,
        default=None,
        help="run only the K-th of N disjoint, deterministic shares of the selected trials "
        "(e.g. one CI matrix job each; combine them with `evalrun merge`)",
    )
    group.addoption(
        "--eval-sandbox",
        dest="eval_sandbox",
        choices=SANDBOX_MODES,
        default=None,
        help="isolation of every step, overriding the experiment files' 'sandbox:' mode: "
        "auto (bubblewrap where it works, else unsandboxed with a warning), bwrap "
        "(bubblewrap or the trial errors), none (docs/isolation.md)",
    )
    group.addoption(
        "--eval-dry-run",
        dest="eval_dry_run",
        action="store_true",
        default=False,
        help="run nothing: collect the selected trials and print what they would cost, "
        "estimated from the index's history of the same variants and tasks "
        "(docs/gateway.md#what-a-run-would-cost)",
    )
    group.addoption(
        "--eval-budget-usd",
        dest="eval_budget_usd",
        metavar="USD",
        type=_budget,
        default=None,
        help="no trial starts once the session's trials spent this much (their cost_usd); "
        "the rest are skipped as not run, for --eval-resume with a larger budget "
        "(docs/gateway.md)",
    )
    group.addoption(
        "--eval-record",
        dest="eval_record",
        metavar="DIR",
        default=None,
        help="keep every model exchange of every preset trial (through the model gateway; "
        "keys never written) under DIR, for --eval-replay (docs/gateway.md)",
    )
    group.addoption(
        "--eval-replay",
        dest="eval_replay",
        metavar="DIR",
        default=None,
        help="answer every preset trial's model calls from the recording in DIR, with no "
        "network; a call with no recorded answer makes the trial an error (docs/gateway.md)",
    )
    group.addoption(
        "--eval-environment",
        dest="eval_environment",
        choices=ENVIRONMENT_CHOICES,
        default=None,
        help="where every trial runs: auto (default: in a container, with podman else "
        "Docker, when the task or variant names an 'environment:' image or is a Harbor task; "
        "else the local sandbox of --eval-sandbox), bwrap or none (locally, ignoring images), "
        "podman or docker (a container of that runtime; docs/environments.md)",
    )
    group.addoption(
        "--eval-min-pass-rate",
        dest="eval_min_pass_rate",
        metavar="X",
        type=_rate,
        default=None,
        help="gate: every variant x task must reach this pass rate (0..1); the exit "
        "status then follows the gates",
    )
    group.addoption(
        "--eval-baseline",
        dest="eval_baseline",
        metavar="VARIANT",
        default=None,
        help="variant the others are compared with (default: the first)",
    )
    group.addoption(
        "--eval-baseline-run",
        dest="eval_baseline_run",
        metavar="RUN",
        default=None,
        help="regression gate: compare each variant with the same variant of this earlier run "
        "of the experiment (baseline: the pinned one, baseline:NAME, last-passing, latest, "
        "latest~N, a run id or unique prefix), paired by task; the session fails when one is "
        "worse with one-sided p < --eval-alpha. Not found: a usage error",
    )
    group.addoption(
        "--eval-baseline-optional",
        dest="eval_baseline_optional",
        action="store_true",
        default=False,
        help="with --eval-baseline-run: a baseline run that cannot be found is a note and the "
        "run goes on without the regression gate (default: a usage error, exit 4)",
    )
    group.addoption(
        "--eval-errors",
        dest="eval_errors",
        choices=ERROR_POLICIES,
        default=None,
        help="how gates treat error (unjudged) trials: count (default: an error is a trial "
        "not passed) or exclude (errors leave the gates; every report says so)",
    )
    group.addoption(
        "--eval-junit-verdict",
        dest="eval_junit_verdict",
        metavar="PATH",
        default=None,
        help="write a JUnit XML file with one testcase per gate (each gated cell, each "
        "variant's regression test, the run's overall verdict), failing exactly when that "
        "gate fails: for CI checks",
    )
    group.addoption(
        "--eval-alpha",
        dest="eval_alpha",
        metavar="A",
        type=_alpha,
        default=0.05,
        help="significance level of the regression gate (default 0.05)",
    )
    group.addoption(
        "--eval-summary-md",
        dest="eval_summary_md",
        metavar="FILE",
        default=None,
        help="also write the Markdown summary of all experiments here (e.g. $GITHUB_STEP_SUMMARY)",
    )
    group.addoption(
        "--eval-openmetrics",
        dest="eval_openmetrics",
        metavar="FILE",
        default=None,
        help="also write pass rates as OpenMetrics text here (GitLab metrics report)",
    )
    parser.addini(
        "evalrun_files",
        type="args",
        default=["*.eval.yaml", "*.eval.yml"],
        help="glob patterns of experiment files (default: *.eval.yaml *.eval.yml)",
    )
    parser.addini(
        "evalrun_errors",
        default="count",
        help="default for --eval-errors: count (errors are trials not passed) or exclude",
    )
    parser.addini("evalrun_results", default="", help="default for --eval-results")
    parser.addini("evalrun_jobs", default="", help="default for --eval-jobs")
    parser.addini(
        "evalrun_dist",
        default="one-at-a-time",
        help="xdist scheduling with -n when --dist is not given: one-at-a-time (default: "
        "load with --maxschedchunk=1), worksteal, or xdist (xdist's own default)",
    )
