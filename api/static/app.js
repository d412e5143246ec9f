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
const events = []; // newest first: events and cues of this page's life, and the running session's past
let seededSession = null; // the session whose history has been read into `events`
let lastSummary = ""; // the last finished session, one line, from its view or GET api/v1/history

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
  for (const kind of ["state", "telemetry", "timer", "event", "cue"]) {
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
    case "cue":
      onCue(msg);
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
  const wasRunning = session !== null;
  // An idle view (phase "idle", no session) or a finished one: the card says "no session".
  if (view && RUNNING.has(view.phase)) {
    session = view;
    lastSession = view;
    if (seededSession !== view.id) seedEvents(view.id);
  } else {
    session = null;
    if (view && view.phase !== "idle") lastSession = view;
  }
  sessionAt = performance.now();
  if (wasRunning && session === null) loadLastSummary();
  holdScreen();
}

const EVENTS_SHOWN = 12;

function addEvent(e) {
  // Seen twice (the history, then the stream): once.
  const key = e.kind + "|" + e.ts + "|" + (e.set || "") + "|" + (e.cue ? "cue" : "");
  if (events.some((x) => x.key === key)) return;
  events.push({ ...e, key });
  events.sort((a, b) => (a.ts < b.ts ? 1 : a.ts > b.ts ? -1 : 0));
  events.length = Math.min(events.length, EVENTS_SHOWN);
}

function renderEvents() {
  const list = $("events");
  if (!events.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = session ? "session " + session.id + " running: nothing new yet" : "none yet";
    list.replaceChildren(li);
    return;
  }
  list.replaceChildren(
    ...events.map((e) => {
      const li = document.createElement("li");
      let text = localTime(e.ts) + " ";
      if (e.cue) {
        text += "cue: " + e.text;
      } else {
        text += e.kind.replace(/_/g, " ");
        if (e.set) text += " · set " + e.set;
        if (e.reason) text += " — " + e.reason;
        if (e.rule) text += " (" + e.rule + ")";
      }
      li.textContent = text;
      if (e.kind === "estop" || e.kind === "fault" || (e.cue && e.kind === "stop")) li.className = "stopish";
      else if (e.cue) li.className = "cue";
      return li;
    }),
  );
}

function onEvent(ev) {
  addEvent(ev);
  renderEvents();
  if (ev.kind === "estop" || ev.kind === "reset") refreshState();
}

// A page opened mid-session has missed the session's start: its events so far are in the history.
async function seedEvents(id) {
  seededSession = id;
  renderEvents();
  let resp;
  try {
    resp = await fetch("api/v1/history/" + id, { headers: authHeaders(), cache: "no-store" });
  } catch {
    return;
  }
  if (!resp.ok) return; // not written yet, or reads need the token: the stream fills the list
  let rec;
  try {
    rec = await resp.json();
  } catch {
    return;
  }
  for (const e of rec.events || []) addEvent(e);
  renderEvents();
}

function summarize(rec) {
  const done = (rec.sets || []).filter((x) => x.outcome === "completed").length;
  let text = "Last session #" + rec.id + " · " + rec.plan + (rec.simulated ? " (simulated)" : "") + " · " + (rec.outcome || "unfinished");
  text += " · " + done + " of " + rec.sets_planned + " sets";
  const m = (rec.sets || []).reduce((sum, x) => sum + (x.distance_m || 0), 0);
  if (m > 0) text += " · " + distance(m);
  if (rec.started_at) text += " · " + localTime(rec.started_at);
  return text;
}

async function loadLastSummary(tries = 3) {
  let recs;
  try {
    const resp = await fetch("api/v1/history?limit=1", { headers: authHeaders(), cache: "no-store" });
    if (!resp.ok) return; // reads need the token, or no history: the view's own summary stays
    recs = await resp.json();
  } catch {
    return;
  }
  if (!recs.length) return;
  if (lastSession && recs[0].id !== lastSession.id) {
    // The session that just ended is not written yet: ask again shortly; meanwhile its view speaks.
    lastSummary = "";
    if (tries > 1) setTimeout(() => loadLastSummary(tries - 1), 1000);
    renderTimer();
    return;
  }
  lastSummary = summarize(recs[0]);
  renderTimer();
}

