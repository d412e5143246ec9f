// retrotread dashboard: renders the daemon's state from GET api/v1/events and sends control calls.
//
// It holds no rule of its own: every refusal comes from the daemon (409 with its rule id) and is shown
// as it came. Paths are relative so the page also works behind a reverse proxy under a prefix.
// The treadmill's own safety key stays the first stop; this page is an extra layer (safety.md).
"use strict";

const TOKEN_KEY = "retrotread.token";
const STALE_MS = 12000; // the daemon sends state at least every 5 s; silence this long means a dead stream
const MPH_TO_KMH = 1.609344;
let RUNNING = new Set(); // the phases of a session still going: from GET api/v1/plans, as the presets are
let DONE = null; // the phase of a session that ran to its end (GET api/v1/plans)

const $ = (id) => document.getElementById(id);

let snap = null; // the last state snapshot
let session = null; // the running session's view, or null
let sessionAt = 0; // performance.now() when `session` arrived, to count down between 1 Hz timer updates
let lastSession = null; // the last session seen, kept on screen after it ends
let lastStateSeq = -1;
let streamUp = false;
let lastMessageAt = 0;
let readsNeedToken = false; // true when a remote daemon refuses reads without the token
let source = null; // the EventSource, when reads need no token
let reader = null; // the AbortController of the token-carrying stream, when they do
let retryMs = 1000;
let retryTimer = 0;
let pendingAction = null; // a control call waiting for the token
let messageTimer = 0;
const events = [];

// --- small helpers ----------------------------------------------------------------------------

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function token() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

function authHeaders() {
  const t = token();
  return t ? { authorization: "Bearer " + t } : {};
}

function clock(seconds) {
  const whole = Math.max(0, Math.ceil(seconds - 1e-6));
  return Math.floor(whole / 60) + ":" + String(whole % 60).padStart(2, "0");
}

function localTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour12: false });
}

function distance(m) {
  return m >= 1000 ? (m / 1000).toFixed(2) + " km" : Math.round(m) + " m";
}

function say(text, isError) {
  const box = $("message");
  clearTimeout(messageTimer);
  box.textContent = text;
  box.className = isError ? "message error" : "message";
  box.setAttribute("role", isError ? "alert" : "status");
  box.hidden = false;
  if (!isError) messageTimer = setTimeout(() => (box.hidden = true), 6000);
}

// --- HTTP ---------------------------------------------------------------------------------------

function describe(resp, data) {
  let text = "";
  if (data && typeof data.error === "string") text = data.error;
  else if (data && typeof data.detail === "string") text = data.detail;
  else if (data && data.detail) text = JSON.stringify(data.detail);
  const rule = data && data.rule ? " (" + data.rule + ")" : "";
  return resp.status + rule + ": " + (text || resp.statusText || "no detail given");
}

async function post(path, body, withToken) {
  const headers = withToken ? authHeaders() : {};
  const init = { method: "POST", headers, cache: "no-store" };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    return { ok: false, status: 0, error: "cannot reach the daemon (" + err.message + ")" };
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (resp.ok) return { ok: true, status: resp.status, data };
  return { ok: false, status: resp.status, error: describe(resp, data) };
}

async function control(label, path, body) {
  const r = await post(path, body, true);
  if (r.ok) {
    say(label + ": done.", false);
  } else if (r.status === 401) {
    askToken(() => control(label, path, body), label + " needs the API token — " + r.error);
  } else {
    say(label + " refused — " + r.error, true);
  }
  refreshState();
  return r;
}

async function refreshState() {
  let resp;
  try {
    resp = await fetch("api/v1/state", { headers: authHeaders(), cache: "no-store" });
  } catch {
    return;
  }
  if (resp.status === 401) {
    if (!readsNeedToken) {
      readsNeedToken = true;
      connect();
    }
    return;
  }
  if (resp.ok) onState(await resp.json());
}

// --- the token ------------------------------------------------------------------------------------

function askToken(retry, why) {
  pendingAction = retry;
  $("token-box").hidden = false;
  say(why + ". Enter it below; this browser keeps it.", true);
  $("token").focus();
}

function saveToken(event) {
  event.preventDefault();
  const value = $("token").value.trim();
  if (!value) return;
  try {
    localStorage.setItem(TOKEN_KEY, value);
  } catch {
    say("this browser cannot store the token (private mode?)", true);
    return;
  }
  $("token").value = "";
  $("token-box").hidden = true;
  say("Token saved.", false);
  const retry = pendingAction;
  pendingAction = null;
  if (readsNeedToken) connect();
  if (retry) retry();
}

// --- the event stream -------------------------------------------------------------------------

function linkUp() {
  streamUp = true;
  retryMs = 1000;
  lastMessageAt = performance.now();
  lastStateSeq = -1; // the daemon may have restarted: its seq starts again
  const link = $("link");
  setText(link, "live");
  link.className = "link up";
  document.body.classList.remove("stale");
  refreshState();
}

