"""The HTML report (``evalrun report``): one self-contained file, checked on real runs in headless
Chromium (screenshot, DOM after the script ran, no request leaving the file, hostile trial
output that must not execute), and on a synthetic 10,000-trial run for its size bound."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import headless
import pytest
import yaml
from cdp import AXE_JS, AXE_SKIP_REASON, Browser
from conftest import VERIFY, Suite
from headless import CHROMIUM, SKIP_REASON
from mockllm import MockLLM
from synthetic_run import write_run
from test_presets import edit_script, experiment, refuse_script, require_cli

from pytest_evalrun.report.fmt import fmt_pct
from pytest_evalrun.report.html import json_for_script, render_html
from pytest_evalrun.report.html_assets import HEAT
from pytest_evalrun.store.html_report import render_report, write_report
from pytest_evalrun.store.runview import TextLimits, load_run
from pytest_evalrun.store.trialdir import STDOUT

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)

HOSTILE = "</script><script>document.title='pwned'</script><!-- <b>bold</b>"
HOSTILE_TASK = "<img src=x onerror=\"document.title='pwned-name'\">"


def run_suite(suite: Suite, *, trials: int = 2) -> Path:
    """A real run: 2 variants x 4 tasks; one task prints and writes hostile text."""
    tasks = [
        {"name": "good", "prompt": "WRITE answer.txt ok", "fixture": "fixtures/basic",
         "verify": VERIFY},
        {"name": "bad", "prompt": "WRITE answer.txt nope", "fixture": "fixtures/basic",
         "verify": VERIFY},
        {"name": "picky", "prompt": "WRITE answer.txt ok", "fixture": "fixtures/basic",
         "verify": 'test "$EVALRUN_VARIANT" = strong'},
        {"name": HOSTILE_TASK, "fixture": "fixtures/basic", "verify": VERIFY,
         "prompt": f"SAY {HOSTILE}\nWRITE evil.html {HOSTILE}\nWRITE answer.txt ok"},
    ]
    suite.experiment(variants={"base": {}, "strong": {}}, tasks=tasks, trials=trials)
    result = suite.pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == 1, result.stdout.str()[-3000:]  # the "bad" trials fail
    return suite.run_dirs()[-1]


def report_of(suite: Suite) -> tuple[Path, Path, dict[str, Any]]:
    run_dir = run_suite(suite)
    out = suite.root / "report.html"
    write_report(run_dir, out)
    summary = json.loads((run_dir / "summary.json").read_text())
    return run_dir, out, summary


def as_dom_text(text: str) -> str:
    """How Chromium serialises a text node."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _rows(data: dict[str, object]) -> list[list[object]]:
    rows = data["rows"]
    assert isinstance(rows, list)
    return rows


# --------------------------------------------------------------------------------------------
# the file itself (no browser)


def test_report_is_one_file_that_names_no_outside_resource(suite: Suite) -> None:
    _, out, _ = report_of(suite)
    page = out.read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href|action|data)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", page, re.I)
    assert "@import" not in page
    assert not re.search(r"<(?:link|img|iframe|object|embed|base)\b", page, re.I)
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp and "default-src 'none'" in csp.group(1)
    assert "'unsafe-inline'" not in csp.group(1)
    # exactly one script runs (the page's own); the others are inert JSON blocks
    assert len(re.findall(r"<script>", page)) == 1
    assert page.count("<script") == page.count("</script>")


def test_hostile_text_cannot_leave_its_json_block() -> None:
    nasty = HOSTILE + "\u2028\u2029\x00\x1b[31m\x7f\x85 & <!-- -->"
    text = json_for_script({"k": nasty, nasty: [nasty]})
    assert not re.search("[<>&\u2028\u2029\x00-\x1f\x7f-\x9f]", text)
    assert json.loads(text) == {"k": nasty, nasty: [nasty]}


