"""``evalrun compare BASE CAND``: is the candidate run worse than the baseline run?

Per experiment both runs have, per variant: the pass rates, the difference (mean over tasks of
the per-task difference) with its 95% interval and one-sided p-value, paired by task, from
:func:`pytest_evalrun.report.regression.compare_variant` (the same code as the regression
gate); then each task's pass rates and difference. Exit status 1 when some variant of CAND is
significantly worse (p < --alpha), else 0. A comparison the gate would refuse (another retry
policy, a partial or unfinished run) gets a warning line (``warnings`` in --json).
"""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..report.regression import RegressionResult, TaskCounts, compare_variant
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
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
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


def _task_rows(b: Mapping[str, TaskCounts], c: Mapping[str, TaskCounts]) -> list[dict[str, Any]]:
    rows = []
    none = TaskCounts(0, 0, 0)
    for task in sorted(set(b) | set(c)):
        bp, bn, _ = b.get(task, none)
        cp, cn, _ = c.get(task, none)
        br = bp / bn if bn else None
        cr = cp / cn if cn else None
        rows.append(
            {
                "task": task,
                "base_passed": bp,
                "base_judged": bn,
                "cand_passed": cp,
                "cand_judged": cn,
                "base_rate": br,
                "cand_rate": cr,
                "diff": cr - br if br is not None and cr is not None else None,
            }
        )
    return rows


def compare_runs(
    conn: sqlite3.Connection, base: RunRow, cand: RunRow, alpha: float
) -> dict[str, Any]:
    bc, cc = task_counts(conn, base.key), task_counts(conn, cand.key)
    in_base = {v.variant for v in base.variants} | set(bc)
    in_cand = {v.variant for v in cand.variants} | set(cc)
    names = {v.variant: v.name for v in [*base.variants, *cand.variants]}
    variants: list[dict[str, Any]] = []
    for v in sorted(in_base & in_cand):
        b, c = bc.get(v, {}), cc.get(v, {})
        res: RegressionResult = compare_variant(b, c, alpha=alpha)
        variants.append(
            {"variant": v, "name": names.get(v, v), "result": res.to_dict(),
             "tasks": _task_rows(b, c)}
        )  # fmt: skip
    return {
        "experiment": cand.experiment,
        "base": {"experiment": base.experiment, "run_id": base.run_id, "status": base.status},
        "cand": {"experiment": cand.experiment, "run_id": cand.run_id, "status": cand.status},
        "alpha": alpha,
        "variants": variants,
        "only_in_base": sorted(in_base - in_cand),
        "only_in_cand": sorted(in_cand - in_base),
        "regressed": any(v["result"]["regressed"] for v in variants),
    }


def _verdict_text(r: dict[str, Any]) -> str:
    if r["regressed"]:
        return "WORSE"
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
    rows = []
    for v in data["variants"]:
        r = v["result"]
        ci = (
            f"[{r['ci_low'] * 100:+.1f}, {r['ci_high'] * 100:+.1f}]"
            if r["ci_low"] is not None and r["ci_high"] is not None
            else "-"
        )
        rows.append([clean(v["name"]), pct(r["base_rate"]), pct(r["cand_rate"]), pp(r["diff"]),
                     ci, p_text(r["p_value"]), str(r["n_tasks"]), _verdict_text(r)])  # fmt: skip
    headers = ["variant", "base", "cand", "diff", "95% CI (pp)", "p (worse)", "tasks", "verdict"]
    lines.extend(table(rows, headers, "lrrrrrrl", shrink=7, width=width))
    task_rows = []
    for v in data["variants"]:
        for t in v["tasks"]:
            task_rows.append([
                clean(v["name"]), clean(t["task"]),
                f"{t['base_passed']}/{t['base_judged']} {pct(t['base_rate'])}",
                f"{t['cand_passed']}/{t['cand_judged']} {pct(t['cand_rate'])}",
                pp(t["diff"]),
            ])  # fmt: skip
    if task_rows:
        lines.append("")
        lines.extend(table(task_rows, ["variant", "task", "base", "cand", "diff"], "llrrr",
                           shrink=1, width=width))  # fmt: skip
    for key, label in (("only_in_base", "only in base"), ("only_in_cand", "only in cand")):
        if data[key]:
            lines.append(f"{label} (not compared): {', '.join(clean(v) for v in data[key])}")
    worse = [v for v in data["variants"] if v["result"]["regressed"]]
    if worse:
        parts = ", ".join(
            f"{clean(v['name'])} {pp(v['result']['diff'])} (p={p_text(v['result']['p_value'])})"
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
    conn = connect(results_dir(args.results))
    base = resolve(conn, args.base, args.experiment)
    cand = resolve(conn, args.cand, args.experiment)
    datas = [compare_runs(conn, b, c, args.alpha) for b, c in pairs(base, cand)]
    for data, (b, c) in zip(datas, pairs(base, cand), strict=True):
        data["warnings"] = fairness_warnings(results_dir(args.results), b, c)
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
