"""pytest's JUnit XML (``--junitxml``) given evalrun's names, one-line messages and suite
properties: the one place that touches pytest's junitxml (its private ``_pytest.junitxml``
LogXML object, the only way to name a testcase and add suite properties under xdist). What is
written is decided in :mod:`pytest_evalrun.report.junit`, which knows nothing of pytest.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import pytest
from _pytest._code.code import ReprFileLocation, TerminalRepr

from .outcome import TrialOutcome
from .report.junit import headline, suite_properties, testcase_names


def _logxml(config: pytest.Config) -> Any:
    return config.stash.get(_xml_key(), None)


@functools.cache
def _xml_key() -> Any:
    """junitxml's stash key (looked up once: a session asks for it three times a trial)."""
    from _pytest.junitxml import xml_key

    return xml_key


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
    if report.failed:  # a passed report has no message to shorten (and most reports pass)
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


def add_suite_properties(
    config: pytest.Config, summary: Mapping[str, Any], run_ids: Mapping[tuple[str, str], str]
) -> None:
    """The session's suite properties (:func:`.report.junit.suite_properties`), when
    ``--junitxml`` is on."""
    xml = _logxml(config)
    if xml is None:
        return
    from _pytest.junitxml import bin_xml_escape

    for name, value in suite_properties(summary, run_ids):
        # pytest escapes the value only; a name is an XML attribute too.
        xml.add_global_property(bin_xml_escape(name), value)
