// The operator console: a live view of the gateway's stream instances, and a tail of one.
// Everything from the server is untrusted (labels come from URLs, data from upstreams): it only
// ever reaches the page through textContent and attributes, never innerHTML.
import { LiveDocument } from "/client.js";

const $ = (id) => document.getElementById(id);
const rows = $("streams").tBodies[0];
const MAX_TAIL = 200;
let live = null;
let tail = null;
let tailing = null;

window.consoleDocument = () => live?.document ?? null;
window.consoleTail = () =>
  [...$("tail-events").children].map((li) => ({ event: li.dataset.event, id: li.dataset.id, data: li.dataset.data }));

/** One badge, its class the same word, so CSS colours it and tests can read either. */
function setState(word) {
  $("state").textContent = word;
  $("state").className = word;
}

/** Human bytes: operators compare orders of magnitude, not exact counts (those are in the title). */
function human(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "-";
  if (Math.abs(n) < 1024) return n + " B";
  if (Math.abs(n) < 1024 * 1024) return (n / 1024).toFixed(1) + " KB";
  return (n / 1024 / 1024).toFixed(1) + " MB";
}

function clock(when) {
  const d = when instanceof Date ? when : new Date(when);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

// --- login -------------------------------------------------------------------------------------

/** Asked before the feed starts: an EventSource answered 401 only says "error", and retries forever. */
async function needsLogin() {
  try {
    return (await fetch("/streams", { credentials: "same-origin", cache: "no-store" })).status === 401;
  } catch {
    return false; // unreachable: let the LiveDocument report it and keep retrying
  }
}

function showLogin() {
  live?.close();
  live = null;
  setState("login");
  $("login").hidden = false;
  $("logout").hidden = true;
  $("token").focus();
}

$("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  const res = await fetch("/login", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: "token=" + encodeURIComponent($("token").value),
    credentials: "same-origin",
  }).catch(() => null);
  if (res && (res.status === 204 || res.ok)) {
    $("token").value = "";
    $("login").hidden = true;
    $("logout").hidden = false;
    start();
    if (tailing) startTail(tailing); // the tail was refused without the cookie as well
  } else if (res && res.status === 401) {
    $("login-error").textContent = "wrong token";
  } else {
    $("login-error").textContent = res ? "login failed: " + res.status : "gateway unreachable";
  }
});

$("logout").addEventListener("click", async () => {
  await fetch("/logout", { method: "POST", credentials: "same-origin" }).catch(() => null);
  stopTail();
  showLogin();
});

// --- the feed ----------------------------------------------------------------------------------

function start() {
  live?.close();
  setState("connecting");
  live = new LiveDocument("/streams?watch");
  const mine = live;
  live.addEventListener("change", (e) => {
    setState("live");
    render(e.detail.document, e.detail.event !== "snapshot");
  });
  live.addEventListener("status", async (e) => {
    const s = e.detail.state;
    $("resyncs").textContent = mine.resyncs;
    if (s === "ended") setState("ended");
    else if (s === "reconnecting" || s === "resync" || s === "overloaded") {
      setState("reconnecting");
      // A session that expired looks like a dropped connection: ask once, so it is not retried forever.
      if (s === "reconnecting" && mine === live && (await needsLogin()) && mine === live) showLogin();
    } else if ((s === "connected" || s.startsWith("upstream-")) && mine.document !== undefined) setState("live");
  });
}

/** Rows are kept by instance label and updated in place, so a flash shows what changed. */
function render(doc, flash) {
  const list = Array.isArray(doc?.instances) ? doc.instances : [];
  const t = doc?.totals ?? {};
  $("totals").textContent =
    `${t.instances ?? list.length} instances · ${t.clients ?? 0} clients · ${human(t.saved)} saved`;
  $("cluster").hidden = doc?.cluster == null;
  $("cluster").textContent = doc?.cluster == null ? "" : String(doc.cluster);
  $("empty").hidden = list.length > 0;

  const seen = new Set();
  let before = rows.firstElementChild;
  for (const inst of list) {
    const label = String(inst?.instance ?? "");
    seen.add(label);
    let tr = [...rows.children].find((r) => r.dataset.instance === label);
    if (!tr) tr = newRow(label);
    // Kept in the document's order (stream, then instance) without rebuilding.
    if (tr !== before) rows.insertBefore(tr, before);
    else before = before.nextElementSibling;
    if (fill(tr, inst) && flash) {
      tr.classList.remove("flash");
      void tr.offsetWidth; // restart the transition when a row changes twice in a row
      tr.classList.add("flash");
      setTimeout(() => tr.classList.remove("flash"), 60);
    }
  }
  for (const tr of [...rows.children]) if (!seen.has(tr.dataset.instance)) tr.remove();
}