// --- rendering ---------------------------------------------------------------------------------------

function render() {
  if (!snap) return;
  setText($("treadmill"), snap.id);
  let mode = snap.mode + " mode";
  if (snap.mode === "reverse" && snap.armed === false) mode += " · not armed";
  // Nothing invented: numbers from a simulator say so wherever they are shown.
  if (/^(sim|ftms\+sim):/.test(snap.driver || "")) mode += " · SIMULATED belt";
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
    if (session === null) setText($("cue-line"), ""); // a reset stop's "Emergency stop." is old news
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

function setDigits(text) {
  // The digits are in a span so the stylesheet can draw them taller than wide.
  const timer = $("timer");
  let span = timer.firstElementChild;
  if (!span) {
    span = document.createElement("span");
    timer.replaceChildren(span);
  }
  setText(span, text);
}

function renderTimer() {
  const card = $("timer-card");
  const phase = $("phase");
  const timer = $("timer");
  const last = $("last-session");
  if (session === null) {
    // At rest: "no session", and the last one apart, smaller, never as if it were current.
    setText(phase, "no session");
    phase.className = "phase idle";
    setText($("plan"), "");
    setDigits("–:––");
    timer.className = "timer idle";
    setText($("set"), "choose a plan below");
    $("progress").style.width = "0%";
    $("progress").className = "bar-fill";
    card.className = "card timer-card idle";
    let summary = lastSummary;
    if (lastSession && !summary) {
      summary = "Last session #" + lastSession.id + " · " + lastSession.plan + " · ";
      summary += (RUNNING.has(lastSession.phase) ? "ended" : lastSession.phase) + " at set " + lastSession.set + " of " + lastSession.sets;
    }
    setText(last, summary);
    last.hidden = !summary;
    return;
  }
  last.hidden = true;
  const v = session;
  const elapsedSince = v.paused ? 0 : (performance.now() - sessionAt) / 1000;
  const remaining = Math.max(0, v.remaining_s - elapsedSince);
  const total = v.elapsed_s + v.remaining_s;
  setText(phase, v.phase + (v.paused ? " · paused" : ""));
  phase.className = "phase " + v.phase;
  setText($("plan"), v.plan);
  const digits = clock(remaining);
  setDigits(digits);
  timer.className = "timer" + (v.paused ? " paused" : "") + (digits.length > 4 ? " long" : "");
  card.className = "card timer-card " + (v.paused ? "paused" : v.phase);
  setText($("set"), "set " + v.set + " of " + v.sets);
  const done = total > 0 ? (total - remaining) / total : 0;
  const bar = $("progress");
  bar.style.width = Math.round(done * 1000) / 10 + "%";
  bar.className = "bar-fill " + v.phase;
}

function renderControls() {
  const paused = session !== null && session.paused;
  setText($("pause"), paused ? "Resume" : "Pause");
  $("pause").disabled = session === null;
  $("abort").disabled = session === null;
  $("start").disabled = session !== null;
  $("reset").disabled = snap !== null && !snap.stop.latched;
  if (!events.length) renderEvents();
  renderSound();
}

// --- cues: heard, felt, and the screen kept on (cues.md) ----------------------------------------
//
// A person walking backward must not look down: every cue is spoken, has its own tone, and
// vibrates a phone. Browsers allow sound only after a gesture, so the first tap on Start or on the
// sound button unlocks it; until then the page says that sound is off.

const SOUND_KEY = "retrotread.sound"; // "off" when the user muted the page; kept across visits
let audio = null; // the AudioContext, made on the first gesture
let unlocked = false; // a gesture has allowed sound on this page
let muted = false;
let wakeLock = null; // the WakeLockSentinel while a session runs
let wakeProblem = ""; // why the screen may still dim, shown on the page

// Tones per kind: [frequency Hz, start s, length s]; the square wave is for the stop alarm.
const TONES = {
  countdown: [[880, 0, 0.12]],
  go: [[660, 0, 0.15], [990, 0.18, 0.3]],
  halfway: [[660, 0, 0.1], [660, 0.16, 0.1]],
  remaining: [[770, 0, 0.08], [770, 0.14, 0.08], [770, 0.28, 0.08]],
  set_done: [[523, 0, 1.2]],
  rest_ending: [[440, 0, 0.25], [440, 0.4, 0.25]],
  session_done: [[523, 0, 0.25], [659, 0.28, 0.25], [784, 0.56, 0.8]],
  paused: [[392, 0, 0.3]],
  resumed: [[523, 0, 0.3]],
  stop: [[960, 0, 0.18], [640, 0.2, 0.18], [960, 0.4, 0.18], [640, 0.6, 0.18], [960, 0.8, 0.18], [640, 1.0, 0.18]],
};
const BUZZ = {
  countdown: [80],
  go: [300],
  halfway: [80, 80, 80],
  remaining: [80, 60, 80, 60, 80],
  set_done: [700],
  rest_ending: [150, 100, 150],
  session_done: [300, 100, 300, 100, 600],
  paused: [150],
  resumed: [150],
  stop: [400, 100, 400, 100, 400],
};

function soundAllowed() {
  return unlocked && !muted;
}

function renderSound() {
  const button = $("sound");
  const on = soundAllowed();
  setText(button, on ? "Sound on" : muted ? "Muted" : "Sound off");
  button.className = "sound " + (on ? "on" : "off");
  button.setAttribute("aria-pressed", String(on));
  button.title = on ? "Mute the spoken cues and tones" : "Turn on the spoken cues and tones";
  const note = $("sound-note");
  let text = "";
  if (muted) text = "Muted: cues are shown here but not spoken. Tap Muted to hear them.";
  else if (!unlocked) text = "Sound is off until you tap Sound off or Start session: the cues are not heard.";
  else if (!("speechSynthesis" in window)) text = "This browser cannot speak: cues are tones only.";
  if (wakeProblem && session !== null) text += (text ? " " : "") + wakeProblem;
  setText(note, text);
  note.hidden = !text;
}

// Called from a gesture (a tap or a key): only then may an AudioContext start and speech begin.
function unlockSound() {
  if (muted) return;
  try {
    if (!audio) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (Ctx) audio = new Ctx();
    }
    if (audio && audio.state === "suspended") audio.resume().catch(() => {});
  } catch {
    audio = null;
  }
  if (!unlocked && "speechSynthesis" in window) {
    // iOS speaks later only if it spoke inside a gesture once.
    try {
      const u = new SpeechSynthesisUtterance("Sound on.");
      u.volume = 0.6;
      window.speechSynthesis.speak(u);
    } catch {
      // no voice: tones still play
    }
  }
  unlocked = true;
  renderSound();
}

