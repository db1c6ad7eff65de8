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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from _pytest._code.code import ReprFileLocation, TerminalRepr

from ..outcome import TrialOutcome
from ..safetext import escape


def _logxml(config: pytest.Config) -> Any:
    from _pytest.junitxml import xml_key

    return config.stash.get(xml_key, None)


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


class TrialFailureRepr(TerminalRepr):
    """A trial's failure text (:func:`pytest_evalrun.collect.describe`) with its one-line
    message as ``reprcrash.message``, where junitxml and the short test summary look for it."""

    def __init__(self, text: str, message: str, path: str, lineno: int) -> None:
        self.text = text
        self.reprcrash = ReprFileLocation(path, lineno, message)

    def toterminal(self, tw: Any) -> None:
        for line in self.text.splitlines():
            tw.line(line)

    def __str__(self) -> str:
        return self.text


def one_line_message(report: pytest.TestReport, message: str) -> None:
    """Give a failed report whose text is a plain string (a trial's description, also as it
    arrives from an xdist worker) ``message`` as its one-line reason."""
    if report.passed or report.skipped or not isinstance(report.longrepr, str):
        return
    path, lineno, _ = report.location
    report.longrepr = TrialFailureRepr(report.longrepr, message, path, (lineno or 0) + 1)


def name_testcase(config: pytest.Config, report: pytest.TestReport, outcome: TrialOutcome) -> None:
    """Give the report's testcase our names and a failure its one-line message (call before
    junitxml and the terminal see the report).

    ``--junit-prefix`` is honoured as pytest does for its own classnames: ``<prefix>.<classname>``.
    """
    one_line_message(report, headline(outcome))
    xml = _logxml(config)
    if xml is None:
        return
    from _pytest.junitxml import bin_xml_escape

    classname, name = testcase_names(outcome)
    if getattr(xml, "prefix", None):
        classname = f"{xml.prefix}.{classname}"
    reporter = xml.node_reporter(report)
    reporter.attrs["classname"] = bin_xml_escape(classname)
    reporter.attrs["name"] = bin_xml_escape(name)


def verdict_word(verdict: Mapping[str, Any]) -> str:
    if not verdict.get("gated"):
        return "ungated"
    return "passed" if verdict.get("passed") else "failed"


def _rate(value: Any) -> str:
    return "" if value is None else f"{value:.4f}"


def add_suite_properties(
    config: pytest.Config, summary: Mapping[str, Any], run_ids: Mapping[tuple[str, str], str]
) -> None:
    xml = _logxml(config)
    if xml is None:
        return
    from _pytest.junitxml import bin_xml_escape

    def add(name: str, value: str) -> None:
        # pytest escapes the value only; a name is an XML attribute too.
        xml.add_global_property(bin_xml_escape(name), value)

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
