"""``evalrun compare BASE CAND``: is the candidate run worse than the baseline run?

Per experiment both runs have, per variant: the pass rates, the difference (per-task rates
weighted by trials) with its 95% interval and one-sided p-value, paired by task, Holm-adjusted
over the variants compared, from :func:`pytest_evalrun.report.regression.regression_section`
(the same code as the regression gate, so the same verdict on the same counts); then each
task's counts and difference. ``--errors count`` (the default, as the gate's): an error trial
is a trial that did not pass and a task judged in BASE with no judged trial in CAND fails the
variant; ``--errors exclude`` leaves errors out. Exit status 1 when some variant of CAND
fails (significantly worse, or tasks dropped), else 0. A warning when one run retried judged
trials (``--eval-retry``) and the other did not. A comparison the gate would
refuse (another retry policy, a partial or unfinished run) gets a warning line (``warnings``
in --json).
"""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..report.fmt import fmt_p
from ..report.policy import ERROR_POLICIES, ERRORS_COUNT
from ..report.regression import TaskCounts, gate_counts, regression_section
from ..report.table import regression_title
from ..store.baseline import rerun_judged
from ..store.layout import SUMMARY_JSON
from ..store.paths import RunPaths
from ..store.query import RunRow, task_counts
from .common import (
    CliError,
    clean,
    connect,
    p_text,
    pct,
    pp,
    print_json,
    print_lines,
    resolve,
    results_dir,
    table,
    terminal_width,
)


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "compare",
        parents=[common],
        help="compare a candidate run with a baseline run (exit 1 when it is worse)",
        description="Per variant: pass rates, difference with its 95%% interval and one-sided "
        "p-value, paired by task; per task: pass rates and difference. Exit 1 when some "
        "variant of CAND is significantly worse than in BASE.",
    )
    p.add_argument("base", metavar="BASE", help="the baseline run")
    p.add_argument("cand", metavar="CAND", help="the candidate run")
    p.add_argument("--experiment", "-e", metavar="X", help="only this experiment")
    p.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="family-wise significance level over the variants compared (Holm; default 0.05)",
    )
    p.add_argument(
        "--errors",
        choices=ERROR_POLICIES,
        default=ERRORS_COUNT,
        help="error trials: count as trials that did not pass (default, as the gate does) or "
        "exclude them",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def pairs(base: list[RunRow], cand: list[RunRow]) -> list[tuple[RunRow, RunRow]]:
    """Runs to compare: the experiments both have; else the one run of each."""
    by_exp = {r.experiment: r for r in base}
    found = [(by_exp[c.experiment], c) for c in cand if c.experiment in by_exp]
    if found:
        return found
    if len(base) == 1 and len(cand) == 1:
        return [(base[0], cand[0])]
    raise CliError(
        f"runs {base[0].run_id} and {cand[0].run_id} have no experiment in common "
        "(add --experiment X, or write X/RUN)"
    )


def _task_rows(
    b: Mapping[str, TaskCounts], c: Mapping[str, TaskCounts], errors: str
) -> list[dict[str, Any]]:
    """Per task: the counts the test used (under ``count`` errors are trials that did not
    pass), the judged counts and the errors."""
    rows = []
    none = TaskCounts(0, 0, 0)
    for task in sorted(set(b) | set(c)):
        bt, ct = b.get(task, none), c.get(task, none)
        bp, bn = gate_counts(bt, errors)
        cp, cn = gate_counts(ct, errors)
        br = bp / bn if bn else None
        cr = cp / cn if cn else None
        rows.append(
            {
                "task": task,
                "base_passed": bp,
                "base_trials": bn,
                "base_judged": bt.judged,
                "base_errors": bt.errors,
                "cand_passed": cp,
                "cand_trials": cn,
                "cand_judged": ct.judged,
                "cand_errors": ct.errors,
                "base_rate": br,
                "cand_rate": cr,
                "diff": cr - br if br is not None and cr is not None else None,
            }
        )
    return rows


def _rerun_judged(run: RunRow, results: Path | None) -> int | None:
    """Judged trials the run ran again (``--eval-retry``), from its summary.json (under
    ``results`` when given: the index's run_dir may name where the run was written); None
    when unknown."""
    return rerun_judged(
        RunPaths(results, run.experiment, run.run_id).summary_json
        if results is not None
        else Path(run.run_dir) / SUMMARY_JSON
    )


def compare_runs(
    conn: sqlite3.Connection,
    base: RunRow,
    cand: RunRow,
    alpha: float,
    errors: str = ERRORS_COUNT,
    results: Path | None = None,
) -> dict[str, Any]:
    bc, cc = task_counts(conn, base.key), task_counts(conn, cand.key)
    in_base = {v.variant for v in base.variants} | set(bc)
    in_cand = {v.variant for v in cand.variants} | set(cc)
    names = {v.variant: v.name for v in [*base.variants, *cand.variants]}
    both = sorted(in_base & in_cand)
    section = regression_section(
        {v: bc.get(v, {}) for v in both},
        {v: cc.get(v, {}) for v in both},
        baseline_run=base.run_id,
        alpha=alpha,
        variant_names={v: names.get(v, v) for v in both},
        errors=errors,
        base_rerun_judged=_rerun_judged(base, results),
        cand_rerun_judged=_rerun_judged(cand, results),
    )
    variants = [
        {"variant": v, "name": names.get(v, v), "result": result,
         "tasks": _task_rows(bc.get(v, {}), cc.get(v, {}), errors)}
        for v, result in zip(both, section["variants"], strict=True)
    ]  # fmt: skip
    return {
        "experiment": cand.experiment,
        "base": {"experiment": base.experiment, "run_id": base.run_id, "status": base.status},
        "cand": {"experiment": cand.experiment, "run_id": cand.run_id, "status": cand.status},
        "alpha": alpha,
        "errors": errors,
        "family": section["family"],
        "question": section["question"],
        "test": regression_title(section),
        "notes": section["notes"],
        "retry_mismatch": section["retry_mismatch"],
        "variants": variants,
        "only_in_base": sorted(in_base - in_cand),
        "only_in_cand": sorted(in_cand - in_base),
        "regressed": not section["passed"],
    }


def _verdict_text(r: dict[str, Any]) -> str:
    if r["regressed"]:
        if r.get("significant", True):
            return "WORSE"
        return f"FAILED: {len(r['tasks_dropped'])} task(s) without a judged trial"
    if r["n_tasks"] == 0:
        return "no paired task"
    mdd = r.get("min_detectable_drop")
    return "not worse" + (f" (could detect a drop of {mdd * 100:.0f} pp)" if mdd else "")


def render(data: dict[str, Any]) -> list[str]:
    width = terminal_width()
    base, cand = data["base"], data["cand"]
    head = f"experiment {clean(data['experiment'])}: base {clean(base['run_id'])}"
    if base["experiment"] != cand["experiment"]:
        head += f" ({clean(base['experiment'])})"
    lines = [head + f" vs cand {clean(cand['run_id'])}, alpha {data['alpha']:g}"]
    lines.append(f"test: {clean(data['test'])}")
    rows = []
    for v in data["variants"]:
        r = v["result"]
        ci = (
            f"[{r['ci_low'] * 100:+.1f}, {r['ci_high'] * 100:+.1f}]"
            if r["ci_low"] is not None and r["ci_high"] is not None
            else "-"
        )
        rows.append([clean(v["name"]), pct(r["base_rate"]), pct(r["cand_rate"]), pp(r["diff"]),
                     ci, p_text(r["p_value"]), fmt_p(r.get("p_adjusted")),
                     f"{r['n_tasks']}/{len(r.get('tasks_dropped', []))}",
                     str(r.get("errors", 0)), _verdict_text(r)])  # fmt: skip
    headers = ["variant", "base", "cand", "diff", "95% CI (pp)", "p (worse)", "p (Holm)",
               "tasks paired/dropped", "errors", "verdict"]  # fmt: skip
    lines.extend(table(rows, headers, "lrrrrrrrrl", shrink=9, width=width))
    task_rows = []
    for v in data["variants"]:
        for t in v["tasks"]:
            task_rows.append([
                clean(v["name"]), clean(t["task"]),
                f"{t['base_passed']}/{t['base_trials']} {pct(t['base_rate'])}"
                + (f" +{t['base_errors']}E" if t["base_errors"] else ""),
                f"{t['cand_passed']}/{t['cand_trials']} {pct(t['cand_rate'])}"
                + (f" +{t['cand_errors']}E" if t["cand_errors"] else ""),
                pp(t["diff"]),
            ])  # fmt: skip
    if task_rows:
        lines.append("")
        lines.extend(table(task_rows, ["variant", "task", "base", "cand", "diff"], "llrrr",
                           shrink=1, width=width))  # fmt: skip
    if task_rows:
        lines.append(
            "  k/n: passes of the trials compared"
            + (
                " (errors, +NE, count as trials that did not pass)"
                if data["errors"] == ERRORS_COUNT
                else " (judged trials; errors, +NE, excluded)"
            )
        )
    for note in data["notes"]:
        lines.append(f"note: {clean(note)}")
    for key, label in (("only_in_base", "only in base"), ("only_in_cand", "only in cand")):
        if data[key]:
            lines.append(f"{label} (not compared): {', '.join(clean(v) for v in data[key])}")
    worse = [v for v in data["variants"] if v["result"]["regressed"]]
    if worse:
        parts = ", ".join(
            f"{clean(v['name'])} {pp(v['result']['diff'])} (p={p_text(v['result']['p_value'])}"
            + "".join(f"; {r}" for r in v["result"]["reasons"])
            + ")"
            for v in worse
        )
        lines.append(f"verdict: REGRESSED: {parts}")
    else:
        lines.append(f"verdict: no variant is significantly worse (alpha {data['alpha']:g})")
    return lines


def fairness_warnings(results: Path, base: RunRow, cand: RunRow) -> list[str]:
    """What makes the comparison unfair, as the regression gate judges it
    (store/baseline.py): another retry policy, or a run that is partial or did not complete.
    The gate refuses such a baseline; compare only warns."""
    from ..store.baseline import policy_text, run_facts

    b = run_facts(results, base.experiment, base.run_id)
    c = run_facts(results, cand.experiment, cand.run_id)
    out = []
    if b is not None and c is not None and b.retry != c.retry:
        out.append(
            f"base was run with {policy_text(b.retry)}, cand with {policy_text(c.retry)}: "
            "rerunning judged trials raises pass rates, the comparison is not fair"
        )
    for label, facts in (("base", b), ("cand", c)):
        why = facts.incomplete_reason if facts is not None else ""
        if facts is not None and why:
            out.append(f"{label} run {facts.run_id} is not a complete run ({why})")
    return out


def run(args: argparse.Namespace) -> int:
    if not 0.0 < args.alpha < 1.0:
        raise CliError(f"--alpha must be between 0 and 1, not {args.alpha}")
    results = results_dir(args.results)
    conn = connect(results)
    base = resolve(conn, args.base, args.experiment)
    cand = resolve(conn, args.cand, args.experiment)
    datas = [
        compare_runs(conn, b, c, args.alpha, args.errors, results) for b, c in pairs(base, cand)
    ]
    for data, (b, c) in zip(datas, pairs(base, cand), strict=True):
        data["warnings"] = fairness_warnings(results, b, c)
    if args.json:
        print_json(datas)
    else:
        out: list[str] = []
        for i, data in enumerate(datas):
            if i:
                out.append("")
            out.extend(render(data))
            out.extend(f"warning: {clean(w)}" for w in data["warnings"])
        print_lines(out)
    return 1 if any(d["regressed"] for d in datas) else 0