function toggleSound() {
  if (soundAllowed()) {
    muted = true;
    if ("speechSynthesis" in window) window.speechSynthesis.cancel();
  } else {
    muted = false;
    unlockSound();
  }
  try {
    localStorage.setItem(SOUND_KEY, muted ? "off" : "on");
  } catch {
    // private mode: the choice lasts this visit
  }
  renderSound();
}

function tone(kind) {
  const notes = TONES[kind];
  if (!audio || !notes) return;
  const t0 = audio.currentTime + 0.02;
  for (const [freq, at, len] of notes) {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = kind === "stop" ? "square" : "sine";
    osc.frequency.value = freq;
    // A short ramp in and out: no click, and a long tone reads as long.
    gain.gain.setValueAtTime(0, t0 + at);
    gain.gain.linearRampToValueAtTime(kind === "stop" ? 0.35 : 0.5, t0 + at + 0.01);
    gain.gain.setValueAtTime(kind === "stop" ? 0.35 : 0.5, t0 + at + len - 0.03);
    gain.gain.linearRampToValueAtTime(0, t0 + at + len);
    osc.connect(gain).connect(audio.destination);
    osc.start(t0 + at);
    osc.stop(t0 + at + len + 0.02);
  }
}

function speak(text, kind) {
  if (!text || !("speechSynthesis" in window)) return;
  const synth = window.speechSynthesis;
  // A late cue is worse than a cut one: the newest replaces whatever is still being said.
  synth.cancel();
  const u = new SpeechSynthesisUtterance(text);
  u.rate = kind === "countdown" ? 1.2 : 1.05;
  u.volume = 1;
  synth.speak(u);
}