def test_every_name_and_message_is_escaped_in_the_html() -> None:
    data = {
        "run": {"experiment": HOSTILE, "run_id": "<i>r</i>", "status": "completed"},
        "run_dir": "/tmp/<x>",
        "experiment": {
            "name": HOSTILE,
            "variants": [{"name": HOSTILE, "pass_rate": 0.5, "wilson": [0.1, 0.9], "passed": 1,
                          "n": 2}],
            "tasks": [{"name": HOSTILE_TASK, "min_pass_rate": 0.9}],
            "cells": [{"variant": HOSTILE, "task": HOSTILE_TASK, "passed": 1, "n": 2,
                       "pass_rate": 0.5, "gate": {"met": False}}],
            "notes": [HOSTILE],
            "flaky": [{"variant": HOSTILE, "task": HOSTILE_TASK, "passed": 1, "n": 2}],
            "verdict": {"gated": True, "passed": False, "gated_cells": 1,
                        "failures": [{"variant": HOSTILE, "task": HOSTILE_TASK,
                                      "pass_rate": 0.5, "threshold": 0.9}]},
        },
        "variants": [HOSTILE], "tasks": [HOSTILE_TASK], "rows": [], "details": [],
        "columns": [],
    }
    page = render_html(data)
    body = page.split("<main>", 1)[1].split('<script type="application/json"', 1)[0]
    assert "<script" not in body and "<img" not in body and "<b>bold" not in body
    assert "&lt;/script&gt;" in body and "&lt;img src=x" in body


def test_texts_are_cut_with_a_marker_and_links_are_not_followed(
    suite: Suite, tmp_path: Path
) -> None:
    run_dir = run_suite(suite, trials=1)
    trial = suite.trial_dir("base", "good", 1)
    (trial / STDOUT).write_text("".join(f"line {i}\n" for i in range(10_000)))
    secret = tmp_path / "outside.txt"
    secret.write_text("OUTSIDE-THE-RUN")
    other = suite.trial_dir("base", "bad", 1)
    (other / STDOUT).unlink()
    os.symlink(secret, other / STDOUT)
    view = load_run(run_dir, TextLimits(prompt=100, output=500, diff=100, verify=100))
    by_task = {
        (view.variants[r[0]], view.tasks[r[1]]): d
        for r, d in zip(view.rows, view.details, strict=True)
    }
    out = by_task[("base", "good")]["output"]
    assert out["cut"] and out["keep"] == "tail" and out["size"] > 50_000
    assert out["text"].endswith("line 9999\n") and len(out["text"]) <= 500
    assert out["text"].startswith("line ")  # cut at a line break
    assert by_task[("base", "bad")]["output"] == {"text": "", "size": 0, "cut": False,
                                                 "keep": "tail"}
    assert "OUTSIDE-THE-RUN" not in render_html(view.to_json())


def test_page_without_summary_still_lists_trials(suite: Suite) -> None:
    run_dir = run_suite(suite, trials=1)
    (run_dir / "summary.json").unlink()
    page = render_report(run_dir)
    assert "summary.json is missing" in page
    data = json.loads(re.search(r'id="evalrun-data">(.*?)</script>', page, re.S).group(1))
    assert len(_rows(data)) == 8
    assert 'id=heatmap' in page


