"""summary.md as GitHub shows it in a step summary: rendered with cmark-gfm (GitHub's own
markdown library) and measured in headless Chromium at 880 px, GitHub's step-summary column,
with GitHub's table CSS (``display: block; width: max-content; max-width: 100%;
overflow: auto``): no table may scroll sideways (a column cut off), every variant and column
must be on the page, and no runner's absolute path may be shown.

Skipped, with the reason, where cmarkgfm or Chromium is absent (CI installs both).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import headless
import pytest
from conftest import Suite
from headless import CHROMIUM, SKIP_REASON

from pytest_evalrun.report.markdown import render_markdown, shown_path

cmarkgfm = pytest.importorskip("cmarkgfm", reason="pip install cmarkgfm (the test extra)")

#: GitHub's markdown-body rules that decide a table's width (github-markdown-css).
GITHUB_CSS = """
body { margin: 0; }
.markdown-body { width: 880px; font-family: -apple-system, BlinkMacSystemFont, "Segoe UI",
  "Noto Sans", Helvetica, Arial, sans-serif; font-size: 14px; line-height: 1.5;
  word-wrap: break-word; }
.markdown-body table { border-spacing: 0; border-collapse: collapse; display: block;
  width: max-content; max-width: 100%; overflow: auto; font-variant: tabular-nums; }
.markdown-body table th { font-weight: 600; }
.markdown-body table th, .markdown-body table td { padding: 6px 13px;
  border: 1px solid #d1d9e0; }
"""

MEASURE = """
<script>
window.addEventListener("load", () => {
  const tables = [...document.querySelectorAll("table")].map(t => ({
    scroll: t.scrollWidth, client: t.clientWidth,
    header_lines: Math.max(...[...t.querySelectorAll("th")].map(
      th => Math.round((th.getBoundingClientRect().height - 12) / 21))),
    headers: [...t.querySelectorAll("th")].map(th => th.textContent),
  }));
  const out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify(tables);
  document.body.appendChild(out);
});
</script>
"""

#: Eight long variant names, as a model x setting sweep names them.
VARIANTS = [
    f"{model}-{setting}"
    for model in ("claude-sonnet-4-5-20250929", "gpt-5-codex-high-reasoning")
    for setting in ("with-skills-and-mcp-tools", "baseline-no-tools",
                    "with-memory-file-v2", "strict-sandbox-readonly")
]  # fmt: skip


def measure(markdown: str, tmp: Path) -> list[dict[str, Any]]:
    body = cmarkgfm.github_flavored_markdown_to_html(markdown)
    page = tmp / "step-summary.html"
    page.write_text(
        f"<!doctype html><meta charset=utf-8><style>{GITHUB_CSS}</style>"
        f"<article class=markdown-body>{body}</article>{MEASURE}",
        encoding="utf-8",
    )
    dom = headless.dump_dom(page.as_uri())
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    tables: list[dict[str, Any]] = json.loads(html.unescape(found.group(1)))
    return tables


@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
def test_summary_md_fits_githubs_step_summary_column(suite: Suite) -> None:
    suite.experiment(
        variants={v: {} for v in VARIANTS},
        tasks=[{**t, "min_pass_rate": 0.5} for t in
               [{"name": "good-with-a-long-task-name", "prompt": "WRITE answer.txt ok",
                 "fixture": "fixtures/basic", "verify": "grep -q ok answer.txt"},
                {"name": "bad", "prompt": "WRITE answer.txt nope", "fixture": "fixtures/basic",
                 "verify": "grep -q ok answer.txt"}]],
        trials=1,
    )  # fmt: skip
    result = suite.pytester.runpytest_subprocess("-n", "2")
    assert result.parseoutcomes().get("passed") == len(VARIANTS), result.stdout.str()[-3000:]
    (run_dir,) = suite.run_dirs()
    markdown = (run_dir / "summary.md").read_text(encoding="utf-8")

    # no absolute path of the runner, in summary.md or the terminal's "where the results are"
    assert str(suite.root) not in markdown
    where = [line for line in result.stdout.lines if line.startswith("results: ")]
    assert where == [f"results: {run_dir.relative_to(suite.root)}; jobs: jobs"]
    assert "results/exp/" in markdown

    tables = measure(markdown, suite.root)
    assert tables
    cut = [(t["headers"], t["scroll"], t["client"]) for t in tables if t["scroll"] > t["client"]]
    assert cut == [], cut
    assert all(t["header_lines"] <= 2 for t in tables), [
        (t["headers"], t["header_lines"]) for t in tables
    ]
    headers = [h for t in tables for h in t["headers"]]
    # every variant is a column of the task table, and a row of the variant tables
    for variant in VARIANTS:
        assert variant in headers, variant
    body = cmarkgfm.github_flavored_markdown_to_html(markdown)
    for column in ("pass rate", "passed/judged", "timeouts", "errors", "cost", "min pass rate"):
        assert f">{column}</th>" in body, column


def test_a_table_narrow_enough_stays_one_table() -> None:
    from pytest_evalrun.report.markdown import _md_table

    assert len([line for line in _md_table(["a", "b"], "lr", [["x", "1"]]) if line == ""]) == 0
    wide = _md_table(["task", *(f"v{i}" * 12 for i in range(8))], "l" + "r" * 8,
                     [["t", *["1/1 (100%)"] * 8]])  # fmt: skip
    tables = "\n".join(wide).split("\n\n")
    assert len(tables) > 1
    assert all(t.startswith("| task |") for t in tables)


def test_shown_path_is_never_absolute() -> None:
    assert shown_path("/home/runner/work/x/results/exp/20260101-abc", 3) == (
        "results/exp/20260101-abc"
    )
    assert shown_path("/srv/jobs") == "jobs"
    assert shown_path("results/exp/r", 3) == "results/exp/r"
    assert shown_path("/", 3) == "."


def test_render_markdown_of_an_old_summary_keeps_working() -> None:
    summary = {"verdict": {"gated": False}, "experiments": []}
    assert render_markdown(summary).startswith("# Evaluation results")
