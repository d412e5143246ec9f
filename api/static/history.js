// retrotread history page: reads GET /api/v1/history and /api/v1/progress, draws with the vendored uPlot.
// No inline scripts or styles (CSP default-src 'self'): layout that style.css lacks is set through CSSOM.
"use strict";

const TOKEN_KEY = "retrotread.token"; // the dashboard's: a remote daemon may want it for reads
const API = new URL("../api/v1/", location.href);
const SIM = ["sim://", "ftms+sim://"];

const $ = (id) => document.getElementById(id);

function headers() {
  const t = localStorage.getItem(TOKEN_KEY);
  return t ? { Authorization: "Bearer " + t } : {};
}

async function getJSON(path) {
  const resp = await fetch(new URL(path, API), { headers: headers(), cache: "no-store" });
  if (!resp.ok) {
    let detail = resp.statusText;
    try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(path + ": " + resp.status + " " + detail);
  }
  return resp.json();
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function simulated(rec) { return SIM.some((s) => rec.driver.startsWith(s)); }
function measured(rec) { return rec.sets.some((s) => s.distance_m > 0 || s.max_mph > 0); }
function day(iso) { return iso.slice(0, 16).replace("T", " "); }
function metres(m) { return m.toFixed(1) + " m"; }

function width(el) { return Math.max(280, Math.min(760, el.clientWidth || 320)); }

function showPosition(pos) {
  $("where").textContent = pos.week == null
    ? "No session yet."
    : "Week " + pos.week + " of the program, phase " + pos.phase + " (since " + day(pos.started_at) + ").";
  $("suggested").textContent = pos.suggested_plan;
  $("why").textContent = pos.why;
}

function showStrength(points) {
  const box = $("strength-chart");
  if (!points.length) { $("strength-empty").hidden = false; return; }
  const xs = points.map((p) => Date.parse(p.started_at) / 1000);
  const first = points.map((p) => p.set_distances_m[0]);
  const last = points.map((p) => p.set_distances_m.length > 1 ? p.set_distances_m[p.set_distances_m.length - 1] : null);
  const fade = points.map((p) => p.fade_pct);
  const opts = {
    width: width(box), height: 220,
    series: [
      {},
      { label: "first set (m)", stroke: "#5aa9ff", width: 2, points: { show: true } },
      { label: "last set (m)", stroke: "#3ecf8e", width: 2, points: { show: true } },
      { label: "fade (%)", stroke: "#f0b429", scale: "%", dash: [4, 4], points: { show: true } },
    ],
    axes: [
      { stroke: "#aab6c2", grid: { stroke: "#2c3844" } },
      { stroke: "#aab6c2", grid: { stroke: "#2c3844" }, label: "m" },
      { side: 1, scale: "%", stroke: "#f0b429", grid: { show: false }, label: "%" },
    ],
  };
  new uPlot(opts, [xs, first, last, fade], box);
  const p = points[points.length - 1];
  $("strength-latest").textContent = "Latest: " + p.set_distances_m.map(metres).join(", ")
    + (p.fade_pct == null ? "" : " · fade " + p.fade_pct + " %") + (p.simulated ? " · simulated" : "");
}

function showWeeks(weeks) {
  const body = $("weeks").tBodies[0];
  body.replaceChildren();
  for (const w of weeks.slice(-24).reverse()) {
    const tr = document.createElement("tr");
    cell(tr, w.week); cell(tr, w.plan); cell(tr, String(w.sessions));
    cell(tr, w.recommended_min == null ? "–" : w.recommended_min === w.recommended_max
      ? "daily" : w.recommended_min + "-" + w.recommended_max);
    cell(tr, w.verdict, "verdict-" + w.verdict.replace(/ /g, "-"));
    body.appendChild(tr);
  }
  const names = [...new Set(weeks.map((w) => w.week))].sort();
  if (!names.length) return;
  const plans = [...new Set(weeks.map((w) => w.plan))].sort();
  const colours = ["#5aa9ff", "#3ecf8e", "#f0b429", "#e07bff", "#ff7b7b", "#9fd3c7"];
  const data = [names.map((_, i) => i)];
  for (const plan of plans) {
    const by = new Map(weeks.filter((w) => w.plan === plan).map((w) => [w.week, w.sessions]));
    data.push(names.map((n) => by.get(n) ?? 0));
  }
  const box = $("weeks-chart");
  new uPlot({
    width: width(box), height: 180,
    scales: { x: { time: false } },
    series: [{ label: "week", value: (u, i) => i == null ? "" : names[Math.round(i)] || "" },
      ...plans.map((plan, k) => ({ label: plan, stroke: colours[k % colours.length], width: 2,
        paths: uPlot.paths.stepped({ align: 1 }) }))],
    axes: [
      { stroke: "#aab6c2", grid: { stroke: "#2c3844" }, incrs: [1, 2, 4, 8, 13, 26, 52], values: (u, vals) => vals.map((v) => names[Math.round(v)] ? names[Math.round(v)].slice(5) : "") },
      { stroke: "#aab6c2", grid: { stroke: "#2c3844" }, label: "sessions" },
    ],
  }, data, box);
}

function showSessions(records) {
  const body = $("sessions").tBodies[0];
  body.replaceChildren();
  for (const r of records) {
    const tr = document.createElement("tr");
    tr.dataset.id = String(r.id);
    tr.tabIndex = 0;
    cell(tr, day(r.started_at));
    cell(tr, r.plan + (simulated(r) ? " (simulated)" : ""));
    cell(tr, r.outcome || "running");
    cell(tr, r.sets.length + "/" + r.sets_planned);
    const total = r.sets.reduce((a, s) => a + s.distance_m, 0);
    cell(tr, measured(r) ? metres(total) : "timer only");
    tr.addEventListener("click", () => showDetail(r.id));
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") showDetail(r.id); });
    body.appendChild(tr);
  }
}

async function showDetail(id) {
  try {
    const r = await getJSON("history/" + id);
    const belt = measured(r);
    $("detail-h").textContent = "Session " + r.id + ": " + r.plan + " · " + r.mode
      + (simulated(r) ? " · simulated (" + r.driver + ")" : "");
    const body = $("sets").tBodies[0];
    body.replaceChildren();
    for (const s of r.sets) {
      const tr = document.createElement("tr");
      cell(tr, String(s.set)); cell(tr, s.work_s.toFixed(0) + " s");
      cell(tr, belt ? metres(s.distance_m) : "–");
      cell(tr, belt ? s.avg_mph.toFixed(2) : "–"); cell(tr, belt ? s.max_mph.toFixed(2) : "–");
      cell(tr, s.outcome);
      body.appendChild(tr);
    }
    $("detail").hidden = false;
  } catch (e) {
    fail(e);
  }
}

function fail(e) {
  $("message").textContent = String(e.message || e);
  $("message").hidden = false;
  $("status").textContent = "error";
}

async function main() {
  try {
    const [records, progress] = await Promise.all([getJSON("history?limit=50"), getJSON("progress")]);
    showPosition(progress.position);
    showStrength(progress.strength);
    showWeeks(progress.adherence);
    showSessions(records);
    for (const t of document.querySelectorAll("table")) t.style.width = "100%"; // CSSOM: allowed by the CSP
    $("status").textContent = records.length + " sessions";
    document.body.dataset.ready = "1";
  } catch (e) {
    fail(e);
  }
}

document.addEventListener("DOMContentLoaded", main);