function linkDown(why) {
  streamUp = false;
  const link = $("link");
  setText(link, why || "reconnecting…");
  link.className = "link down";
  document.body.classList.add("stale");
}

function disconnect() {
  clearTimeout(retryTimer);
  if (source) {
    source.close();
    source = null;
  }
  if (reader) {
    reader.abort();
    reader = null;
  }
}

function retryLater() {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, retryMs);
  retryMs = Math.min(retryMs * 2, 10000);
}

function connect() {
  disconnect();
  if (readsNeedToken) {
    streamWithToken();
    return;
  }
  const es = new EventSource("api/v1/events");
  source = es;
  es.onopen = linkUp;
  es.onerror = () => {
    linkDown();
    // CONNECTING: EventSource retries by itself. CLOSED: the daemon answered, but not with a stream
    // (401 from a remote daemon, or an error page): find out which, then try again.
    if (es.readyState === EventSource.CLOSED && source === es) {
      source = null;
      refreshState();
      retryLater();
    }
  };
  for (const kind of ["state", "telemetry", "timer", "event"]) {
    es.addEventListener(kind, (e) => handle(kind, e.data));
  }
}

// EventSource cannot send a header, so a daemon that wants the token for reads is read with fetch.
async function streamWithToken() {
  if (!token()) {
    linkDown("needs the API token");
    askToken(null, "This daemon shows its state only with the API token");
    return;
  }
  const ctl = new AbortController();
  reader = ctl;
  try {
    const resp = await fetch("api/v1/events", {
      headers: { ...authHeaders(), accept: "text/event-stream" },
      cache: "no-store",
      signal: ctl.signal,
    });
    if (resp.status === 401) {
      linkDown("needs the API token");
      askToken(null, "The stored API token was refused (" + describe(resp, null) + ")");
      return;
    }
    if (!resp.ok || !resp.body) throw new Error("HTTP " + resp.status);
    linkUp();
    const lines = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let kind = "message";
    let data = [];
    for (;;) {
      const { value, done } = await lines.read();
      if (done) break;
      buf += value;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, "");
        buf = buf.slice(nl + 1);
        if (line === "") {
          if (data.length) handle(kind, data.join("\n"));
          kind = "message";
          data = [];
        } else if (line.startsWith("event:")) {
          kind = line.slice(6).trim();
        } else if (line.startsWith("data:")) {
          data.push(line.slice(5).replace(/^ /, ""));
        }
      }
    }
  } catch {
    if (ctl.signal.aborted) return;
  }
  if (reader !== ctl) return;
  reader = null;
  linkDown();
  retryLater();
}

function watchdog() {
  if (streamUp && performance.now() - lastMessageAt > STALE_MS) {
    linkDown("no updates — reconnecting…");
    connect();
  }
}

// --- updates ---------------------------------------------------------------------------------------

function handle(kind, raw) {
  lastMessageAt = performance.now();
  let msg;
  try {
    msg = JSON.parse(raw);
  } catch {
    return; // e.g. a NaN speed, which JSON cannot carry
  }
  switch (kind) {
    case "state":
      onState(msg);
      break;
    case "telemetry":
      if (snap) {
        snap.belt = {
          ...(snap.belt || { moving: msg.speed_mph > 0 }),
          speed_mph: msg.speed_mph,
          speed_kmh: msg.speed_mph * MPH_TO_KMH,
          incline_pct: msg.incline_pct,
          distance_m: msg.distance_m,
        };
        renderSpeed();
      }
      break;
    case "timer":
      onSession(msg);
      renderTimer();
      renderControls();
      break;
    case "event":
      onEvent(msg);
      break;
  }
}

function onState(s) {
  if (s.seq < lastStateSeq) return; // an older answer to a fetch that crossed a newer event
  lastStateSeq = s.seq;
  snap = s;
  onSession(s.session);
  render();
}

function onSession(view) {
  if (view) {
    session = RUNNING.has(view.phase) ? view : null;
    lastSession = view;
  } else {
    session = null;
  }
  sessionAt = performance.now();
}

function onEvent(ev) {
  events.unshift(ev);
  events.length = Math.min(events.length, 8);
  const list = $("events");
  list.replaceChildren(
    ...events.map((e) => {
      const li = document.createElement("li");
      let text = localTime(e.ts) + " " + e.kind.replace(/_/g, " ");
      if (e.set) text += " · set " + e.set;
      if (e.reason) text += " — " + e.reason;
      if (e.rule) text += " (" + e.rule + ")";
      li.textContent = text;
      if (e.kind === "estop" || e.kind === "fault") li.className = "stopish";
      return li;
    }),
  );
  if (ev.kind === "estop" || ev.kind === "reset") refreshState();
}