def test_regression_section_only_when_summary_has_one() -> None:
    base = {"experiment": {"verdict": {"gated": False}}, "variants": [], "tasks": [],
            "rows": [], "details": [], "columns": []}
    assert "Regression gate" not in render_html(base)
    # the shape store/baseline.py writes (--eval-baseline-run)
    regression = {
        "baseline_run": "2026-01-01__00-00-00", "alpha": 0.05, "passed": False,
        "test": "one-sided test, paired by task", "regressed": ["v<1>"],
        "variants": [{"variant": "v<1>", "in_baseline": True, "n_tasks": 10, "base_rate": 0.8,
                      "cand_rate": 0.5, "diff": -0.3, "ci_low": -0.5, "ci_high": -0.1,
                      "p_value": 0.004, "regressed": True, "min_detectable_drop": 0.21,
                      "method": "exact", "alpha": 0.05}],
    }
    page = render_html({**base, "summary": {"regression": regression}})
    assert "Regression gate against run 2026-01-01__00-00-00" in page and "v&lt;1&gt;" in page
    assert "detectable drop" in page and "21.0 pp" in page and "REGRESSED" in page
    assert "gate failed" in page  # a regression fails the verdict
    page = render_html({**base, "experiment": {**base["experiment"], "regression": regression}})
    assert "Regression gate" in page


def test_ten_thousand_trials_stay_bounded(tmp_path: Path) -> None:
    """10,000 trials with 200 kB outputs and 100 kB diffs (2 GB of text): the page keeps a
    bounded share of each, and says so."""
    run_dir = write_run(tmp_path / "results")
    out = tmp_path / "big.html"
    write_report(run_dir, out)
    size = out.stat().st_size
    assert size < 40 * 1024 * 1024, size
    page = out.read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="evalrun-data">(.*?)</script>', page, re.S).group(1))
    assert len(_rows(data)) == 10_000
    last = json.loads(re.search(r'id="trial-9999">(.*?)</script>', page, re.S).group(1))
    limits = TextLimits.for_trials(10_000)
    assert last["output"]["cut"] and last["diff"]["cut"]
    assert len(last["output"]["text"].encode()) <= limits.output
    assert len(last["diff"]["text"].encode()) <= limits.diff
    assert "Texts are cut to keep this file small (10,000 trials)" in page


def test_limits_shrink_with_the_number_of_trials() -> None:
    small, big = TextLimits.for_trials(10), TextLimits.for_trials(10_000)
    assert small == TextLimits()
    assert big.per_trial * 10_000 <= 24 * 1024 * 1024 + 4 * 256 * 10_000
    assert big.output < small.output and big.diff < small.diff


# --------------------------------------------------------------------------------------------
# in Chromium


@needs_chromium
def test_screenshot_shows_the_report(suite: Suite) -> None:
    _, out, _ = report_of(suite)
    png = suite.root / "report.png"
    headless.screenshot(out.as_uri(), png)
    colours = headless.png_colours(png)
    assert len(colours) > 100, len(colours)  # text, tables, heat map: not a blank page
    heat = {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in HEAT}
    shown = {c for c in colours if c in heat}
    # base: good 100%, bad 0%, picky 0%; strong: picky 100%: both ends of the scale show
    assert {(0xF6, 0xB2, 0xAB), (0x7F, 0xD3, 0x9B)} <= shown, shown


@needs_chromium
def test_dom_after_the_script_holds_every_pass_rate_task_and_trial(suite: Suite) -> None:
    _, out, summary = report_of(suite)
    dom = headless.dump_dom(out.as_uri())
    assert re.search(r'data-ready-ms="\d+"', dom), "the page's script did not finish"
    exp = summary["experiments"][0]
    heat = dom.split('id="heatmap"', 1)[1].split("</table>", 1)[0]
    for v in exp["variants"]:
        assert f">{v['name']}</button><span class=\"sub\">{fmt_pct(v['pass_rate'])}" in heat
    for t in exp["tasks"]:
        assert f">{as_dom_text(t['name'])}</th>" in heat
    for c in exp["cells"]:
        assert f"{c['passed']}/{c['n']}" in heat
    rows = re.findall(r'<tr class="row[^"]*" data-i="\d+"><td class="l tri"><button', dom)
    assert len(rows) == 16  # 2 variants x 4 tasks x 2 trials, built by the script
    assert "trials 1\u201316 of 16" in dom


