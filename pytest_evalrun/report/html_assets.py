"""The HTML report's inline style sheet and script (no external resource of any kind).

The script reads the page's data from ``<script type="application/json">`` blocks and builds
the trial table: filters, paging, sorting, and a trial's details (prompt, output, diff, verify's
output) only when its row is opened. It writes text with ``textContent`` only, never as HTML.
"""

from __future__ import annotations

#: Heat-map colours from 0% to 100% pass rate (11 steps): soft red, amber, soft green.
HEAT = (
    "#f6b2ab",
    "#f7bea5",
    "#f8ca9f",
    "#f9d69a",
    "#fae294",
    "#fbe98f",
    "#e2e690",
    "#c9e292",
    "#b0dd95",
    "#97d898",
    "#7fd39b",
)

CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#fff;--soft:#f6f8fa;
--pass:#1a7f37;--fail:#cf222e;--timeout:#bc4c00;--error:#8250df;--accent:#0969da}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,
sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1240px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:16px 0 6px}
p{margin:6px 0}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;
font-size:12.5px}
.muted{color:var(--muted)}
.vh{position:absolute;width:1px;height:1px;margin:-1px;padding:0;overflow:hidden;
clip:rect(0 0 0 0);white-space:nowrap;border:0}
.small{font-size:12px}
.meta{color:var(--muted);margin:2px 0}
.meta span+span:before{content:"\\00b7";color:var(--muted);padding:0 8px}
.pill{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;font-weight:600;
border:1px solid transparent;vertical-align:2px}
.pill.passed,.st-passed{color:var(--pass)}
.pill.failed,.st-failed{color:var(--fail)}
.pill.timeout,.st-timeout{color:var(--timeout)}
.pill.error,.st-error{color:var(--error)}
.pill.passed{background:#dafbe1;border-color:#aceebb}
.pill.failed{background:#ffebe9;border-color:#ffcecb}
.pill.timeout{background:#fff1e5;border-color:#ffd8b5}
.pill.error{background:#fbefff;border-color:#e8d5ff}
.pill.neutral{background:var(--soft);border-color:var(--line);color:var(--muted)}
.verdict{display:flex;gap:12px;align-items:center;padding:10px 14px;border-radius:8px;
border:1px solid var(--line);background:var(--soft);margin:14px 0}
.verdict.ok{background:#dafbe1;border-color:#aceebb}
.verdict.bad{background:#ffebe9;border-color:#ffcecb}
.verdict b{font-size:15px}
table{border-collapse:collapse}
.tbl{width:100%;margin:4px 0}
.tbl th,.tbl td{padding:5px 6px;border-bottom:1px solid var(--line);text-align:right;
white-space:nowrap}
.tbl td{font-size:13px}
.tbl td .wrap{white-space:normal}
.tbl th{font-weight:600;color:var(--muted);font-size:12px;background:var(--soft);
white-space:normal;vertical-align:bottom;min-width:3em}
.tbl th:first-child,.tbl td:first-child{text-align:left}
.tbl td.l,.tbl th.l{text-align:left}
.scroll{overflow-x:auto}
.heat{border-collapse:separate;border-spacing:3px}
.heat th{font-size:12px;font-weight:600;padding:4px 8px;text-align:center;vertical-align:bottom}
.heat th.task{text-align:left;font-weight:500;max-width:280px;overflow:hidden;
text-overflow:ellipsis;white-space:nowrap;vertical-align:middle;padding-right:14px}
.heat th .sub{display:block;font-weight:400;color:var(--muted)}
.heat td{min-width:92px;height:44px;text-align:center;border-radius:6px;padding:0}
.heat td button{all:unset;display:block;width:100%;height:100%;padding:4px 6px;cursor:pointer;
border-radius:6px;box-sizing:border-box}
.heat td button:hover,.heat td button:focus-visible{outline:2px solid var(--accent)}
.heat td b{display:block;font-size:14px}
.heat td small{color:#3d444d;font-size:11.5px}
.heat td.none{background:var(--soft);color:var(--muted)}
.heat td.below{box-shadow:inset 0 0 0 2px var(--fail)}
.heat td.min{background:none;color:var(--muted);font-size:12px;min-width:60px}
.legend{display:flex;align-items:center;gap:6px;font-size:12px;color:var(--muted);margin:6px 0;
flex-wrap:wrap}
.legend i{display:inline-block;width:18px;height:12px;border-radius:2px}
.legend .gap{width:14px}
HEATCLASSES
svg.ci{vertical-align:middle}
details.flaky{margin:8px 0}
details.flaky summary{cursor:pointer}
details.flaky p{margin:4px 0 0 16px;color:var(--muted)}
.note{border-left:3px solid #d4a72c;background:#fff8c5;padding:6px 10px;margin:8px 0;
border-radius:0 6px 6px 0}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:4px 0}
.kv dt{color:var(--muted)}
.kv dd{margin:0;overflow-wrap:anywhere}
.filters{display:flex;gap:10px;flex-wrap:wrap;align-items:center;margin:10px 0;
padding:8px 10px;background:var(--soft);border:1px solid var(--line);border-radius:8px}
.filters label{font-size:12px;color:var(--muted);display:flex;gap:5px;align-items:center}
select,input,button.btn{font:inherit;font-size:13px;padding:3px 6px;border:1px solid var(--line);
border-radius:6px;background:#fff;color:var(--fg)}
button.btn{cursor:pointer;padding:3px 10px}
button.btn:disabled{opacity:.45;cursor:default}
.pager{display:flex;gap:8px;align-items:center;margin-left:auto}
#trials tbody tr.row{cursor:pointer}
#trials button.open{all:unset;cursor:pointer}
#trials button.open:focus-visible{outline:2px solid var(--accent);outline-offset:2px}
#trials th button.sortbtn{all:unset;cursor:pointer}
#trials th button.sortbtn:focus-visible{outline:2px solid var(--accent);outline-offset:2px}
.pager input{width:5em}
.scroll:focus-visible{outline:2px solid var(--accent)}
#trials tbody tr.row:hover{background:#f3f6fa}
#trials tbody tr.row.open{background:#eef4ff}
#trials td.msg{text-align:left;white-space:normal;max-width:420px;color:var(--muted);
overflow-wrap:anywhere}
#trials th.sort{cursor:pointer}
#trials th.sort button:after{content:" \\2195";color:#aab3bd}
#trials th.asc button:after{content:" \\2191";color:var(--fg)}
#trials th.desc button:after{content:" \\2193";color:var(--fg)}
#trials td.tri:before{content:"\\25b8 ";color:var(--muted)}
#trials tr.open td.tri:before{content:"\\25be "}
tr.detail>td{background:#fbfcfd;text-align:left;white-space:normal;padding:10px 14px 16px}
.detail h4{margin:12px 0 4px;font-size:13px}
.detail h4 .muted{font-weight:400}
.detail pre{margin:0;padding:8px 10px;background:var(--soft);border:1px solid var(--line);
border-radius:6px;max-height:420px;overflow:auto;white-space:pre-wrap;overflow-wrap:anywhere}
.detail pre:focus-visible{outline:2px solid var(--accent)}
.detail pre.empty{color:var(--muted);font-style:italic}
.cut{color:var(--timeout);font-size:12px}
.d-add{color:#116329;background:#dafbe1;display:block}
.d-del{color:#82071e;background:#ffebe9;display:block}
.d-hunk{color:#0550ae;background:#ddf4ff;display:block}
.d-file{color:var(--fg);font-weight:600;display:block}
.cols2{display:grid;grid-template-columns:1fr 1fr;gap:0 18px}
@media (max-width:900px){.cols2{grid-template-columns:1fr}}
@media (max-width:1100px){main{padding:16px 12px 40px}}
footer{margin-top:36px;color:var(--muted);font-size:12px}
noscript div{padding:8px;background:#fff8c5}
"""


def heat_classes() -> str:
    """``.h0`` ... ``.h10``: the heat-map cell backgrounds."""
    return "".join(f".h{i}{{background:{c}}}" for i, c in enumerate(HEAT))


def style_sheet() -> str:
    return CSS.replace("HEATCLASSES", heat_classes())


JS = r"""
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var D = JSON.parse($("evalrun-data").textContent);
  var C = {};
  D.columns.forEach(function (c, i) { C[c] = i; });
  var PAGE = 50;
  var S = { variant: "", task: "", status: "", q: "", page: 0, sort: null, dir: 1, open: {} };
  var shown = [];

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function num(v) { return v === null || v === undefined ? "-" : v.toLocaleString("en-US"); }
  function dur(s) {
    if (s === null || s === undefined) return "-";
    if (s < 59.95) return s.toFixed(1) + "s";
    var t = Math.round(s), m = Math.floor(t / 60);
    if (m < 60) return m + "m" + String(t % 60).padStart(2, "0") + "s";
    return Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m";
  }
  function cost(c) {
    if (c === null || c === undefined) return "-";
    if (typeof c !== "number" || !isFinite(c) || c < 0) return "invalid";
    if (c === 0 || c >= 0.1) return "$" + c.toFixed(2);
    if (c < 0.0001) return "<$0.0001";
    return "$" + c.toPrecision(2);
  }
  function orDash(v) { return v === null || v === undefined ? "-" : String(v); }
  function reward(r) { return r === null || r === undefined ? "-" : String(+r.toFixed(3)); }
  function bytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1048576).toFixed(1) + " MiB";
  }
  // Terminal colour codes are dropped; other control characters are shown as U+FFFD.
  function clean(s) {
    return s.replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]/g, "").replace(/\r\n?/g, "\n")
      .replace(/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]/g, "\ufffd");
  }

  function options(select, values, all) {
    select.appendChild(el("option", null, all)).value = "";
    values.forEach(function (v) { select.appendChild(el("option", null, v)).value = v; });
  }
  var statuses = [];
  D.rows.forEach(function (r) {
    if (statuses.indexOf(r[C.status]) < 0) statuses.push(r[C.status]);
  });
  var order = ["passed", "failed", "timeout", "error", "running", "unknown"];
  statuses.sort(function (a, b) { return order.indexOf(a) - order.indexOf(b); });
  options($("f-variant"), D.variants, "all variants");
  options($("f-task"), D.tasks, "all tasks");
  options($("f-status"), statuses, "all statuses");
  $("f-status").appendChild(el("option", null, "not passed")).value = "!passed";

  function keep(r) {
    if (S.variant && D.variants[r[C.variant]] !== S.variant) return false;
    if (S.task && D.tasks[r[C.task]] !== S.task) return false;
    if (S.status === "!passed") { if (r[C.status] === "passed") return false; }
    else if (S.status && r[C.status] !== S.status) return false;
    if (S.q && r[C.message].toLowerCase().indexOf(S.q) < 0) return false;
    return true;
  }
  function filter() {
    shown = [];
    for (var i = 0; i < D.rows.length; i++) if (keep(D.rows[i])) shown.push(i);
    if (S.sort !== null) {
      var k = C[S.sort];
      shown.sort(function (a, b) {
        var x = D.rows[a][k], y = D.rows[b][k];
        if (x === y) return a - b;
        if (x === null) return 1;
        if (y === null) return -1;
        return (x < y ? -1 : 1) * S.dir;
      });
    }
    S.page = 0;
    render();
  }

  function cell(tr, text, cls) { return tr.appendChild(el("td", cls, text)); }
  function render() {
    var body = $("trial-rows");
    body.textContent = "";
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    if (S.page >= pages) S.page = pages - 1;
    var start = S.page * PAGE, end = Math.min(shown.length, start + PAGE);
    for (var j = start; j < end; j++) {
      var i = shown[j], r = D.rows[i];
      var tr = el("tr", "row" + (S.open[i] ? " open" : ""));
      tr.setAttribute("data-i", String(i));
      // the row opens by its first cell's button (Enter, Space or a click anywhere on it)
      var b = cell(tr, null, "l tri").appendChild(el("button", "open", D.variants[r[C.variant]]));
      b.type = "button";
      b.id = "open-" + i;
      b.setAttribute("aria-expanded", S.open[i] ? "true" : "false");
      if (S.open[i]) b.setAttribute("aria-controls", "detail-" + i);
      cell(tr, D.tasks[r[C.task]], "l");
      cell(tr, r[C.trial]);
      cell(tr, r[C.status], "l st-" + r[C.status]);
      cell(tr, reward(r[C.reward]));
      cell(tr, dur(r[C.duration]));
      cell(tr, num(r[C.input_tokens]) + " / " + num(r[C.output_tokens]));
      cell(tr, cost(r[C.cost_usd]));
      cell(tr, r[C.message], "msg");
      body.appendChild(tr);
      if (S.open[i]) body.appendChild(detailRow(i));
    }
    var total = D.rows.length;
    $("count").textContent = shown.length === 0 ? "no trial matches" :
      "trials " + (start + 1).toLocaleString("en-US") + "\u2013" + end.toLocaleString("en-US") +
      " of " + shown.length.toLocaleString("en-US") +
      (shown.length < total ? " (of " + total.toLocaleString("en-US") + ")" : "");
    $("first").disabled = $("prev").disabled = S.page === 0;
    $("last").disabled = $("next").disabled = S.page >= pages - 1;
    $("page").max = String(pages);
    $("page").value = String(S.page + 1);
    $("pages").textContent = "of " + pages.toLocaleString("en-US");
    scrollRegions();
  }
  function goPage(p) {
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    S.page = Math.max(0, Math.min(pages - 1, p));
    render();
  }
  // a region that scrolls sideways is focusable, so that keys can scroll it
  function scrollRegions() {
    Array.prototype.forEach.call(document.querySelectorAll(".scroll"), function (d) {
      if (d.scrollWidth > d.clientWidth + 1) d.tabIndex = 0; else d.removeAttribute("tabindex");
    });
  }
  window.addEventListener("resize", scrollRegions);

  function textBlock(box, title, t, empty) {
    var h = box.appendChild(el("h4", null, title + " "));
    if (t.cut) {
      h.appendChild(el("span", "cut", (t.keep === "head" ? "first " : "last ") +
        bytes(new Blob([t.text]).size) + " of " + bytes(t.size) + " shown"));
    }
    var pre = box.appendChild(el("pre"));
    if (!t.text) { pre.className = "empty"; pre.textContent = empty; return pre; }
    pre.tabIndex = 0;  // it scrolls: keys can scroll it
    pre.textContent = clean(t.text);
    return pre;
  }
  function diffBlock(box, t) {
    var pre = textBlock(box, "Diff", t, "no change");
    if (!t.text) return;
    pre.textContent = "";
    clean(t.text).split("\n").forEach(function (line) {
      var c = null;
      if (/^(diff --git|index |--- |\+\+\+ |new file|deleted file|similarity|rename )/.test(line))
        c = "d-file";
      else if (line.charAt(0) === "+") c = "d-add";
      else if (line.charAt(0) === "-") c = "d-del";
      else if (line.slice(0, 2) === "@@") c = "d-hunk";
      if (c) pre.appendChild(el("span", c, line));
      else pre.appendChild(document.createTextNode(line + "\n"));
    });
  }
  function kv(box, pairs) {
    var dl = box.appendChild(el("dl", "kv"));
    pairs.forEach(function (p) {
      if (p[1] === undefined || p[1] === null || p[1] === "") return;
      dl.appendChild(el("dt", null, p[0]));
      if (typeof p[1] === "object" && !Object.keys(p[1]).length) return;
      var v = typeof p[1] === "object" ? JSON.stringify(p[1]) : p[1];
      dl.appendChild(el("dd", p[2] || null, v));
    });
  }
  function attempts(a) {
    if (!Array.isArray(a) || !a.length) return null;
    return a.map(function (x) {
      x = x || {};
      return "#" + orDash(x.attempt) + " " + orDash(x.status) +
        (x.message ? ": " + x.message : "") +
        (x.rerun_reason ? " (run again: " + x.rerun_reason + ")" : "");
    }).join("; ");
  }
  function detailRow(i) {
    var tr = el("tr", "detail"), td = el("td");
    tr.id = "detail-" + i;
    td.colSpan = 9;
    tr.appendChild(td);
    var box = td.appendChild(el("div", "detail"));
    var node = $("trial-" + i);
    if (!node) { box.appendChild(el("p", "muted", "no details recorded")); return tr; }
    var d = JSON.parse(node.textContent), m = d.meta || {}, x = d.metrics || {};
    var cols = box.appendChild(el("div", "cols2"));
    var left = cols.appendChild(el("div")), right = cols.appendChild(el("div"));
    kv(left, [
      ["status", m.status], ["error kind", m.error_kind], ["message", m.message],
      ["reward", m.reward === undefined ? null : reward(m.reward)],
      ["rewards", m.rewards && Object.keys(m.rewards).length ? m.rewards : null],
      ["duration", m.duration === undefined ? null : dur(m.duration) + "  (setup " +
        dur(m.setup_duration) + ", agent " + dur(m.agent_duration) + ", verify " +
        dur(m.verify_duration) + ")"],
      ["exit statuses", "agent " + orDash(m.agent_exit) + ", verify " + orDash(m.verify_exit)],
      ["attempt", m.attempt], ["earlier attempts", attempts(m.attempts)],
      ["resumed", m.resumed ? "yes (outcome from an earlier session)" : null],
      ["crashed", m.crashed ? "yes (its worker died)" : null]
    ]);
    kv(right, [
      ["tokens in/out/cache", num(x.input_tokens) + " / " + num(x.output_tokens) + " / " +
        num(x.cache_tokens)],
      ["cost", cost(x.cost_usd === undefined ? null : x.cost_usd)],
      ["tokens and cost from", !x.source ? null : x.source === "gateway" ? "gateway (counted " +
        "by the plugin)" : x.source === "cli" ? "CLI records (read by the plugin)" :
        "self-reported (the agent's word)"],
      ["the CLI's own figures", x.cli ? num(x.cli.input_tokens) + " / " +
        num(x.cli.output_tokens) + " / " + num(x.cli.cache_tokens) + ", " +
        cost(x.cli.cost_usd === undefined ? null : x.cli.cost_usd) +
        (x.cli.difference ? " (" + x.cli.difference + ")" : "") : null],
      ["budget", x.budget && x.budget.stopped ? "ended the agent's calls: " + x.budget.stopped
        : null],
      ["model", x.model || m.model], ["seed", m.seed], ["worker", m.worker],
      ["started", m.started_at], ["node id", m.nodeid, "mono"],
      ["trial directory", d.dir, "mono"], ["jobs/ trial", m.pier_trial_dir, "mono"]
    ]);
    textBlock(box, "Prompt", D.prompts[d.prompt] || { text: "" }, "no prompt.md");
    textBlock(box, d.output_file === "session.md" ? "Agent transcript (session.md)" :
      "Agent output", d.output, "no output");
    diffBlock(box, d.diff);
    var vexit = orDash(d.verify_exit);
    textBlock(box, "Verify output" + (vexit === "-" ? "" : " (exit " + vexit + ")"), d.verify,
      "no verify output");
    return tr;
  }

  $("trial-rows").addEventListener("click", function (ev) {
    var tr = ev.target.closest("tr.row");
    if (!tr) return;
    var onButton = ev.target.closest("button.open");
    if (!onButton && window.getSelection && String(window.getSelection())) return;
    var i = +tr.getAttribute("data-i");
    if (S.open[i]) delete S.open[i]; else S.open[i] = true;
    render();
    $("open-" + i).focus();  // the table is rebuilt: focus stays on this trial's button
  });
  [["f-variant", "variant"], ["f-task", "task"], ["f-status", "status"]].forEach(function (p) {
    $(p[0]).addEventListener("change", function () { S[p[1]] = this.value; filter(); });
  });
  $("f-q").addEventListener("input", function () { S.q = this.value.toLowerCase(); filter(); });
  $("first").addEventListener("click", function () { goPage(0); });
  $("prev").addEventListener("click", function () { goPage(S.page - 1); });
  $("next").addEventListener("click", function () { goPage(S.page + 1); });
  $("last").addEventListener("click", function () { goPage(Infinity); });
  $("page").addEventListener("change", function () {
    var p = parseInt(this.value, 10);
    if (p > 0) goPage(p - 1); else render();
  });
  $("f-reset").addEventListener("click", function () {
    S.variant = S.task = S.status = S.q = "";
    ["f-variant", "f-task", "f-status", "f-q"].forEach(function (id) { $(id).value = ""; });
    filter();
  });
  Array.prototype.forEach.call(document.querySelectorAll("#trials th[data-sort]"), function (th) {
    th.classList.add("sort");
    th.querySelector("button").addEventListener("click", function () {
      var k = th.getAttribute("data-sort");
      if (S.sort === k) S.dir = -S.dir; else { S.sort = k; S.dir = 1; }
      Array.prototype.forEach.call(document.querySelectorAll("#trials th"), function (h) {
        h.classList.remove("asc", "desc");
        h.removeAttribute("aria-sort");
      });
      th.classList.add(S.dir > 0 ? "asc" : "desc");
      th.setAttribute("aria-sort", S.dir > 0 ? "ascending" : "descending");
      filter();
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("[data-v]"), function (b) {
    b.addEventListener("click", function () {
      S.variant = b.getAttribute("data-v");
      S.task = b.getAttribute("data-t") || "";
      S.status = "";
      $("f-variant").value = S.variant;
      $("f-task").value = S.task;
      $("f-status").value = "";
      filter();
      // the focus follows to the listed trials (the first one's button)
      var first = document.querySelector("#trial-rows button.open");
      if (first) first.focus();
      $("trials").scrollIntoView();
    });
  });
  filter();
  // report.html#trial-12 opens trial 12 (rows are numbered from 0 in the file's order), on
  // load and whenever the hash changes
  function openHash() {
    var m = /^#trial-(\d+)$/.exec(location.hash);
    if (!m || +m[1] >= D.rows.length) return;
    var i = +m[1], r = D.rows[i];
    S.variant = $("f-variant").value = D.variants[r[C.variant]];
    S.task = $("f-task").value = D.tasks[r[C.task]];
    S.status = $("f-status").value = "";
    S.q = $("f-q").value = "";
    filter();
    S.page = Math.floor(shown.indexOf(i) / PAGE);
    S.open[i] = true;
    render();
    $("open-" + i).focus();
    $("open-" + i).scrollIntoView();
  }
  window.addEventListener("hashchange", openHash);
  openHash();
  // when the page became usable, in ms since navigation started (bench/bench_html.py reads it)
  document.documentElement.setAttribute("data-ready-ms", String(Math.round(performance.now())));
})();
"""
