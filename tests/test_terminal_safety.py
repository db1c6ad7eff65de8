"""Nothing an agent or a verifier prints or writes can act on the reader's terminal or inflate
what it reads: the failure section, its header, the short summary, the evalrun summary, the
JUnit failure and the ``evalrun`` command show control, bidi and invisible characters escaped,
and bound lines and sections by size as well as by count."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

import pytest
from cli_helpers import evalrun
from conftest import Suite

from pytest_evalrun.safetext import MAX_LINE, MAX_SECTION, bounded, escape, escape_lines

#: What a hostile verifier prints: window title (OSC 0), clipboard (OSC 52), a disguised link
#: (OSC 8), clear screen and home (CSI), a fake green "10 passed", carriage return, backspace,
#: bell, bidi override, zero-width space, line separator, BOM, a C1 control (CSI as one byte).
HOSTILE = (
    "\x1b]0;pwned-title\x07"
    "\x1b]52;c;cHduZWQ=\x07"
    "\x1b]8;;https://evil.example/\x1b\\click-me\x1b]8;;\x1b\\"
    "\x1b[2J\x1b[H\x1b[32m10 passed\x1b[0m"
    "\rOVERWRITE\x08\x08\x07"
    "abc\u202egnp.exe\u200bzw\u2028ls\ufeffbom\x9b31m"
)
#: Characters that must never reach the reader raw.
RAW = ("\x1b", "\x07", "\x08", "\r", "\x9b", "\u202e", "\u200b", "\u2028", "\ufeff")
#: A single line of 3 MB: the reader gets a bounded cut of it.
LONG = 3_000_000

VERIFIER = (
    "import sys\n"
    f"sys.stdout.write({HOSTILE!r} + '\\n')\n"
    f"sys.stdout.write('L' * {LONG} + 'END-OF-LONG\\n')\n"
    "sys.stdout.write('last line\\n')\n"
    "sys.exit(1)\n"
)
VARIANT = "v\u202eevil"
TASK = "t\u200bzero\u2028sep"


def hostile_experiment(suite: Suite) -> None:
    verifier = suite.write("hostile_verify.py", VERIFIER)
    suite.experiment(
        variants={VARIANT: {}},
        tasks=[
            {"name": TASK, "prompt": "SAY hi", "fixture": "fixtures/basic",
             "verify": f"{sys.executable} {verifier}"},
        ],
    )  # fmt: skip


def assert_inert(text: str, where: str) -> None:
    found = [repr(ch) for ch in RAW if ch in text]
    assert not found, f"{where} shows {', '.join(found)} raw"


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "xdist"])
def test_a_hostile_verifier_cannot_act_on_the_terminal_nor_junit(
    suite: Suite, xdist: bool
) -> None:
    hostile_experiment(suite)
    args = ["-p", "no:cacheprovider", "-rA", "--junitxml=junit.xml"]
    if xdist:
        r = suite.pytester.runpytest_subprocess(*args, "-n", "2")
    else:
        r = suite.pytester.runpytest(*args)
    r.assert_outcomes(failed=1)
    out = "\n".join(r.outlines)
    assert_inert(out, "the terminal")
    # the escapes are visible instead, in the failure section ...
    assert "\\x1b]0;pwned-title\\x07" in out
    assert "\\x1b]52;c;cHduZWQ=" in out
    assert "\\x1b[2J" in out
    # (the recorded tail is split into lines at CR and U+2028, as str.splitlines does)
    assert "OVERWRITE\\x08\\x08\\x07abc\\u202egnp.exe\\u200bzw" in out
    assert "ls\\ufeffbom\\x9b31m" in out
    assert "last line" in out and "END-OF-LONG" in out
    # ... its header and the short summary name the variant and task escaped
    header = [line for line in r.outlines if line.startswith("_") and "trial 1" in line]
    assert header and "v\\u202eevil / t\\u200bzero\\u2028sep / trial 1" in header[0]
    short = [line for line in r.outlines if line.startswith("FAILED ")]
    assert len(short) == 1 and "FAILED: v\\u202eevil" in short[0]
    # 3 MB printed by the verifier: the session's whole output stays small
    assert len(out) < 4 * MAX_SECTION, len(out)

    junit = ET.parse(suite.root / "junit.xml").getroot()
    failure = junit.find(".//testcase/failure")
    assert failure is not None
    message, body = failure.get("message") or "", failure.text or ""
    # one short line (xunit-viewer prints message and body: 0.2.0 printed the body twice)
    assert "\n" not in message and len(message) <= 200
    assert message.startswith("FAILED: v\\u202eevil / t\\u200bzero\\u2028sep / trial 1")
    assert "--- output (tail) ---" in body and "last line" in body
    assert_inert(message + body, "JUnit")
    assert (suite.root / "junit.xml").stat().st_size < 4 * MAX_SECTION


def test_the_evalrun_command_shows_hostile_names_and_messages_escaped(suite: Suite) -> None:
    hostile_experiment(suite)
    suite.pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(failed=1)
    for args in (("runs",), ("show",), ("show", "--failed"), ("export", "--format", "jsonl")):
        r = evalrun(*args, cwd=suite.root)
        if args[0] == "export":
            assert "\\u202e" in r.stdout  # JSON escapes it: readable by programs, inert
        assert_inert(r.stdout + r.stderr, f"evalrun {' '.join(args)}")


# ------------------------------------------------------------------------------ the function


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;t\x07", "\\x1b]0;t\\x07"),
        ("a\rb\x08c\x7f\x9b", "a\\rb\\x08c\\x7f\\x9b"),
        ("\u202e\u2066\u200b\u200d\u2028\u2029\ufeff\u00ad", "\\u202e\\u2066\\u200b\\u200d"
         "\\u2028\\u2029\\ufeff\\xad"),
        ("\U000e0041 tag", "\\U000e0041 tag"),
        ("\udcff", "\\udcff"),  # an undecodable byte (surrogateescape)
        ("naïve café 日本語 ✓ a b", "naïve café 日本語 ✓ a b"),
        ("tab\there\nline", "tab\\there\\nline"),
    ],
)  # fmt: skip
def test_escape(raw: str, shown: str) -> None:
    assert escape(raw) == shown


def test_escape_lines_keeps_newlines_and_tabs_only() -> None:
    assert escape_lines("a\tb\r\nc\rd\n\x1b") == "a\tb\nc\\rd\n\\x1b"


def test_bounded_cuts_long_lines_and_long_sections_and_says_so() -> None:
    line = "x" * 10_000
    shown = bounded(line)
    assert len(shown) < MAX_LINE + 40 and "9,500 characters cut" in shown
    many = "\n".join(f"{i} " + "y" * 400 for i in range(1000))
    shown = bounded(many)
    assert len(shown) <= MAX_SECTION + 40
    assert shown.endswith("999 " + "y" * 400)
    assert shown.splitlines()[0].startswith("…[") and "earlier lines cut" in shown
    assert bounded("a\nb\nc", max_lines=2) == "…[1 earlier line cut]…\nb\nc"
    # escaping cannot blow a line up past ten times the limit
    assert len(bounded("\x1b" * 100_000)) <= 4 * MAX_LINE + 40
    # the same bounds without escaping, for a record (meta.json's output tail)
    raw = bounded("\x1b[2J" + "z" * 10_000, shown=False)
    assert raw.startswith("\x1b[2J") and len(raw) < MAX_LINE + 40