@needs_chromium
def test_no_request_leaves_the_file(suite: Suite) -> None:
    _, out, _ = report_of(suite)
    canary = suite.root / "canary.html"
    canary.write_text('<img src="http://evalrun-canary.invalid/x.png">')
    with headless.recording_proxy() as proxy:
        proxy_arg = [f"--proxy-server=127.0.0.1:{proxy.port}"]
        headless.dump_dom(canary.as_uri(), extra=proxy_arg)
        # the proxy sees a page's request: the check below can fail
        assert any("evalrun-canary.invalid" in r for r in proxy.page_requests()), proxy.requests
        proxy.requests.clear()
        headless.dump_dom(out.as_uri() + "#trial-0", extra=proxy_arg)
        assert proxy.page_requests() == []


@needs_chromium
def test_hostile_trial_output_does_not_execute(suite: Suite) -> None:
    run_dir, out, _ = report_of(suite)
    view = load_run(run_dir)
    hostile = [i for i, r in enumerate(view.rows) if view.tasks[r[1]] == HOSTILE_TASK]
    assert HOSTILE in view.details[hostile[0]]["output"]["text"]
    assert HOSTILE in view.details[hostile[0]]["diff"]["text"]
    dom = headless.dump_dom(f"{out.as_uri()}#trial-{hostile[0]}")
    assert re.search(r'data-ready-ms="\d+"', dom)
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title and "pwned" not in title.group(1)
    main = dom.split("<main>", 1)[1].split("</main>", 1)[0]
    assert "<img" not in main and "<b>bold" not in main and "<script" not in main
    # the opened trial shows the text as text: in its output and in its diff
    detail = main.split('class="detail"', 1)[1]
    assert detail.count(as_dom_text(HOSTILE)) >= 2, detail[:3000]


# --------------------------------------------------------------------------------------------
# accessibility (axe-core in Chromium), keyboard, widths, paging, deep links: driven through the
# DevTools protocol (tests/cdp.py) as a user would, with real key presses

#: EVALRUN_REQUIRE_AXE=1 (CI, after tests/tools/install_axe_core.sh): a missing axe-core fails.
needs_axe = pytest.mark.skipif(
    not AXE_JS.is_file() and not os.environ.get("EVALRUN_REQUIRE_AXE"), reason=AXE_SKIP_REASON
)
SEVERE = ("critical", "serious")


def severe(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in violations if v["impact"] in SEVERE]


@pytest.fixture(scope="module")
def big_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5,000 trials (4 variants x 50 tasks x 25 trials), small texts."""
    root = tmp_path_factory.mktemp("big")
    run_dir = write_run(root / "results", trials=25, output_bytes=3000, diff_bytes=2000)
    out = root / "big.html"
    write_report(run_dir, out)
    return out


@needs_chromium
@needs_axe
def test_axe_reports_what_it_should_on_a_known_bad_page(tmp_path: Path) -> None:
    """The harness itself: an unlabeled ``<svg role="img">`` and ``aria-expanded`` on a table
    row (the report's old faults) are reported as serious."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html lang=en><head><title>t</title></head><body><main>"
        '<svg role="img" width="10" height="10"><circle cx="5" cy="5" r="4"/></svg>'
        '<table><tr><th>h</th></tr><tr aria-expanded="false"><td>x</td></tr></table>'
        "</main></body></html>"
    )
    with Browser() as b:
        b.call("Page.navigate", url=page.as_uri())
        b.wait_for("document.readyState === 'complete' && !!document.querySelector('svg')")
        found = {v["id"] for v in severe(b.run_axe())}
    assert {"svg-img-alt", "aria-conditional-attr"} <= found, found


@needs_chromium
@needs_axe
def test_axe_finds_no_serious_violation_on_a_24_trial_report(suite: Suite) -> None:
    run_dir = run_suite(suite, trials=3)
    out = suite.root / "report.html"
    write_report(run_dir, out)
    with Browser(width=1024) as b:
        b.open(out.as_uri())
        assert b.js("document.querySelectorAll('#trial-rows tr.row').length") == 24
        assert severe(b.run_axe()) == []
        b.js("document.querySelector('#trial-rows button.open').click()")
        b.wait_for("!!document.querySelector('#trial-rows tr.detail')")
        assert severe(b.run_axe()) == []