function onCue(cue) {
  addEvent({ ...cue, cue: true });
  renderEvents();
  const line = $("cue-line");
  // A stop's reason is shown, not spoken: the voice says only "Emergency stop." (cues.md).
  setText(line, (cue.text || "") + (cue.kind === "stop" && cue.reason ? " — " + cue.reason : ""));
  if (soundAllowed()) {
    tone(cue.kind);
    speak(cue.text, cue.kind);
  }
  if (!muted && typeof navigator.vibrate === "function" && BUZZ[cue.kind]) {
    try {
      navigator.vibrate(BUZZ[cue.kind]);
    } catch {
      // not allowed before a gesture: the tone and the voice still carry the cue
    }
  }
  if (cue.kind === "stop") refreshState();
}

// The screen stays on while a session runs (paused too: the person is still on the belt).
async function holdScreen() {
  const want = session !== null;
  if (!want) {
    if (wakeLock) {
      const lock = wakeLock;
      wakeLock = null;
      lock.release().catch(() => {});
    }
    return;
  }
  if (wakeLock || document.visibilityState !== "visible") return;
  if (!("wakeLock" in navigator)) {
    wakeProblem = "The screen may dim: keeping it on needs https or localhost.";
    renderSound();
    return;
  }
  try {
    wakeLock = { release: () => Promise.resolve() }; // a placeholder while the request is out
    const lock = await navigator.wakeLock.request("screen");
    if (session === null) {
      wakeLock = null;
      lock.release().catch(() => {});
      return;
    }
    wakeLock = lock;
    wakeProblem = "";
    // The browser drops the lock when the page is hidden; visibilitychange asks again.
    lock.addEventListener("release", () => {
      if (wakeLock === lock) wakeLock = null;
    });
  } catch (err) {
    wakeLock = null;
    wakeProblem = "The screen may dim (" + (err && err.name ? err.name : "wake lock refused") + ").";
  }
  renderSound();
}

// Space or Enter anywhere is an emergency stop: a presenter remote or a foot pedal that sends a key
// becomes a hands-free stop. Not while typing in a field (a custom plan, the token).
function isTyping(target) {
  if (!(target instanceof Element)) return false;
  if (target.isContentEditable) return true;
  const tag = target.tagName;
  return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT";
}

function onKey(e) {
  if (e.key !== " " && e.key !== "Enter" && e.code !== "Space") return;
  if (e.altKey || e.ctrlKey || e.metaKey || isTyping(e.target)) return;
  // Before any focused button sees it: a pedal must stop, not press whatever has focus.
  e.preventDefault();
  e.stopPropagation();
  if (e.repeat) return;
  unlockSound();
  emergencyStop();
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
  unlockSound(); // the tap on Start is the gesture that lets the cues be heard
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
  $("sound").addEventListener("click", toggleSound);
  window.addEventListener("keydown", onKey, true);
  document.addEventListener("visibilitychange", holdScreen);
  try {
    muted = localStorage.getItem(SOUND_KEY) === "off";
  } catch {
    muted = false;
  }
  renderSound();
  renderEvents();
  loadLastSummary();
  linkDown("connecting…");
  await loadPlans(); // before the stream: a session view is read with the daemon's phase names
  connect();
  refreshState();
  setInterval(renderTimer, 200);
  setInterval(watchdog, 1000);
}

document.addEventListener("DOMContentLoaded", init);
