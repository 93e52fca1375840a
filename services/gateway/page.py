"""The super-admin status page: one self-contained HTML document, live over server-sent events.

The report is embedded as JSON (so the page shows everything on first paint, even before the
stream connects) and re-rendered on every ``status`` event. Rendering uses ``textContent`` only:
tenant ids and probe outputs are data, never markup.
"""

from __future__ import annotations

from .report import StatusReport

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>opsplane status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{display:flex;gap:1rem;align-items:center;padding:.8rem 1.2rem;background:#1d2330;color:#fff}
header h1{font-size:1.1rem;margin:0} #live{margin-left:auto;font-size:.85rem;opacity:.85}
main{padding:1rem 1.2rem;display:grid;gap:1rem;align-items:start;
grid-template-columns:repeat(auto-fit,minmax(380px,1fr))}
.wide{grid-column:1/-1} td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
section{background:#fff;border-radius:6px;padding:.6rem .9rem;box-shadow:0 1px 2px #0002}
h2{font-size:.95rem;margin:.2rem 0 .5rem} table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:.25rem .4rem;border-top:1px solid #eee;vertical-align:top}
th{font-weight:600;color:#555;border-top:none}
.badge{display:inline-block;min-width:3em;text-align:center;border-radius:3px;padding:0 .4em;
font-weight:600;text-transform:uppercase;font-size:.75rem;color:#fff}
.pass{background:#1f883d}.warn{background:#bf8700}.fail{background:#cf222e}.skip{background:#8c959f}
.muted{color:#777}.out{font-size:.8rem;color:#444;max-width:60em;overflow-wrap:anywhere}
</style></head>
<body>
<header><h1>opsplane &middot; <span id="deployment"></span></h1>
<span id="overall" class="badge"></span><span id="freshness" class="muted"></span>
<span id="live">connecting&hellip;</span></header>
<main>
<section id="database-section"><h2>Database</h2><div id="database"></div></section>
<section><h2>Services</h2><table id="services"><thead><tr><th>service</th><th>status</th>
<th>instances</th></tr></thead><tbody></tbody></table></section>
<section><h2>Backups and jobs</h2><div id="backup"></div><table id="jobs"><thead><tr>
<th>job</th><th>action</th><th>state</th></tr></thead><tbody></tbody></table></section>
<section class="wide"><h2>Components</h2><table id="components"><thead><tr><th>check</th>
<th>status</th><th>value</th><th>output</th></tr></thead><tbody></tbody></table></section>
<section class="wide"><h2>Tenants (worst first)</h2><table id="tenants"><thead><tr>
<th>tenant</th><th>status</th><th class="num">req/s (1m)</th><th class="num">5xx % (5m)</th>
<th class="num">avg ms (5m)</th><th class="num">p95 ms (5m)</th><th class="num">p99 ms (5m)</th>
<th class="num">running timers</th></tr></thead><tbody></tbody></table></section>
<section class="wide"><h2>Active alerts</h2><table id="alerts"><thead><tr><th>rule</th>
<th>state</th><th>scope</th><th>value</th></tr></thead><tbody></tbody></table></section>

</main>
<script type="application/json" id="initial">__REPORT__</script>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
function badge(status, skipped) {
  const b = document.createElement("span");
  b.className = "badge " + (skipped ? "skip" : status);
  b.textContent = skipped ? "skipped" : status;
  return b;
}
function cell(row, content, cls) {
  const td = row.insertCell();
  if (content instanceof Node) td.appendChild(content); else td.textContent = content ?? "";
  if (cls) td.className = cls;
  return td;
}
function fill(tableId, items, draw, empty) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  if (!items.length) { cell(body.insertRow(), empty, "muted").colSpan = 8; return; }
  for (const item of items) draw(body.insertRow(), item);
}
const fmt = (v, u) =>
  v === null || v === undefined ? "" : `${Math.round(v * 100) / 100} ${u || ""}`;
function render(r) {
  document.body.dataset.status = r.status;
  $("deployment").textContent = r.deployment;
  $("overall").className = "badge " + r.status; $("overall").textContent = r.status;
  $("freshness").textContent = r.view_age_s === null ? "no view yet" :
    `view ${r.view_age_s.toFixed(1)} s old ${r.freshness}`;
  const db = r.database;
  $("database").replaceChildren(badge(db.status || "fail"), document.createTextNode(
    ` latency ${fmt(db.latency_ms, "ms") || "?"}` +
    ` · connections ${fmt(db.connections_pct, "%") || "?"}` +
    ` · app pool ${fmt(db.pool_pct, "%") || "n/a"} — ${db.output}`));
  fill("components", r.components, (row, c) => {
    row.dataset.check = c.check; row.dataset.status = c.skipped ? "skipped" : c.reported;
    row.dataset.effective = c.status;
    cell(row, `${c.component}:${c.measurement}` + (c.critical ? "" : " (non-critical)"));
    const shown = cell(row, badge(c.reported, c.skipped));
    if (!c.skipped && c.status !== c.reported) {
      shown.append(" counts as ", badge(c.status));
    }
    cell(row, fmt(c.observed_value, c.observed_unit));
    cell(row, c.output, "out");
  }, "no checks reported yet");
  fill("services", r.services, (row, s) => {
    row.dataset.service = s.name; row.dataset.status = s.status;
    cell(row, s.name); cell(row, badge(s.status));
    cell(row, s.instances.map((i) => `${i.instance} v${i.version} ${i.alive ? "up" : "DOWN"}` +
      ` (seen ${new Date(i.last_seen).toLocaleTimeString()})`).join("; ") || "none", "out");
  }, "no services");
  fill("tenants", r.tenants, (row, t) => {
    row.dataset.tenant = t.tenant_id; row.dataset.status = t.status;
    cell(row, t.tenant_id); cell(row, badge(t.status));
    const m = t.metrics;
    const pct = m.error_ratio_5m === null || m.error_ratio_5m === undefined ? null
      : m.error_ratio_5m * 100;
    for (const v of [m.rate_per_s_1m, pct, m.avg_ms_5m, m.p95_ms_5m, m.p99_ms_5m,
                     m.active_timers]) {
      cell(row, fmt(v), "num");
    }
  }, "no tenant data yet");
  const order = {firing: 0, pending: 1, resolved: 2};
  const alerts = [...r.alerts].sort((a, b) => (order[a.state] ?? 3) - (order[b.state] ?? 3));
  fill("alerts", alerts, (row, a) => {
    row.dataset.rule = a.rule;
    cell(row, a.rule); cell(row, a.state); cell(row, a.scope);
    cell(row, `${fmt(a.value)} (threshold ${fmt(a.threshold)})`, "out");
  }, "none");
  const b = r.last_backup;
  $("backup").textContent = b ? `last backup: ${b.detail || JSON.stringify(b)}` :
    "last backup: no backup catalog yet";
  fill("jobs", r.jobs, (row, j) => {
    cell(row, j.job_id); cell(row, j.action); cell(row, j.state);
  }, "no recent jobs");
  $("live").dataset.updated = String(Date.now());
}
render(JSON.parse($("initial").textContent));
const stream = new EventSource("/super-admin/status/stream");
stream.addEventListener("status", (e) => {
  render(JSON.parse(e.data));
  $("live").textContent = "live · " + new Date().toLocaleTimeString();
  $("live").dataset.state = "live";
});
stream.onerror = () => {
  $("live").textContent = "reconnecting…"; $("live").dataset.state = "down";
};
</script></body></html>
"""


def render_page(report: StatusReport) -> str:
    # JSON inside <script>: escape what could close the element or start a comment.
    data = (report.model_dump_json().replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))
    return _PAGE.replace("__REPORT__", data)