// --- rendering ---------------------------------------------------------------------------------------

function render() {
  if (!snap) return;
  setText($("treadmill"), snap.id);
  let mode = snap.mode + " mode";
  if (snap.mode === "reverse" && snap.armed === false) mode += " · not armed";
  setText($("mode"), mode);
  renderStop();
  renderSpeed();
  renderTimer();
  renderControls();
}

function renderStop() {
  const stop = snap.stop;
  const state = $("stop-state");
  if (stop.latched) {
    let text = "stop: LATCHED — " + (stop.reason || "no reason given");
    if (stop.rule) text += " (" + stop.rule + ")";
    if (stop.since) text += " since " + localTime(stop.since);
    setText(state, text);
    state.className = "stop-state latched";
  } else {
    setText(state, "stop: not latched");
    state.className = "stop-state";
  }

  const banner = $("banner");
  const lines = [];
  if (stop.latched) {
    const rule = stop.rule ? " (" + stop.rule + ")" : "";
    lines.push(["EMERGENCY STOP LATCHED — " + (stop.reason || "stop") + rule, ""]);
    lines.push(["Motion is refused until Reset stop, which works once the belt has been still for 2 s.", "hint"]);
  }
  if (!snap.connected) {
    lines.push(["DRIVER DISCONNECTED", ""]);
    lines.push([snap.driver + ": no belt control or telemetry here. Use the treadmill's own controls and safety key.", "hint"]);
  }
  const key = lines.map((l) => l[0]).join("\n");
  if (banner.dataset.key !== key) {
    banner.dataset.key = key;
    banner.replaceChildren(
      ...lines.map(([text, cls]) => {
        const p = document.createElement("p");
        p.textContent = text;
        if (cls) p.className = cls;
        return p;
      }),
    );
  }
  banner.className = "banner" + (stop.latched ? " latched" : "") + (snap.connected ? "" : " disconnected");
  banner.hidden = lines.length === 0;
}

function renderSpeed() {
  if (!snap) return;
  // Without the driver the last sample is old news: show no number rather than a stale one.
  const belt = snap.connected ? snap.belt : null;
  const mph = belt ? belt.speed_mph : null;
  setText($("speed"), mph === null ? "–.––" : mph.toFixed(2));
  setText($("speed-kmh"), belt ? belt.speed_kmh.toFixed(2) + " km/h" : "–.–– km/h");
  setText($("distance"), belt && belt.distance_m !== null ? distance(belt.distance_m) : "–");
  setText($("target"), snap.target_mph !== null ? "target " + snap.target_mph.toFixed(2) + " mph" : "");

  const env = snap.envelope_mph;
  // The scale reaches past the envelope so an overspeed (S7: max + 0.2, max + 0.5 mph) stays visible.
  const top = env ? Math.max(env[1] + 0.4, 1.6) : Math.max(4, Math.ceil(mph || 0));
  const pct = (v) => Math.min(100, Math.max(0, (v / top) * 100)) + "%";
  const band = $("band");
  band.hidden = !env;
  if (env) {
    band.style.left = pct(env[0]);
    band.style.width = ((env[1] - env[0]) / top) * 100 + "%";
    setText($("envelope"), "envelope " + env[0].toFixed(1) + "–" + env[1].toFixed(1) + " mph");
  } else {
    setText($("envelope"), "deadmill: measuring only");
  }
  const needle = $("needle");
  needle.hidden = mph === null;
  if (mph !== null) {
    needle.style.left = pct(mph);
    // Below the band is normal while the belt ramps; above it is what S7 watches for.
    needle.className = env && mph > env[1] + 0.05 ? "needle out" : "needle";
  }
  const marks = env ? [0, env[0], env[1], top] : [0, top / 4, top / 2, (3 * top) / 4, top];
  const key = marks.join(",");
  const scale = $("scale");
  if (scale.dataset.key !== key) {
    scale.dataset.key = key;
    scale.replaceChildren(
      ...marks.map((m) => {
        const s = document.createElement("span");
        s.style.left = pct(m);
        s.textContent = m === 0 ? "0" : m.toFixed(1);
        return s;
      }),
    );
  }
}

