"""The verdict as JUnit XML (``--eval-junit-verdict PATH``, ``evalrun show/merge
--junit-verdict PATH``): one testcase per gate, for the check CI turns red or green.

The trials' own JUnit file (``--junitxml``) has a testcase per trial, and an eval expects some
trials to fail: a CI check built from it is red whenever one did, whatever the gates say. This
file holds the gates instead, each a testcase that fails exactly when that gate fails:

- each gated cell (variant x task with a min pass rate): fails when ``cells[].gate.met`` is
  false;
- each variant's regression test (``--eval-baseline-run``): fails when the experiment's
  ``verdict.regressions`` names the variant;
- each experiment's overall gate, and with several experiments the session's: fails when
  ``verdict.passed`` is false; with no gate set it is ``<skipped>`` (the exit status is then
  pytest's usual).

Every testcase sits in its own ``<testsuite>`` whose ``<properties>`` hold the gate's numbers
(pass rates, counts, threshold, p-value, ...): pytest's JUnit schema (junit-10.xsd) allows
properties under a testsuite only. The testcase name says the pass rates too. Pure: reads only
the summary's verdict fields, tolerating fields it does not know.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..layoutjson import ExperimentSummary, Summary, Verdict

__all__ = ["overall_verdict", "render_verdict", "verdict_cases"]

#: classname of every testcase: tools group them under one package.
PACKAGE = "evalrun.gates"


#: Characters XML 1.0 cannot hold, even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _pct(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value * 100:.1f}%"
    return "-"


def _value(value: Any) -> str | None:
    """A property's text; None for values that are not scalars (left out)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, str):
        return value
    return None


