"""JUnit XML (pytest's ``--junitxml``, xunit2): testcase names CI tools group, suite properties.

xunit2 allows ``<properties>`` only under ``<testsuite>``, so pass rates and the verdict are
suite properties, added on the controller through the LogXML object (``record_testsuite_property``
is lost under xdist). Testcases are named ``classname=<experiment>.<variant>.<task>`` (slugs, dots
inside a slug replaced by ``_`` so Jenkins' package/class split works) and
``name="<experiment> / <variant> / <task> / trial <n>"`` (the names as written): stable names with
no changing number in them, so CI keeps per-test history. The name alone is unique in a session,
because readers such as xunit-viewer's console mode and Ant's ``junitreport`` drop the classname:
experiment names are unique in a session (discovery.py), variant and task names within their
experiment, and no name contains ``/``, so the `` / ``-separated parts cannot run together.

A failure's or error's ``message`` attribute is one short line (``FAILED: v / t / trial 1:
verify exited 1``), its element text the whole description: readers such as xunit-viewer print
both, so a multi-line message would be shown twice. The same line is pytest's short test
summary reason and its ``--tb=line`` line.

Plain data only (no pytest): :mod:`pytest_evalrun.junitxml`, in the pytest wiring, hands these
names, lines and properties to pytest's junitxml.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..outcome import TrialOutcome
from ..safetext import escape


def _part(text: str) -> str:
    return text.replace(".", "_")


def testcase_names(outcome: TrialOutcome) -> tuple[str, str]:
    """``(classname, name)`` of the trial's testcase (see the module docstring)."""
    classname = ".".join(
        _part(x) for x in (outcome.experiment_slug, outcome.variant_slug, outcome.task_slug)
    )
    name = f"{outcome.experiment} / {outcome.variant} / {outcome.task} / trial {outcome.trial}"
    return classname, name


#: The one-line message of a failure (``<failure message=...>``): at most this long.
HEADLINE_CHARS = 200


def headline(outcome: TrialOutcome) -> str:
    """One short line: ``FAILED: v / t / trial 1: <first line of the message>``, escaped."""
    text = f"{outcome.status.upper()}: {outcome.variant} / {outcome.task} / trial {outcome.trial}"
    first = (outcome.message or "").strip().split("\n", 1)[0].strip()
    if first:
        text += f": {first}"
    text = escape(text[: HEADLINE_CHARS * 2])
    return text if len(text) <= HEADLINE_CHARS else text[: HEADLINE_CHARS - 1] + "…"


def verdict_word(verdict: Mapping[str, Any]) -> str:
    if not verdict.get("gated"):
        return "ungated"
    return "passed" if verdict.get("passed") else "failed"


def _rate(value: Any) -> str:
    return "" if value is None else f"{value:.4f}"


def suite_properties(
    summary: Mapping[str, Any], run_ids: Mapping[tuple[str, str], str]
) -> list[tuple[str, str]]:
    """The ``(name, value)`` suite properties of a session: verdicts, run ids, pass rates and
    the regression gate's result, in this order."""
    props: list[tuple[str, str]] = []

    def add(name: str, value: str) -> None:
        props.append((name, value))

    verdict = summary.get("verdict", {})
    add("evalrun.verdict", verdict_word(verdict))
    for (slug, _), run_id in run_ids.items():
        add(f"evalrun.run_id.{slug}", run_id)
    for exp in summary.get("experiments", []):
        name = exp.get("name")
        add(f"evalrun.verdict.{name}", verdict_word(exp.get("verdict", {})))
        for v in exp.get("variants", []):
            add(f"evalrun.pass_rate.{name}.{v.get('name')}", _rate(v.get("pass_rate")))
        for cell in exp.get("cells", []):
            add(
                f"evalrun.pass_rate.{name}.{cell.get('variant')}.{cell.get('task')}",
                _rate(cell.get("pass_rate")),
            )
        regression = exp.get("regression")
        if regression:
            add(f"evalrun.regression.{name}.baseline_run", str(regression["baseline_run"]))
            add(f"evalrun.regression.{name}.alpha", f"{regression['alpha']:g}")
            for v in regression["variants"]:
                key = f"evalrun.regression.{name}.{v['variant']}"
                verdict = "regressed" if v["regressed"] else "no regression detected"
                add(f"{key}.verdict", verdict if v["n_tasks"] else "not compared")
                add(f"{key}.diff", _rate(v["diff"]))
                add(f"{key}.ci", f"{_rate(v['ci_low'])},{_rate(v['ci_high'])}")
                add(f"{key}.p_value", "" if v["p_value"] is None else f"{v['p_value']:.4g}")
                add(f"{key}.min_detectable_drop", _rate(v["min_detectable_drop"]))
    return props