@needs_chromium
@needs_axe
def test_axe_finds_no_serious_violation_on_5000_trials(big_report: Path) -> None:
    with Browser(width=1024) as b:
        b.open(big_report.as_uri() + "#trial-4999")
        b.wait_for("!!document.getElementById('detail-4999')")
        assert severe(b.run_axe()) == []


def focused(b: Browser) -> str:
    value: str = b.js(
        "(function (e) { return e === document.body ? 'BODY' : e.tagName + '#' + e.id + '.' + "
        "e.className + '@' + (e.closest('th') ? e.closest('th').getAttribute('data-sort') : '')"
        "; })(document.activeElement)"
    )
    return value


def tab_to(b: Browser, predicate: str, *, limit: int = 200) -> None:
    """Press Tab until ``predicate`` (JS over ``e``, the focused element) holds."""
    for _ in range(limit):
        b.press("Tab")
        if b.js(f"(function (e) {{ return !!({predicate}); }})(document.activeElement)"):
            return
    raise AssertionError(f"Tab never reached {predicate}")


@needs_chromium
def test_keyboard_sorts_opens_rows_and_names_heat_cells(suite: Suite) -> None:
    _, out, summary = report_of(suite)
    with Browser(width=1024) as b:
        b.open(out.as_uri())
        # sort headers: reached by Tab, operated by Enter, state in aria-sort
        tab_to(b, "e.closest('th[data-sort=status]')")
        b.press("Enter")
        b.wait_for("document.querySelector('th[data-sort=status]').getAttribute('aria-sort')"
                   " === 'ascending'")
        statuses = b.js("[...document.querySelectorAll('#trial-rows td.st-failed, "
                        "#trial-rows td[class*=st-]')].map(td => td.textContent)")
        assert statuses == sorted(statuses)
        b.press("Enter")
        b.wait_for("document.querySelector('th[data-sort=status]').getAttribute('aria-sort')"
                   " === 'descending'")
        assert "@status" in focused(b)
        # a row: Tab to its button, Enter opens it, focus stays on it
        tab_to(b, "e.matches('#trial-rows button.open')")
        before = focused(b)
        b.press("Enter")
        b.wait_for("!!document.querySelector('#trial-rows tr.detail')")
        assert focused(b) == before and before.startswith("BUTTON#open-")
        assert b.js("document.activeElement.getAttribute('aria-expanded')") == "true"
        b.press(" ")
        b.wait_for("!document.querySelector('#trial-rows tr.detail')")
        assert focused(b) == before
        # heat-map cells: the accessible name says variant and task
        tree = b.call("Accessibility.getFullAXTree")["nodes"]
        names = [
            str((n.get("name") or {}).get("value", ""))
            for n in tree
            if (n.get("role") or {}).get("value") == "button"
        ]
        for c in summary["experiments"][0]["cells"]:
            want = f"{c['variant']} / {c['task']}: {fmt_pct(c['pass_rate'])}"
            assert any(n.startswith(want) for n in names), (want, names)
        # Enter on a heat-map cell lists its trials and the focus follows to the first one
        b.js("document.querySelector('#heatmap button[data-v=strong][data-t=picky]').focus()")
        b.press("Enter")
        b.wait_for("document.activeElement.matches('#trial-rows button.open')")
        listed = b.js("[...document.querySelectorAll('#trial-rows tr.row')].map(tr => "
                      "tr.cells[0].textContent + '/' + tr.cells[1].textContent)")
        assert listed == ["strong/picky", "strong/picky"], listed