def _props(prefix: str, data: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key, value in data.items():
        text = _value(value)
        if text is not None:
            out.append((f"{prefix}{key}", text))
        elif isinstance(value, list) and all(_value(v) not in (None, "") for v in value):
            out.append((f"{prefix}{key}", ",".join(str(_value(v)) for v in value)))
    return out


class Case:
    """One gate: a testcase in a testsuite of its own."""

    def __init__(
        self,
        kind: str,
        name: str,
        failed: bool,
        message: str,
        properties: Sequence[tuple[str, str]],
        skipped: bool = False,
    ) -> None:
        self.kind = kind
        self.name = name
        self.failed = failed
        self.message = message
        # one property per name (the first given wins), in the order given
        seen: dict[str, str] = {}
        for key, value in properties:
            seen.setdefault(key, value)
        self.properties = list(seen.items())
        self.skipped = skipped


def _cell_cases(exp: Mapping[str, Any]) -> list[Case]:
    cases = []
    name = str(exp.get("name"))
    for cell in exp.get("cells") or []:
        gate = cell.get("gate") or {}
        if gate.get("threshold") is None and gate.get("met") is None:
            continue
        met = gate.get("met")
        rate = cell.get("pass_rate")
        shown = f"{_pct(rate)} ({cell.get('passed')}/{cell.get('n')})" if rate is not None else (
            "no judged trial"
        )
        sign = ">=" if met else "<"
        upper, level = gate.get("upper"), gate.get("level")
        if isinstance(upper, (int, float)) and isinstance(level, (int, float)):
            # judged with its uncertainty: the cell fails when its upper bound is below the min
            shown += f", upper bound {_pct(upper)} ({_pct(level)} confidence)"
        title = (
            f"{name} / {cell.get('variant')} / {cell.get('task')}: pass rate {shown} "
            f"{sign} min {_pct(gate.get('threshold'))}"
        )
        errors = cell.get("errors") or 0
        if errors:
            title += f", {errors} error(s)"
        props = [
            ("evalrun.gate", "min_pass_rate"),
            ("evalrun.experiment", name),
            ("evalrun.variant", str(cell.get("variant"))),
            ("evalrun.task", str(cell.get("task"))),
            ("evalrun.gate.met", _value(met) or ""),
            *_props(
                "evalrun.",
                {k: cell.get(k) for k in ("pass_rate", "passed", "n", "trials", "errors")},
            ),
            *_props("evalrun.gate.", {k: v for k, v in gate.items() if k != "met"}),
        ]
        message = (
            f"{cell.get('variant')} / {cell.get('task')}: pass rate {shown} is below the "
            f"gate's min pass rate {_pct(gate.get('threshold'))}"
        )
        cases.append(Case("cell", title, met is False, message, props))
    return cases


def _regression_cases(exp: Mapping[str, Any]) -> list[Case]:
    regression = exp.get("regression")
    if not isinstance(regression, Mapping):
        return []
    name = str(exp.get("name"))
    regressed = {str(v) for v in (exp.get("verdict") or {}).get("regressions") or []}
    base = regression.get("baseline_run")
    cases = []
    for v in regression.get("variants") or []:
        variant = str(v.get("variant"))
        failed = variant in regressed
        diff = v.get("diff")
        p = v.get("p_value")
        if v.get("n_tasks"):
            change = (
                f"{_pct(v.get('base_rate'))} -> {_pct(v.get('cand_rate'))}"
                f" ({diff * 100:+.1f} pp, p={p:.3g})"
                if isinstance(diff, (int, float)) and isinstance(p, (int, float))
                else "-"
            )
        else:
            change = "no task paired"
        word = "REGRESSED" if failed else "no regression detected"
        title = f"{name} / {variant}: regression test against run {base}: {change}: {word}"
        props = [
            ("evalrun.gate", "regression"),
            ("evalrun.experiment", name),
            ("evalrun.variant", variant),
            ("evalrun.regressed", "true" if failed else "false"),
            *_props(
                "evalrun.regression.",
                {k: regression.get(k) for k in ("baseline_run", "alpha", "errors", "test")},
            ),
            *_props("evalrun.regression.", {k: x for k, x in v.items() if k != "variant"}),
        ]
        message = f"{variant} is worse than in run {base}: {change}"
        cases.append(Case("regression", title, failed, message, props))
    return cases


def _overall_case(title: str, verdict: Mapping[str, Any], props: list[tuple[str, str]]) -> Case:
    gated = bool(verdict.get("gated"))
    failures = verdict.get("failures") or []
    regressions = verdict.get("regressions") or []
    if not gated:
        word = "no gate set"
    elif verdict.get("passed"):
        word = f"PASSED ({verdict.get('gated_cells', 0)} gated cells"
        word += f", {len(verdict['regressions'])} regressed)" if "regressions" in verdict else ")"
    else:
        parts = []
        if failures:
            parts.append(f"{len(failures)} gated cell(s) below their min pass rate")
        if regressions:
            parts.append("regressed: " + ", ".join(map(str, regressions)))
        word = "FAILED (" + ("; ".join(parts) or "see the summary") + ")"
    props = [
        ("evalrun.gate", "overall"),
        *props,
        ("evalrun.verdict", "ungated" if not gated else "passed" if verdict.get("passed") else
         "failed"),
        ("evalrun.gated_cells", str(verdict.get("gated_cells", 0))),
        ("evalrun.failures", str(len(failures))),
        ("evalrun.regressions", ",".join(map(str, regressions))),
    ]  # fmt: skip
    failed = gated and not verdict.get("passed")
    return Case("overall", f"{title}: gate {word}", failed, word, props, skipped=not gated)


def verdict_cases(
    experiments: Sequence[Mapping[str, Any]], overall: Mapping[str, Any]
) -> list[Case]:
    """Every gate of ``experiments`` (summary.json's ``experiments``), then the overall ones
    (``overall``: the verdict of them all)."""
    cases: list[Case] = []
    for exp in experiments:
        cases += _cell_cases(exp)
        cases += _regression_cases(exp)
    for exp in experiments:
        run = f" run {exp['run_id']}" if exp.get("run_id") else ""
        props = [
            ("evalrun.experiment", str(exp.get("name"))),
            ("evalrun.run_id", str(exp.get("run_id") or "")),
        ]
        cases.append(_overall_case(f"{exp.get('name')}{run}", exp.get("verdict") or {}, props))
    if len(experiments) != 1:
        cases.append(_overall_case("all experiments", overall, []))
    return cases


def overall_verdict(verdicts: Iterable[Verdict]) -> Verdict:
    """The verdict of several runs together: gated when one is, passed when every gated one
    passed (the session's rule)."""
    verdicts = list(verdicts)
    gated = [v for v in verdicts if v.get("gated")]
    out: Verdict = {
        "gated": bool(gated),
        "passed": all(bool(v.get("passed")) for v in gated) if gated else None,
        "gated_cells": sum(int(v.get("gated_cells") or 0) for v in verdicts),
        "failures": [f for v in verdicts for f in v.get("failures") or []],
    }
    if any("regressions" in v for v in verdicts):
        out["regressions"] = [r for v in verdicts for r in v.get("regressions") or []]
    return out


def render_verdict(
    summary: Summary, experiments: Sequence[ExperimentSummary] | None = None
) -> str:
    """The verdict file of a summary (a session's, or one run's summary.json). ``experiments``
    in place of the summary's own (then the overall verdict is theirs together)."""
    if experiments is None:
        experiments = summary.get("experiments") or []
        overall = summary.get("verdict") or {}
    else:
        overall = overall_verdict(e.get("verdict") or {} for e in experiments)
    cases = verdict_cases(experiments, overall)
    root = ET.Element("testsuites", name="evalrun verdict")
    for case in cases:
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_xml(case.name),
            tests="1",
            failures=str(int(case.failed)),
            errors="0",
            skipped=str(int(case.skipped)),
            time="0",
        )
        props = ET.SubElement(suite, "properties")
        for key, value in case.properties:
            ET.SubElement(props, "property", name=_xml(key), value=_xml(value))
        testcase = ET.SubElement(
            suite, "testcase", classname=f"{PACKAGE}.{case.kind}", name=_xml(case.name), time="0"
        )
        message = _xml(case.message)
        if case.failed:
            failure = ET.SubElement(testcase, "failure", message=message, type="gate")
            failure.text = message
        elif case.skipped:
            ET.SubElement(testcase, "skipped", message=message, type="ungated")
    root.set("tests", str(len(cases)))
    root.set("failures", str(sum(c.failed for c in cases)))
    root.set("errors", "0")
    root.set("time", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"