const CELLS = ["stream", "instance", "clients", "health", "last-poll", "event-id", "saved", "role", "actions"];

function newRow(label) {
  const tr = document.createElement("tr");
  tr.dataset.instance = label;
  for (const name of CELLS) tr.insertCell().className = name;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "tail";
  button.textContent = "tail";
  button.addEventListener("click", () => startTail(tr.dataset.instance));
  tr.cells[8].append(button);
  tr.classList.toggle("tailing", label === tailing);
  return tr;
}

/** Sets each cell; returns whether anything visible changed. */
function fill(tr, inst) {
  const b = inst.bytes ?? {};
  const healthy = inst.upstream_healthy !== false;
  const values = {
    stream: String(inst.stream ?? ""),
    instance: String(inst.instance ?? ""),
    clients: String(inst.clients ?? 0),
    health: healthy ? "healthy" : "failing",
    "last-poll": inst.last_poll ? `${clock(inst.last_poll)} ${inst.last_result ?? ""}`.trim() : "",
    "event-id": String(inst.event_id ?? ""),
    saved: human(b.saved),
    role: String(inst.cluster?.role ?? ""),
  };
  let changed = false;
  for (const [name, text] of Object.entries(values)) {
    const td = tr.cells[CELLS.indexOf(name)];
    if (td.textContent !== text) { td.textContent = text; changed = true; }
  }
  const health = tr.cells[CELLS.indexOf("health")];
  health.className = "health " + values.health;
  const title = `upstream ${b.upstream ?? 0} B · polling equivalent ${b.polling_equivalent ?? 0} B · pushed ${b.pushed ?? 0} B`;
  tr.cells[CELLS.indexOf("saved")].title = title;
  const holder = inst.cluster ? `node ${inst.cluster.node ?? "?"}, holder ${inst.cluster.holder ?? "none"}` : "";
  tr.cells[CELLS.indexOf("role")].title = holder;
  return changed;
}

// --- the tail ----------------------------------------------------------------------------------

const TAIL_EVENTS = ["snapshot", "patch", "merge-patch", "upstream-status", "end"];

function startTail(label) {
  stopTail();
  tailing = label;
  $("tail").hidden = false;
  $("tail-instance").textContent = label;
  $("tail-events").replaceChildren();
  for (const tr of rows.children) tr.classList.toggle("tailing", tr.dataset.instance === label);
  const es = (tail = new EventSource("/streams/tail?instance=" + encodeURIComponent(label)));
  // EventSource keeps the last id for events sent without one: only those with ids show one.
  for (const name of TAIL_EVENTS)
    es.addEventListener(name, (e) => es === tail && note(name, name === "end" || name === "upstream-status" ? "" : e.lastEventId, e.data));
  // CLOSED: a 404 (the instance is gone) or 401; the browser will not retry, so say so.
  es.addEventListener("error", () => es === tail && es.readyState === 2 && note("error", "", "tail closed by the gateway"));
}

function stopTail() {
  tail?.close();
  tail = null;
  tailing = null;
  $("tail").hidden = true;
  for (const tr of rows.children) tr.classList.remove("tailing");
}

$("tail-stop").addEventListener("click", stopTail);

/** Newest first and capped, so a busy stream cannot grow the page without bound. */
function note(event, id, data) {
  const li = document.createElement("li");
  li.dataset.event = event;
  li.dataset.id = id ?? "";
  li.dataset.data = data ?? "";
  const part = (cls, text) => {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  };
  const code = document.createElement("code");
  const text = String(data ?? "");
  code.textContent = text.length > 400 ? text.slice(0, 400) + "…" : text;
  li.append(part("time", clock(new Date())), part("event", event), part("id", id || ""), code);
  const list = $("tail-events");
  list.prepend(li);
  while (list.children.length > MAX_TAIL) list.lastElementChild.remove();
}

// --- start -------------------------------------------------------------------------------------

const asked = new URLSearchParams(location.search).get("tail");
if (await needsLogin()) {
  showLogin();
  if (asked) tailing = asked; // started after the login
} else {
  start();
  if (asked) startTail(asked);
}