@needs_chromium
def test_fits_1024_to_1400_px_without_hiding_a_column(suite: Suite) -> None:
    run_dir = run_suite(suite, trials=3)
    out = suite.root / "report.html"
    write_report(run_dir, out)
    with Browser(width=1024) as b:
        b.open(out.as_uri())
        for width in (1024, 1152, 1280, 1400):
            b.call("Emulation.setDeviceMetricsOverride", width=width, height=900,
                   deviceScaleFactor=1, mobile=False)
            b.wait_for(f"window.innerWidth === {width}")
            over = b.js("[...document.querySelectorAll('.scroll')].filter(e => "
                        "e.scrollWidth > e.clientWidth + 1).map(e => e.getAttribute('aria-label'))")
            assert over == [], (width, over)
            assert b.js("document.documentElement.scrollWidth") <= width
            # the last column of every table (the Variants' cost) is inside the window
            right = b.js("Math.max(...[...document.querySelectorAll('table tr:first-child "
                         "> :last-child')].map(e => e.getBoundingClientRect().right))")
            assert right <= width, (width, right)


@needs_chromium
def test_pages_directly_and_follows_the_hash_at_any_time(big_report: Path) -> None:
    with Browser(width=1280) as b:
        b.open(big_report.as_uri())
        assert b.js("document.getElementById('count').textContent") == (
            "trials 1\u201350 of 5,000")
        b.js("document.getElementById('last').focus()")
        b.press("Enter")
        b.wait_for("document.getElementById('count').textContent.startsWith('trials 4,951')")
        assert b.js("document.getElementById('page').value") == "100"
        b.js("document.getElementById('first').focus()")
        b.press("Enter")
        b.wait_for("document.getElementById('count').textContent.startsWith('trials 1\u2013')")
        # type a page number
        b.js("document.getElementById('page').focus(); document.getElementById('page').select()")
        b.call("Input.insertText", text="37")
        b.press("Enter")
        b.wait_for("document.getElementById('count').textContent.startsWith('trials 1,801')")
        # a link to a trial followed after the page loaded
        b.js("location.hash = '#trial-4321'")
        b.wait_for("!!document.getElementById('detail-4321')")
        assert b.js("document.activeElement.id") == "open-4321"
        b.js("location.hash = '#trial-7'")
        b.wait_for("!!document.getElementById('detail-7')")


@needs_chromium
def test_preset_transcript_and_attempts_read_as_text(suite: Suite) -> None:
    run_dir = run_suite(suite, trials=1)
    trial = suite.trial_dir("base", "good", 1)
    stream = '{"type":"assistant","message":{"content":[{"type":"text","text":"hi"}]}}\n'
    (trial / STDOUT).write_text(stream * 5)
    (trial / "session.md").write_text("# Session\n\n**assistant**: I wrote answer.txt.\n")
    meta = json.loads((trial / "meta.json").read_text())
    meta["attempts"] = []
    (trial / "meta.json").write_text(json.dumps(meta))
    other = suite.trial_dir("strong", "good", 1)
    meta = json.loads((other / "meta.json").read_text())
    meta["attempts"] = [{"attempt": 1, "status": "error", "message": "worker died",
                         "rerun_reason": "--eval-retry"}]
    (other / "meta.json").write_text(json.dumps(meta))
    view = load_run(run_dir)
    index = {(view.variants[r[0]], view.tasks[r[1]]): i for i, r in enumerate(view.rows)}
    out = suite.root / "report.html"
    write_report(run_dir, out)
    with Browser() as b:
        b.open(f"{out.as_uri()}#trial-{index[('base', 'good')]}")
        detail = b.wait_for("document.querySelector('#trial-rows tr.detail')?.innerText")
        assert "Agent transcript (session.md)" in detail and "I wrote answer.txt." in detail
        assert '"type":"assistant"' not in detail
        assert "earlier attempts" not in detail and "[]" not in detail
        b.js(f"location.hash = '#trial-{index[('strong', 'good')]}'")
        detail = b.wait_for(f"document.getElementById('detail-{index[('strong', 'good')]}')"
                            "?.innerText")
        assert "earlier attempts" in detail and "#1 error: worker died" in detail
        assert "Agent output" in detail  # no session.md: stdout.txt


