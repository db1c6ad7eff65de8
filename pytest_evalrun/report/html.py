"""The run report as one self-contained HTML file: inline CSS and JS, no network.

:func:`render_html` is a pure function over a run's data (what
:meth:`pytest_evalrun.store.runview.RunView.to_json` returns): run.json, summary.json, this
run's experiment entry, and one row and one detail record per trial. The summary sections
(verdict, heat map, variants, comparisons, regression gate) are rendered here as HTML; the trial
table is built by the page's script from JSON blocks, one per trial, parsed only when a row is
opened, so a run of 10,000 trials opens quickly.

Safety: every text is escaped (``html.escape`` here; ``textContent`` in the script), JSON inside
``<script>`` has ``<``, ``>`` and ``&`` escaped so that no text can close the block, and a
Content-Security-Policy allows only this page's own script and style (by hash) and no request
of any kind (``default-src 'none'``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from .fmt import (
    fmt_cost,
    fmt_duration,
    fmt_interval,
    fmt_p,
    fmt_pct,
    fmt_pp,
    fmt_source,
    fmt_tokens,
)
from .html_assets import JS, style_sheet
from .table import REGRESSION_HEADER, comparison_details, regression_rows, regression_title

__all__ = ["json_for_script", "render_html"]

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SCRIPT_UNSAFE = re.compile("[<>&\u2028\u2029\x7f-\x9f]")
_JUDGED = ("passed", "failed", "timeout")


def esc(value: object) -> str:
    """Text for HTML content or a quoted attribute; control characters become U+FFFD."""
    return html.escape(_CONTROL.sub("\ufffd", str(value)), quote=True)


def json_for_script(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``: no ``<`` (so no
    ``</script>`` or ``<!--``), ``>``, ``&``, line separators or C1 controls appear raw."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _SCRIPT_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _sha256(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def _heat(rate: float | None) -> str:
    return "none" if rate is None else f"h{round(max(0.0, min(1.0, rate)) * 10)}"


def _table(
    header: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1, *, label: str = ""
) -> str:
    """A table of already-escaped cells; the first ``left`` columns align left. ``label``
    names its scroll region (the page's script makes the region focusable when it scrolls)."""
    head = "".join(f'<th{" class=l" if i < left else ""}>{h}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>"
        + "".join(f'<td{" class=l" if i < left else ""}>{c}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return (
        f'<div class=scroll role=region aria-label="{esc(label or "table")}">'
        f"<table class=tbl><tr>{head}</tr>{body}</table></div>"
    )


def _wraps(text: str) -> str:
    """Text (already escaped) that may wrap at its spaces in a narrow window."""
    return f"<span class=wrap>{text}</span>"


def _interval_svg(
    lo: float, hi: float, mid: float, *, lo_axis: float, hi_axis: float, label: str
) -> str:
    """A small interval plot: the axis, zero (when on it), the interval and the estimate;
    ``label`` (already escaped) is its text alternative."""
    w, h, pad = 90, 16, 4

    def x(v: float) -> float:
        v = max(lo_axis, min(hi_axis, v))
        return round(pad + (v - lo_axis) / (hi_axis - lo_axis) * (w - 2 * pad), 1)

    colour = "#1a7f37" if lo > 0 else "#cf222e" if hi < 0 else "#59636e"
    zero = (
        f'<line x1="{x(0)}" x2="{x(0)}" y1="1" y2="{h - 1}" stroke="#8c959f" '
        'stroke-dasharray="2,2"/>'
        if lo_axis < 0 < hi_axis
        else ""
    )
    return (
        f'<svg class=ci width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
        f'aria-label="{label}"><title>{label}</title>'
        f'<line x1="{pad}" x2="{w - pad}" y1="{h / 2}" y2="{h / 2}" stroke="#d1d9e0"/>{zero}'
        f'<line x1="{x(lo)}" x2="{x(hi)}" y1="{h / 2}" y2="{h / 2}" stroke="{colour}" '
        f'stroke-width="3" stroke-linecap="round"/>'
        f'<circle cx="{x(mid)}" cy="{h / 2}" r="4" fill="{colour}"/></svg>'
    )


# --------------------------------------------------------------------------------------------
# Sections


def _header(data: Mapping[str, Any], exp: Mapping[str, Any]) -> str:
    run = data.get("run") or {}
    name = run.get("experiment") or exp.get("name") or "run"
    run_id = run.get("run_id") or exp.get("run_id") or ""
    status = str(run.get("status") or "unknown")
    pill = {"completed": "passed", "running": "neutral", "interrupted": "timeout"}.get(
        status, "failed"
    )
    bits = []
    if run.get("started_at"):
        bits.append(f"started {esc(run['started_at'])}")
    if run.get("finished_at"):
        bits.append(f"finished {esc(run['finished_at'])}")
    git = run.get("git") or {}
    if git.get("commit"):
        bits.append(f"commit <code>{esc(str(git['commit'])[:12])}</code>"
                    + (" (dirty)" if git.get("dirty") else ""))
    if run.get("host"):
        bits.append(f"host {esc(run['host'])}")
    if run.get("pytest_evalrun"):
        bits.append(f"pytest-evalrun {esc(run['pytest_evalrun'])}")
    tot = exp.get("totals") or {}
    counts = ""
    if tot:
        counts = (
            f"<p>{tot.get('trials', 0):,} trials: <span class=st-passed>{tot.get('passed', 0):,} "
            f"passed</span>, <span class=st-failed>{tot.get('failed', 0):,} failed</span>, "
            f"<span class=st-timeout>{tot.get('timeout', 0):,} timed out</span>, "
            f"<span class=st-error>{tot.get('errors', 0):,} errors</span>"
            + (f", {tot['resumed']} resumed" if tot.get("resumed") else "")
            + (f", {tot['not_run']} not run" if tot.get("not_run") else "")
            + "</p>"
        )
    return (
        f"<header><h1>{esc(name)} <span class=muted>/ {esc(run_id)}</span> "
        f'<span class="pill {pill}">{esc(status)}</span></h1>'
        f'<p class=meta>{"".join(f"<span>{b}</span>" for b in bits)}</p>'
        f'<p class="meta mono small">{esc(data.get("run_dir", ""))}</p>{counts}</header>'
    )


def _verdict(exp: Mapping[str, Any], regression: Any) -> str:
    verdict = exp.get("verdict")
    if not isinstance(verdict, Mapping):
        return (
            '<div class=verdict><span class="pill neutral">no summary</span>'
            "<span>summary.json is missing: the run has not finished a session.</span></div>"
        )
    reg_failed = isinstance(regression, Mapping) and regression.get("passed") is False
    if not verdict.get("gated") and not isinstance(regression, Mapping):
        return (
            '<div class=verdict id=verdict><span class="pill neutral">no gate</span>'
            "<span>No minimum pass rate or baseline run is set for this run.</span></div>"
        )
    failures = verdict.get("failures") or []
    ok = verdict.get("passed") is not False and not reg_failed
    parts = []
    n = verdict.get("gated_cells", 0)
    if verdict.get("gated") and (n or failures):  # a regression gate alone gates no cell
        parts.append(
            f"all {n} gated variant \u00d7 task pairs meet their minimum pass rate"
            if not failures
            else f"{len(failures)} of {n} gated variant \u00d7 task pairs are below their "
            "minimum pass rate"
        )
    if isinstance(regression, Mapping):
        parts.append(
            "regression against the baseline run"
            if reg_failed
            else "no significant regression against the baseline run"
        )
    unjudged = verdict.get("unjudged_variants") or []
    if verdict.get("gated") and unjudged:
        parts.append(
            "no judged trial (the run fails): " + ", ".join(str(v) for v in unjudged)
        )
    if not ok and not failures and not reg_failed and not (verdict.get("gated") and unjudged):
        parts.append("the run's verdict in summary.json is failed")
    text = "; ".join(parts)
    html_ = (
        f'<div class="verdict {"ok" if ok else "bad"}" id=verdict>'
        f'<span class="pill {"passed" if ok else "failed"}">gate {"passed" if ok else "failed"}'
        f"</span><span>{esc(text)}</span></div>"
    )
    if failures:
        rows = [
            [
                esc(f.get("variant")),
                esc(f.get("task")),
                fmt_pct(f.get("pass_rate"), 1)
                if f.get("pass_rate") is not None
                else "no judged trial",
                f"{f.get('gate_passed')}/{f.get('gate_trials')}" if f.get("gate_trials") else "-",
                f"{fmt_pct(f.get('upper'), 1)} ({f.get('level', 0) * 100:.4g}%)"
                if isinstance(f.get("upper"), (int, float))
                else "-",
                fmt_pct(f.get("threshold"), 1),
            ]
            for f in failures
        ]
        header = ["variant", "task", "pass rate", "gate's passed/trials", "upper bound",
                  "minimum"]  # fmt: skip
        html_ += _table(header, rows, left=2, label="pairs below their minimum") + (
            "<p class='muted small'>A cell fails when the exact one-sided upper bound of its "
            "pass rate (at the level shown: 95% for all the gated cells together) lies below "
            "its minimum; errors count as trials that did not pass unless excluded.</p>"
        )
    return html_


def _cells_from_rows(data: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per variant x task counts from the trial rows (when summary.json is missing)."""
    cols = {c: i for i, c in enumerate(data.get("columns") or [])}
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for r in data.get("rows") or []:
        key = (data["variants"][r[cols["variant"]]], data["tasks"][r[cols["task"]]])
        c = cells.setdefault(key, {"passed": 0, "n": 0, "errors": 0, "flaky": False})
        st = r[cols["status"]]
        c["n"] += st in _JUDGED
        c["passed"] += st == "passed"
        c["errors"] += st == "error"
    for c in cells.values():
        c["pass_rate"] = c["passed"] / c["n"] if c["n"] else None
        c["flaky"] = 0 < c["passed"] < c["n"]
    return cells


def _heatmap(data: Mapping[str, Any], exp: Mapping[str, Any]) -> str:
    variants: list[str] = list(data.get("variants") or [])
    tasks: list[str] = list(data.get("tasks") or [])
    if not variants or not tasks:
        return "<p class=muted>No trial was recorded.</p>"
    cells: Mapping[tuple[str, str], Mapping[str, Any]] = {
        (c["variant"], c["task"]): c for c in exp.get("cells") or []
    } or _cells_from_rows(data)
    vrows = {v["name"]: v for v in exp.get("variants") or []}
    tinfo = {t["name"]: t for t in exp.get("tasks") or []}
    gated = any(t.get("min_pass_rate") is not None for t in tinfo.values())
    head = ["<th class=task>task</th>"]
    for v in variants:
        vr = vrows.get(v)
        sub = (
            f"<span class=sub>{fmt_pct(vr.get('pass_rate'))} \u00b7 {vr.get('passed', 0)}/"
            f"{vr.get('n', 0)}</span>"
            if vr
            else ""
        )
        head.append(
            f'<th><button class=btn type=button data-v="{esc(v)}" '
            f'aria-label="list the trials of variant {esc(v)}">{esc(v)}</button>{sub}</th>'
        )
    if gated:
        head.append("<th>min</th>")
    body = []
    for t in tasks:
        row = [f'<th class=task title="{esc(t)}">{esc(t)}</th>']
        for v in variants:
            c = cells.get((v, t))
            if not c or not c.get("n"):
                errs = (c or {}).get("errors", 0)
                label = f"{errs} error{'s' if errs != 1 else ''}" if errs else "not run"
                row.append(
                    f'<td class=none><button type=button data-v="{esc(v)}" data-t="{esc(t)}" '
                    f'title="{esc(v)} / {esc(t)}"><span class=vh>{esc(v)} / {esc(t)}: </span>'
                    f"<b>-</b><small>{label}</small></button></td>"
                )
                continue
            marks = ""
            if c.get("flaky"):
                marks += " ~"
            if c.get("errors"):
                marks += f" +{c['errors']}E"
            below = (c.get("gate") or {}).get("met") is False
            cls = _heat(c.get("pass_rate")) + (" below" if below else "")
            tip = f"{v} / {t}: {c['passed']} of {c['n']} judged trials passed"
            # the button's name (hidden text around the visible one): variant, task, counts
            name = head_name = f"{v} / {t}: {fmt_pct(c.get('pass_rate'))}"
            name += f", {c['passed']} of {c['n']} passed"
            if c.get("flaky"):
                name += ", flaky"
            if c.get("errors"):
                name += f", {c['errors']} error{'s' if c['errors'] != 1 else ''}"
            if below:
                name += ", below its minimum"
            if c.get("wilson"):
                tip += f", 95% CI of these trials (Wilson) {fmt_interval(c['wilson'])}"
            row.append(
                f'<td class="{cls}"><button type=button data-v="{esc(v)}" data-t="{esc(t)}" '
                f'title="{esc(tip)}"><span class=vh>{esc(v)} / {esc(t)}: </span>'
                f'<b>{fmt_pct(c.get("pass_rate"))}</b>'
                f"<small>{c['passed']}/{c['n']}{esc(marks)}</small>"
                f"<span class=vh>{esc(name[len(head_name):])}</span></button></td>"
            )
        if gated:
            row.append(f"<td class=min>{fmt_pct((tinfo.get(t) or {}).get('min_pass_rate'))}</td>")
        body.append("<tr>" + "".join(row) + "</tr>")
    legend = "".join(f'<i class="h{i}"></i>' for i in range(11))
    return (
        '<div class=scroll role=region aria-label="pass rate by variant and task">'
        f'<table class=heat id=heatmap><tr>{"".join(head)}</tr>'
        f'{"".join(body)}</table></div>'
        f"<div class=legend>0% {legend} 100%<span class=gap></span>"
        "cell: pass rate, passed/judged (errors are not judged) \u00b7 ~ flaky \u00b7 "
        "+NE errors"
        + (" \u00b7 red outline: fails its minimum (upper bound below it)" if gated else "")
        + " \u00b7 click a cell to list its trials</div>"
    )


def _variants(exp: Mapping[str, Any], info: Mapping[str, Any]) -> str:
    rows_in = exp.get("variants") or []
    if not rows_in:
        return ""
    ks = [str(k) for k in exp.get("pass_at_k_ks") or []]
    header = ["variant", "model", "pass rate", "95% CI, these tasks (Wilson)", "0 \u2026 100%",
              "95% CI, tasks like these (clustered)", "passed / judged", "timeouts", "errors"]
    header += [f"pass@{k}" for k in ks if len(ks) > 1]
    header += ["mean agent time", "tokens in/out", "cost", "tokens and cost from"]
    rows = []
    for v in rows_in:
        ci = v.get("wilson")
        rate = v.get("pass_rate")
        row = [
            esc(v.get("name")),
            esc((info.get(v.get("name")) or {}).get("model") or "-"),
            f"<b>{fmt_pct(rate, 1)}</b>",
            _wraps(fmt_interval(ci, 1)),
            _interval_svg(ci[0], ci[1], rate, lo_axis=0.0, hi_axis=1.0,
                          label=f"pass rate {fmt_pct(rate, 1)}, 95% CI {fmt_interval(ci, 1)}")
            if ci and rate is not None
            else "",
            _wraps(fmt_interval(v.get("ci_tasks_like_these"), 1)),
            f"{v.get('passed', 0)}/{v.get('n', 0)}",
            str(v.get("timeout", 0)),
            str(v.get("errors", 0)),
        ]
        if len(ks) > 1:
            row += [fmt_pct((v.get("pass_at_k") or {}).get(k), 1) for k in ks]
        row += [
            fmt_duration(v.get("mean_agent_duration")),
            fmt_tokens(v.get("tokens") or {}),
            fmt_cost(v.get("cost_usd")),
            esc(fmt_source(v)),
        ]
        rows.append(row)
    return (
        "<h2>Variants</h2>"
        + _table(header, rows, left=2, label="variants")
        + "<p class='muted small'>Two 95% intervals, two questions: <i>these tasks</i> (Wilson "
        "over the trials: the pass rate on this suite's own tasks) and <i>tasks like these</i> "
        "(clustered by task: the mean pass rate over the tasks the suite stands for).</p>"
    )


def _comparisons(exp: Mapping[str, Any]) -> str:
    comps = exp.get("comparisons") or []
    if not comps:
        return ""
    rows = []
    for c in comps:
        ci = c.get("ci")
        rows.append(
            [
                esc(c.get("variant")),
                fmt_pct(c.get("baseline_pass_rate"), 1) + " \u2192 "
                + fmt_pct(c.get("variant_pass_rate"), 1),
                f"<b>{fmt_pp(c.get('diff'))}</b>",
                _wraps(fmt_interval(ci, 1).replace("%", " pp")) if ci else "-",
                _interval_svg(
                    ci[0], ci[1], c["diff"], lo_axis=-1.0, hi_axis=1.0,
                    label=esc(f"difference {fmt_pp(c.get('diff'))}, 95% CI "
                              + fmt_interval(ci, 1).replace("%", " pp")),
                )
                if ci and c.get("diff") is not None
                else "",
                fmt_p(c.get("p_value")),
                f"{c.get('wins', 0)}/{c.get('losses', 0)}/{c.get('ties', 0)}",
                str(c.get("tasks_paired", 0)),
            ]
        )
    label, what = comparison_details(comps[0])
    header = ["variant", "pass rate", "\u0394", "95% CI", "-100 \u2026 0 \u2026 +100 pp",
              label, "better/worse/same", "tasks"]
    return (
        f"<h2>Compared with <code>{esc(exp.get('baseline'))}</code></h2>"
        + _table(header, rows, label="comparisons")
        + f"<p class='muted small'>Paired by task ({esc(what)}): the same estimand and test as "
        "the regression gate and <code>evalrun compare</code>, two-sided here; it answers "
        "<i>these tasks</i>. Tasks without a judged trial in both variants are left out. "
        "Green: the interval is above zero; red: below.</p>"
    )


def _regression(regression: Any) -> str:
    """The regression gate against a baseline run (``--eval-baseline-run``): the same table as
    the terminal and summary.md (:func:`.table.regression_rows`)."""
    if not isinstance(regression, Mapping) or not isinstance(regression.get("variants"), list):
        return ""
    rows = regression_rows(regression, text=esc)
    drop_col = REGRESSION_HEADER.index("detectable drop")
    for row, v in zip(rows, regression["variants"], strict=False):
        if isinstance(v, Mapping) and v.get("min_detectable_drop") is None and v.get("n_tasks"):
            # too few tasks for 80% power against any drop: a regression found anyway is real
            row[drop_col] = (
                "under 80% power for any drop (this drop was still found)"
                if v.get("regressed")
                else "none: too few tasks for 80% power against any drop"
            )
    return (
        f"<h2 id=regression>Regression gate against run {esc(regression.get('baseline_run'))}"
        f"</h2><p>Per variant, against the same variant of the baseline run: a "
        f"{esc(_title(regression))}. <i>Dropped</i>: tasks judged in the baseline with no "
        "judged trial now. <i>Detectable drop</i>: the smallest drop this comparison detects "
        "with 80% power; a smaller one can hide behind \u201cno regression detected\u201d.</p>"
        + _table([esc(h) for h in REGRESSION_HEADER], rows, label="regression gate")
        + "".join(f"<div class=note>{esc(n)}</div>" for n in regression.get("notes") or [])
    )


def _title(regression: Mapping[str, Any]) -> str:
    try:
        return regression_title(regression)
    except (KeyError, TypeError, ValueError):  # an odd or older summary: say what it says
        return f"{regression.get('test')}, at alpha {regression.get('alpha')}"


def _notes(exp: Mapping[str, Any]) -> str:
    out = [f"<div class=note>{esc(n)}</div>" for n in exp.get("notes") or []]
    flaky = exp.get("flaky") or []
    if flaky:
        items = ", ".join(
            f"{esc(f.get('task'))} ({esc(f.get('variant'))} {f.get('passed')}/{f.get('n')})"
            for f in flaky[:500]
        )
        more = f", \u2026 {len(flaky) - 500} more" if len(flaky) > 500 else ""
        pairs = f"{len(flaky)} variant \u00d7 task pair{'s' if len(flaky) != 1 else ''}"
        out.append(
            f"<details class=flaky{' open' if len(flaky) <= 8 else ''}><summary><b>Flaky</b>: "
            f"{pairs} where trials disagree (~ in the heat map)</summary>"
            f"<p>{items}{more}</p></details>"
        )
    return "".join(out)


def _trials(data: Mapping[str, Any]) -> str:
    lim = data.get("limits") or {}
    n = len(data.get("rows") or [])

    def kib(key: str) -> str:
        return f"{lim.get(key, 0) / 1024:.1f} KiB"

    return (
        "<h2 id=trials-title>Trials</h2>"
        f"<p class='muted small'>Click a row (or press Enter on its first cell) for the trial's "
        "prompt, the agent's output, its diff "
        f"and verify's output. Texts are cut to keep this file small ({n:,} trials): the prompt "
        f"and the diff keep their first {kib('prompt')} and {kib('diff')}, the agent's output "
        f"and verify's output their last {kib('output')} and {kib('verify')}; a cut text says "
        "so. The whole files are in each trial's directory.</p>"
        "<div class=filters>"
        "<label>variant <select id=f-variant></select></label>"
        "<label>task <select id=f-task></select></label>"
        "<label>status <select id=f-status></select></label>"
        "<label>message <input id=f-q type=search placeholder=contains></label>"
        "<button class=btn id=f-reset type=button>reset</button>"
        "<nav class=pager aria-label='trial pages'>"
        "<span id=count class='muted small' role=status></span>"
        "<button class=btn id=first type=button aria-label='first page'>\u00ab</button>"
        "<button class=btn id=prev type=button aria-label='previous page'>\u2039</button>"
        "<label>page <input id=page type=number min=1 value=1 inputmode=numeric> "
        "<span id=pages>of 1</span></label>"
        "<button class=btn id=next type=button aria-label='next page'>\u203a</button>"
        "<button class=btn id=last type=button aria-label='last page'>\u00bb</button>"
        "</nav></div>"
        "<div class=scroll role=region aria-labelledby=trials-title>"
        "<table class=tbl id=trials><thead><tr>"
        "<th class=l>variant</th><th class=l>task</th>"
        + "".join(
            f"<th{' class=l' if k == 'status' else ''} data-sort={k}>"
            f"<button type=button class=sortbtn>{label}</button></th>"
            for k, label in (
                ("trial", "#<span class=vh> trial</span>"), ("status", "status"),
                ("reward", "reward"),
                ("duration", "duration"), ("input_tokens", "tokens in / out"),
                ("cost_usd", "cost"),
            )
        )
        + "<th class=l>message</th></tr></thead>"
        "<tbody id=trial-rows></tbody></table></div>"
        "<noscript><div>The trial table needs JavaScript.</div></noscript>"
    )


# --------------------------------------------------------------------------------------------
# The page


def _regression_of(data: Mapping[str, Any], exp: Mapping[str, Any]) -> Any:
    summary = data.get("summary") or {}
    return exp.get("regression", summary.get("regression"))


def render_html(data: Mapping[str, Any], *, generated_at: str | None = None) -> str:
    """The whole page for one run's data (see the module docstring)."""
    exp: Mapping[str, Any] = data.get("experiment") or {}
    regression = _regression_of(data, exp)
    css, js = style_sheet(), JS
    csp = (
        f"default-src 'none'; script-src {_sha256(js)}; style-src {_sha256(css)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    payload = {
        "columns": data.get("columns") or [],
        "variants": data.get("variants") or [],
        "tasks": data.get("tasks") or [],
        "rows": data.get("rows") or [],
        "prompts": data.get("prompts") or [],
    }
    details = "".join(
        f'<script type="application/json" id="trial-{i}">{json_for_script(d)}</script>\n'
        for i, d in enumerate(data.get("details") or [])
    )
    run = data.get("run") or {}
    title = f"{run.get('experiment') or exp.get('name') or 'run'} {run.get('run_id') or ''}"
    when = generated_at or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    sections = [
        _header(data, exp),
        _verdict(exp, regression),
        "<h2>Pass rate by variant and task</h2>",
        _heatmap(data, exp),
        _notes(exp),
        _variants(exp, data.get("variant_info") or {}),
        _comparisons(exp),
        _regression(regression),
        _trials(data),
        f"<footer>Written by pytest-evalrun on {esc(when)}. This file is self-contained: it "
        "loads nothing from the network.</footer>",
    ]
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(csp, quote=False)}">'
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{esc(title.strip())} \u2014 evalrun report</title>"
        f"<style>{css}</style></head><body><main>\n"
        + "\n".join(s for s in sections if s)
        + "\n</main>\n"
        f'<script type="application/json" id="evalrun-data">{json_for_script(payload)}</script>\n'
        + details
        + f"<script>{js}</script>\n</body></html>\n"
    )