function renderTimer() {
  const v = session || lastSession;
  const phase = $("phase");
  if (!v) {
    setText(phase, "no session");
    phase.className = "phase idle";
    setText($("plan"), "");
    setText($("timer"), "0:00");
    $("timer").className = "timer idle";
    setText($("set"), "start one below");
    $("progress").style.width = "0%";
    return;
  }
  const live = session !== null && !session.paused;
  const running = session !== null;
  const elapsedSince = live ? (performance.now() - sessionAt) / 1000 : 0;
  const remaining = running ? Math.max(0, v.remaining_s - elapsedSince) : 0;
  const total = v.elapsed_s + v.remaining_s;
  // A session the state says is gone, whose final timer update was missed, still reads as over.
  const name = running ? v.phase : RUNNING.has(v.phase) ? "ended" : v.phase;
  setText(phase, name + (running && v.paused ? " · paused" : ""));
  phase.className = "phase " + name;
  setText($("plan"), v.plan);
  const timer = $("timer");
  setText(timer, clock(remaining));
  timer.className = !running ? "timer idle" : v.paused ? "timer paused" : "timer";
  setText($("set"), "set " + v.set + " of " + v.sets);
  const done = running ? (total > 0 ? (total - remaining) / total : 0) : v.phase === DONE ? 1 : 0;
  const bar = $("progress");
  bar.style.width = Math.round(done * 1000) / 10 + "%";
  bar.className = "bar-fill " + name;
}

function renderControls() {
  const paused = session !== null && session.paused;
  setText($("pause"), paused ? "Resume" : "Pause");
  $("pause").disabled = session === null;
  $("abort").disabled = session === null;
  $("start").disabled = session !== null;
  $("reset").disabled = snap !== null && !snap.stop.latched;
}

// --- controls ---------------------------------------------------------------------------------------

let lastStopAt = -Infinity;

async function emergencyStop() {
  // Fired on pointerdown (no need to let go over the button) and on keyboard activation; a second
  // stop within a second is the same press.
  const now = performance.now();
  if (now - lastStopAt < 1000) return;
  lastStopAt = now;
  const r = await post("api/v1/estop", { reason: "dashboard" }, false); // never needs a token (S16)
  if (r.ok) say("Emergency stop sent.", false);
  else say("STOP NOT CONFIRMED — " + r.error + ". Use the treadmill's safety key.", true);
  refreshState();
}

function startSession(event) {
  event.preventDefault();
  const choice = $("plan-select").value;
  const plan = choice === "custom" ? $("custom-plan").value.trim() : choice;
  if (!plan) {
    say("Type a custom plan such as 3x60s/60s (sets x work / rest).", true);
    $("custom-plan").focus();
    return;
  }
  control("Start session " + plan, "api/v1/session", { plan });
}

// --- the plans ---------------------------------------------------------------------------------------

function duration(s) {
  if (s >= 60 && s % 60 === 0) return s / 60 + " min";
  return s + " s";
}

function presetLabel(p) {
  let text = p.name + " — " + (p.sets > 1 ? p.sets + " × " + duration(p.work_s) : duration(p.work_s));
  if (p.sets > 1 && p.rest_s > 0) text += ", " + duration(p.rest_s) + " rest";
  if (p.cap_s) text += ", " + duration(p.cap_s) + " cap";
  return text;
}

// The presets and the phase names are the daemon's (GET api/v1/plans): none is written here.
async function loadPlans() {
  for (let wait = 500; ; wait = Math.min(wait * 2, 5000)) {
    try {
      const resp = await fetch("api/v1/plans", { headers: authHeaders(), cache: "no-store" });
      if (resp.ok) {
        const plans = await resp.json();
        RUNNING = new Set(plans.running);
        DONE = plans.done;
        const select = $("plan-select");
        const custom = select.querySelector('option[value="custom"]');
        for (const p of plans.presets) {
          const option = document.createElement("option");
          option.value = p.name;
          option.textContent = presetLabel(p);
          select.insertBefore(option, custom);
        }
        select.value = plans.presets.length ? plans.presets[0].name : "custom";
        $("custom-plan").hidden = select.value !== "custom";
        return;
      }
    } catch {
      // the daemon is not up yet: try again
    }
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

async function init() {
  const estop = $("estop");
  estop.addEventListener("pointerdown", (e) => {
    if (e.button === 0) emergencyStop();
  });
  estop.addEventListener("click", emergencyStop);
  $("reset").addEventListener("click", () => control("Reset stop", "api/v1/estop/reset"));
  $("session-form").addEventListener("submit", startSession);
  $("plan-select").addEventListener("change", () => {
    const custom = $("plan-select").value === "custom";
    $("custom-plan").hidden = !custom;
    if (custom) $("custom-plan").focus();
  });
  $("pause").addEventListener("click", () => {
    const action = session && session.paused ? "resume" : "pause";
    control(action === "pause" ? "Pause" : "Resume", "api/v1/session/" + action);
  });
  $("abort").addEventListener("click", () => control("Abort session", "api/v1/session/abort"));
  $("extend").addEventListener("click", () => control("30 s more", "api/v1/session/extend", { seconds: 30 }));
  $("token-box").addEventListener("submit", saveToken);
  linkDown("connecting…");
  await loadPlans(); // before the stream: a session view is read with the daemon's phase names
  connect();
  refreshState();
  setInterval(renderTimer, 200);
  setInterval(watchdog, 1000);
}

document.addEventListener("DOMContentLoaded", init);
