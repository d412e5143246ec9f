"""The floor view's one page: a tile per treadmill, readable across a room (no external assets).

The script long-polls ``/api/tiles?after=<version>`` and redraws; a tile's STOP posts
``/api/stop/<id>``. Text is set with ``textContent`` only (a treadmill's id or a stop reason from
the broker is never markup).
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>retrotread floor</title>
<style>
  :root { color-scheme: dark; font-family: system-ui, sans-serif; }
  body { margin: 0; background: #111; color: #eee; }
  header { display: flex; justify-content: space-between; padding: .5rem 1rem; font-size: 1.4rem; }
  #broker.down { color: #f66; font-weight: bold; }
  #tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr)); gap: .8rem; padding: .8rem; }
  .tile { background: #222; border-radius: .6rem; padding: .8rem; border: .3rem solid #333; }
  .tile.running { border-color: #2a8; }
  .tile.latched { border-color: #e33; background: #3a1111; }
  .tile.offline { opacity: .45; }
  .name { font-size: 1.8rem; font-weight: bold; }
  .online { font-size: 1rem; margin-left: .4rem; }
  .speed { font-size: 3rem; font-variant-numeric: tabular-nums; }
  .set, .reason { font-size: 1.3rem; min-height: 1.6rem; }
  .reason { color: #f99; font-weight: bold; }
  .stop { width: 100%; margin-top: .5rem; font-size: 1.6rem; font-weight: bold; padding: .6rem;
          background: #c00; color: #fff; border: 0; border-radius: .4rem; cursor: pointer; }
  .stop:disabled { background: #555; }
</style>
</head>
<body>
<header><span>retrotread floor</span><span id="broker">connecting…</span></header>
<main id="tiles"></main>
<script>
"use strict";
const grid = document.getElementById("tiles");
const broker = document.getElementById("broker");
let version = -1;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function clock(s) {
  if (s === null || s === undefined) return "";
  const t = Math.max(0, Math.round(s));
  return Math.floor(t / 60) + ":" + String(t % 60).padStart(2, "0");
}

const tiles = new Map();  // id -> the tile's element, kept (updated in place, so a press is never lost to a redraw)

function make(id) {
  const d = el("section", "tile");
  d.dataset.id = id;
  const head = el("div");
  d.parts = {
    name: el("span", "name", id), online: el("span", "online"), speed: el("div", "speed"),
    set: el("div", "set"), reason: el("div", "reason"), stop: el("button", "stop", "STOP"),
  };
  head.append(d.parts.name, d.parts.online);
  d.parts.stop.type = "button";
  d.parts.stop.addEventListener("click", () => send(id, d.parts.stop));
  d.append(head, d.parts.speed, d.parts.set, d.parts.reason, d.parts.stop);
  return d;
}

function fill(d, t) {
  d.classList.toggle("latched", t.latched);
  d.classList.toggle("running", t.running);
  d.classList.toggle("offline", !t.online);
  const p = d.parts;
  p.online.textContent = t.online ? "● online" : "○ offline";
  p.speed.textContent = t.speed_mph === null ? "–" : t.speed_mph.toFixed(2) + " mph";
  let set = t.phase || "";
  if (t.phase && t.phase !== "idle" && t.sets) {
    set = `set ${t.set} of ${t.sets} · ${t.phase}${t.paused ? " (paused)" : ""} · ${clock(t.remaining_s)} left`;
  }
  p.set.textContent = set;
  const why = (t.reason || "latched") + (t.rule ? " (" + t.rule + ")" : "");
  p.reason.textContent = t.latched ? "STOPPED: " + why : "";
  p.stop.disabled = !t.online;
}

async function send(id, button) {
  button.disabled = true;
  try {
    const r = await fetch("/api/stop/" + encodeURIComponent(id), {method: "POST"});
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      button.textContent = "STOP (" + (body.error || r.status) + ")";
    }
  } catch (e) {
    button.textContent = "STOP (not sent)";
  } finally {
    button.disabled = false;
  }
}

function draw(data) {
  broker.textContent = data.broker ? "broker connected" : "broker NOT connected";
  broker.className = data.broker ? "" : "down";
  const seen = new Set();
  const order = data.tiles.map(t => {
    seen.add(t.id);
    let d = tiles.get(t.id);
    if (!d) { d = make(t.id); tiles.set(t.id, d); }
    fill(d, t);
    return d;
  });
  for (const [id, d] of tiles) if (!seen.has(id)) { d.remove(); tiles.delete(id); }
  const now = Array.from(grid.children);
  if (order.length !== now.length || order.some((d, i) => d !== now[i])) grid.append(...order);
  document.body.dataset.version = String(data.version);
}

async function loop() {
  for (;;) {
    try {
      const r = await fetch("/api/tiles?after=" + version, {cache: "no-store"});
      if (r.ok) {
        const data = await r.json();
        version = data.version;
        draw(data);
        continue;
      }
    } catch (e) {
      broker.textContent = "floor view not reachable";
      broker.className = "down";
    }
    await new Promise(ok => setTimeout(ok, 1000));
  }
}
loop();
</script>
</body>
</html>
"""