def test_regression_banner_and_detectable_drop_read_plainly() -> None:
    base = {"variants": [], "tasks": [], "rows": [], "details": [], "columns": []}
    row = {"variant": "v", "in_baseline": True, "n_tasks": 3, "base_rate": 1.0,
           "cand_rate": 0.0, "diff": -1.0, "ci_low": -1.0, "ci_high": -0.6,
           "p_value": 0.0004, "regressed": True, "min_detectable_drop": None,
           "method": "exact", "alpha": 0.05}
    regression = {"baseline_run": "b", "alpha": 0.05, "passed": False, "regressed": ["v"],
                  "test": "one-sided test, paired by task", "variants": [row]}
    verdict = {"gated": True, "gated_cells": 0, "failures": [], "passed": False,
               "regressions": ["v"]}
    page = render_html({**base, "experiment": {"verdict": verdict, "regression": regression}})
    banner = page.split("id=verdict>", 1)[1].split("</div>", 1)[0]
    assert "gate failed" in banner and "all 0" not in banner and "regression" in banner
    table = page.split("id=regression>", 1)[1]
    assert "REGRESSED" in table and "none at 80% power" not in table
    assert "this drop was still found" in table
    # passed: no regression, no cell gate
    ok_row = {**row, "cand_rate": 1.0, "diff": 0.0, "ci_low": -0.2, "ci_high": 0.2,
              "p_value": 0.9, "regressed": False}
    ok = {**regression, "passed": True, "regressed": [], "variants": [ok_row]}
    page = render_html({**base, "experiment": {
        "verdict": {**verdict, "passed": True, "regressions": []}, "regression": ok}})
    banner = page.split("id=verdict>", 1)[1].split("</div>", 1)[0]
    assert "gate passed" in banner and "gate failed" not in banner and "all 0" not in banner
    assert "too few tasks for 80% power" in page


@pytest.mark.slow
@needs_chromium
def test_a_real_claude_code_trial_shows_its_session_md(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """The claude-code preset, the real CLI against the mock model: the report's transcript is
    the trial's session.md, not the CLI's stream-json (stdout.txt)."""
    exe = require_cli("claude")
    with MockLLM(edit_script("claude"), log_path=tmp_path / "e.jsonl") as m1, \
            MockLLM(refuse_script(), log_path=tmp_path / "r.jsonl") as m2:
        (pytester.path / "claude.eval.yaml").write_text(
            yaml.safe_dump(experiment("claude", exe, m1, m2)))
        pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    (run_dir,) = pytester.path.glob("results/presets-claude/*")
    view = load_run(run_dir)
    edit = next(i for i, r in enumerate(view.rows) if view.tasks[r[1]] == "edit")
    trial = Path(view.details[edit]["dir"])
    session = (trial / "session.md").read_text(encoding="utf-8")
    stream = (trial / STDOUT).read_text(encoding="utf-8")
    assert session.strip() and stream.lstrip().startswith("{")
    out = tmp_path / "report.html"
    write_report(run_dir, out)
    with Browser() as b:
        b.open(f"{out.as_uri()}#trial-{edit}")
        shown = b.wait_for(f"document.querySelector('#detail-{edit} pre:nth-of-type(2)')"
                           "?.textContent")
        heads = b.js(f"[...document.querySelectorAll('#detail-{edit} h4')].map(h => h.innerText)")
    assert any(h.startswith("Agent transcript (session.md)") for h in heads), heads
    last = [ln for ln in session.splitlines() if ln.strip()][-1]
    assert last.strip() in shown
    assert '"type":' not in shown
