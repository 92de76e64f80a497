// The notifier's console: plain JavaScript, no framework, no build step. It reads the deployment
// through the HTTP API with the operator's bearer token (kept in this tab's sessionStorage; a
// `#token=…` fragment signs in and is removed from the address at once), polls while it is open,
// and never holds data of its own: every figure comes from GET /v1/events and /v1/deployment.
"use strict";

const EVERY_MS = 1000;
const TOKEN = "notifier-console-token";
const $ = (id) => document.getElementById(id);
/** Each event's last few samples of pushes finished, for the rate now. */
const samples = new Map();
let timer = null;

function token() {
  return sessionStorage.getItem(TOKEN);
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${token()}`, ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    signOut("That token was refused.");
    throw new Error("unauthorized");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.error || body.message || `HTTP ${response.status}`);
  }
  return body;
}

function signIn(value) {
  sessionStorage.setItem(TOKEN, value);
  $("sign-in").hidden = true;
  $("signed-in").hidden = false;
  $("sign-out").hidden = false;
  $("sign-in-error").textContent = "";
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, EVERY_MS);
}

function signOut(why) {
  sessionStorage.removeItem(TOKEN);
  clearInterval(timer);
  $("signed-in").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("mode").hidden = true;
  $("events").querySelector("tbody").replaceChildren();
  $("sign-in-error").textContent = why || "";
}

let refreshing = false;
async function refresh() {
  if (refreshing || !token()) return;
  refreshing = true;
  try {
    const [events, deployment] = await Promise.all([api("/v1/events"), api("/v1/deployment")]);
    showMode(deployment.mode);
    showEvents(events.events);
    showDeployment(deployment, events.events);
    $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (e.message !== "unauthorized") $("status").textContent = `not updated: ${e.message}`;
  } finally {
    refreshing = false;
  }
}

function showMode(mode) {
  const badge = $("mode");
  badge.textContent = mode === "dry-run" ? "dry run" : mode;
  badge.className = `badge ${mode}`;
  badge.hidden = false;
}

const finished = (e) => (e.sent || 0) + (e.failed || 0) + (e.pruned || 0) + (e.skipped || 0);

/** Pushes a second over the last few seconds, from this page's own samples. */
function rate(e) {
  const now = Date.now();
  const list = samples.get(e.event_id) || [];
  list.push([now, finished(e)]);
  while (list.length > 1 && now - list[0][0] > 5000) list.shift();
  samples.set(e.event_id, list);
  if (list.length < 2) return null;
  const [t0, n0] = list[0];
  const [t1, n1] = list[list.length - 1];
  return t1 > t0 ? ((n1 - n0) * 1000) / (t1 - t0) : null;
}

function cell(label, content, className) {
  const td = document.createElement("td");
  td.dataset.label = label;
  if (className) td.className = className;
  if (content instanceof Node) td.append(content);
  else td.textContent = content ?? "–";
  return td;
}

function progress(e) {
  const done = finished(e);
  const total = e.total ?? (e.state === "running" || e.state === "cancelling" ? null : done);
  const wrap = document.createElement("div");
  wrap.className = "progress";
  const bar = document.createElement("progress");
  bar.max = Math.max(total ?? done, 1);
  bar.value = done;
  bar.setAttribute("aria-label", `${e.event_id}: ${done} of ${total ?? "?"} pushes finished`);
  const text = document.createElement("span");
  text.className = "num";
  text.textContent = `${done.toLocaleString()} / ${total === null ? "?" : total.toLocaleString()}`;
  wrap.append(bar, text);
  return wrap;
}

function timeLeft(e, perSecond) {
  if (e.state !== "running" || !perSecond || e.total == null) return "–";
  const seconds = Math.max(0, (e.total - finished(e)) / perSecond);
  return seconds < 90 ? `${Math.round(seconds)} s` : `${Math.round(seconds / 60)} min`;
}

function reasons(e) {
  const parts = Object.entries(e.reasons || {}).map(([code, n]) => `${code} ${n}`);
  const span = document.createElement("span");
  span.className = "reasons";
  span.textContent = parts.length ? parts.join(", ") : String(e.failed ?? 0);
  return span;
}

function cancelButton(e) {
  if (e.state !== "running") return "";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "danger";
  button.textContent = "Cancel";
  button.setAttribute("aria-label", `Cancel ${e.event_id}`);
  button.addEventListener("click", async () => {
    if (!confirm(`Cancel ${e.event_id}? No replica starts another of its pushes; those sent stay sent.`)) return;
    button.disabled = true;
    try {
      await api(`/v1/events/${encodeURIComponent(e.event_id)}`, { method: "DELETE" });
      $("status").textContent = `cancelling ${e.event_id}`;
      refresh();
    } catch (err) {
      $("status").textContent = `cancel failed: ${err.message}`;
      button.disabled = false;
    }
  });
  return button;
}

function showEvents(events) {
  const body = $("events").querySelector("tbody");
  const rows = events.map((e) => {
    const tr = document.createElement("tr");
    tr.dataset.eventId = e.event_id;
    const perSecond = rate(e);
    const state = document.createElement("span");
    state.className = `state ${e.state}`;
    state.textContent = e.state;
    const apps = Object.keys(e.apps || {});
    tr.append(
      cell("Event", e.event_id, "id"),
      cell("Talk", e.talk_id, "num"),
      cell("App", apps.length ? apps.join(", ") : "default"),
      cell("Mode", e.mode === "dry-run" ? "dry run" : e.mode),
      cell("State", state),
      cell("Progress", progress(e)),
      cell("Rate", perSecond === null || e.state !== "running" ? "–" : `${Math.round(perSecond)}/s`, "num"),
      cell("Time left", timeLeft(e, perSecond), "num"),
      cell("Failures", reasons(e)),
      cell("Pruned", e.pruned ?? 0, "num"),
      cell("Actions", cancelButton(e)),
    );
    return tr;
  });
  body.replaceChildren(...rows);
  $("no-events").hidden = events.length > 0;
}

function item(text) {
  const li = document.createElement("li");
  li.textContent = text;
  return li;
}

function showDeployment(d, events) {
  const replicas = (d.replicas || []).map((r) =>
    item(`${r.name} · ${r.mode} · v${r.version} · ${r.in_flight}/${r.concurrency} in flight · ${r.units} running · seen ${(r.seen_ms_ago / 1000).toFixed(1)} s ago`));
  $("replicas").replaceChildren(...(replicas.length ? replicas : [item("none: no heartbeat in the last 10 s")]));
  $("backlog").textContent = `${d.backlog.depth.toLocaleString()} of ${d.backlog.max.toLocaleString()}`;
  $("jobs").textContent = d.jobs.depth.toLocaleString();
  const pace = new Map();
  for (const r of d.replicas || []) {
    for (const p of r.pace || []) {
      const key = `${p.app}/${p.provider}`;
      const seen = pace.get(key) || { ...p, quota_answers: 0 };
      seen.quota_answers += p.quota_answers;
      pace.set(key, seen);
    }
  }
  const paces = [...pace.entries()].map(([key, p]) =>
    item(`${key}: ${Math.round(p.now)}/s of ${Math.round(p.configured)}/s · ${p.quota_answers} answers of 429`));
  $("pace").replaceChildren(...(paces.length ? paces : [item("unpaced")]));
  const paused = events
    .filter((e) => e.state === "running" || e.state === "cancelling")
    .flatMap((e) => (e.paused || []).map((what) => item(`${what} in ${e.event_id}: credentials rejected (see its failures)`)));
  $("paused").replaceChildren(...(paused.length ? paused : [item("none")]));
}

async function testPush(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const result = $("test-result");
  result.textContent = "sending…";
  try {
    const body = JSON.stringify(Object.fromEntries(form.entries()));
    const r = await api("/v1/test-push", { method: "POST", headers: { "Content-Type": "application/json" }, body });
    result.textContent = `${r.outcome} (${r.mode} mode, ${r.attempts} attempt(s))${r.detail ? `: ${r.detail}` : ""}`;
  } catch (e) {
    result.textContent = `not sent: ${e.message}`;
  }
}

function start() {
  $("sign-in-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("token").value.trim());
    $("token").value = "";
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("test-push").addEventListener("submit", testPush);
  window.addEventListener("hashchange", fromFragment);
  fromFragment();
  if (token()) signIn(token());
}

/** A token in the fragment never reaches the server; it is taken, then wiped from the address. */
function fromFragment() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get("token");
  if (!given) return;
  history.replaceState(null, "", location.pathname + location.search);
  signIn(given);
}

start();
