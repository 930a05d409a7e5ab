// The status page (bootsvc/src/http/ui, bootsvc/docs/ui.md). Hand-written, no library.
// Everything a machine or the service sent goes into the DOM through textContent (el()),
// never as HTML; control and bidi characters are shown as escapes (vis()).
"use strict";

const PHASES = ["booted-installer", "network", "metadata", "disk-selected", "disk-wiped", "image-streaming",
  "image-verified", "gpt-fixed", "cloud-init-seeded", "step", "installed"];

const S = { session: null, machines: new Map(), es: null, route: null, evTimer: null, shown: null };

// Control characters (C0, DEL, C1) and bidi overrides as visible escapes.
function vis(s) {
  return String(s ?? "").replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
    (c) => {
      const n = c.charCodeAt(0);
      return n > 0xff ? "\\u" + n.toString(16).padStart(4, "0") : "\\x" + n.toString(16).padStart(2, "0");
    });
}

// An element with attributes and children (strings become text nodes).
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, String(v));
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(vis(k)));
  }
  return e;
}

function fmtSecs(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  return m + " m " + String(Math.round(s - m * 60)).padStart(2, "0") + " s";
}

function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t);
  return isNaN(d) ? vis(t) : d.toLocaleString();
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}

// Percent done of the install: the image's bytes while it streams, else the phase's place.
function progressOf(st) {
  if (!st || !st.phase) return 0;
  if (st.status === "installed" || st.status === "deprovisioned" || st.phase === "installed" || st.phase === "first-boot") return 100;
  const i = PHASES.indexOf(st.phase);
  if (i < 0) return 0;
  const step = 100 / (PHASES.length - 1);
  let p = i * step;
  const pr = st.progress;
  if (st.phase === "image-streaming" && pr && pr.bytes_total) p += step * Math.min(1, pr.bytes_done / pr.bytes_total);
  return Math.min(100, Math.round(p));
}

function lastStep(st) {
  const e = st && st.last_event;
  if (!e) return "no event yet";
  return e.phase + (e.message ? ": " + e.message : "");
}

async function api(path, opts) {
  const r = await fetch("/ui/api/" + path, Object.assign({ credentials: "same-origin" }, opts || {}));
  if (r.status === 401) { location.href = "/ui/login"; throw new Error("logged out"); }
  return r;
}

async function act(path, what, confirmText) {
  if (confirmText && !window.confirm(confirmText)) return;
  const out = document.getElementById("result");
  if (out) out.textContent = vis(what + "…");
  try {
    const r = await api(path, { method: "POST", headers: { "X-Osie-Csrf": S.session.csrf } });
    const text = await r.text();
    let shown = text;
    try {
      const j = JSON.parse(text);
      if (j.report) shown = j.report.action + ": power was " + j.report.power + (j.report.error ? "; FAILED: " + j.report.error.message : "; done");
      else if (j.error) shown = j.error;
      else if (j.state) shown = "netboot allowed: " + j.netboot.allowed + ", status " + j.state.status;
    } catch (_) { /* plain text answer */ }
    if (out) out.textContent = vis(what + ": " + r.status + " " + shown);
  } catch (e) {
    if (out) out.textContent = vis(what + ": " + e);
  }
}

async function powerStatus(mac) {
  const out = document.getElementById("result");
  out.textContent = "asking the BMC…";
  const r = await api("machines/" + encodeURIComponent(mac) + "/power");
  const j = await r.json().catch(() => ({}));
  const rep = j.report || {};
  const sys = rep.system || {};
  out.textContent = vis("power " + (rep.power || "?") + " (" + r.status + ")" +
    (sys.manufacturer ? "; " + sys.manufacturer + " " + (sys.model || "") : "") +
    (rep.error ? "; " + rep.error.message : "") + (j.error ? j.error : ""));
}

// ---- live updates ----------------------------------------------------------------------

function setConn(text, cls) {
  const c = document.getElementById("conn");
  c.textContent = text;
  c.className = "conn " + (cls || "");
}

function connect() {
  if (S.es) S.es.close();
  const es = new EventSource("/ui/api/stream");
  S.es = es;
  es.addEventListener("open", () => setConn("live", "live"));
  es.addEventListener("machines", (e) => {
    S.machines = new Map();
    for (const m of JSON.parse(e.data)) S.machines.set(m.macs[0], m);
    render(true);
  });
  es.addEventListener("machine", (e) => {
    const m = JSON.parse(e.data);
    const old = S.machines.get(m.macs[0]);
    S.machines.set(m.macs[0], m);
    changed(m, old);
  });
  es.addEventListener("removed", (e) => {
    S.machines.delete(JSON.parse(e.data).mac);
    render(true);
  });
  es.addEventListener("error", () => {
    setConn("reconnecting…", "down");
    // The browser retries by itself unless the answer was not a stream (401, 503): then
    // look whether the session is still there, and start again.
    if (es.readyState === EventSource.CLOSED) setTimeout(recheck, 2000);
  });
}

async function recheck() {
  try {
    const r = await fetch("/ui/api/session", { credentials: "same-origin" });
    if (r.status === 401) { location.href = "/ui/login"; return; }
    if (r.ok) { connect(); return; }
  } catch (_) { /* bootsvc is not back yet */ }
  setTimeout(recheck, 2000);
}

function changed(m, old) {
  if (S.route && S.route.mac) {
    if (m.macs[0] === S.route.mac) {
      renderMachineHead(m);
      clearTimeout(S.evTimer);
      S.evTimer = setTimeout(() => {
        loadEvents(m);
        loadPane(m.macs[0], "trace", "the boot trace");
        loadPane(m.macs[0], "log", "the installer log");
      }, 300);
    }
    return;
  }
  if (!updateRow(m)) render(true);
  const was = old && old.state;
  if (!was || was.status !== m.state.status || was.first_boot_at !== m.state.first_boot_at) loadTiming();
}

// ---- the list --------------------------------------------------------------------------

function row(m) {
  const st = m.state || {};
  const pct = progressOf(st);
  const mac = m.macs[0];
  return el("tr", { "data-mac": mac },
    el("td", {}, el("a", { href: "#/m/" + encodeURIComponent(mac), class: "host" }, m.hostname)),
    el("td", { class: "mono" }, mac),
    el("td", { class: "mono" }, m.ip || ""),
    el("td", {}, el("span", { class: "status " + st.status }, st.status)),
    el("td", { class: "phase" }, st.phase || ""),
    el("td", {}, el("progress", { max: 100, value: pct, "data-mac": mac }), el("span", { class: "pct" }, pct + " %")),
    el("td", { class: "last" }, lastStep(st), st.last_event ? el("div", { class: "note" }, fmtTime(st.last_event.received)) : null));
}

function updateRow(m) {
  const tbody = document.getElementById("rows");
  if (!tbody) return false;
  const old = tbody.querySelector('tr[data-mac="' + CSS.escape(m.macs[0]) + '"]');
  if (!old) return false;
  old.replaceWith(row(m));
  return true;
}

function renderList() {
  const main = document.getElementById("main");
  const list = [...S.machines.values()].sort((a, b) => a.hostname.localeCompare(b.hostname));
  const body = el("tbody", { id: "rows" }, list.map(row));
  main.replaceChildren(
    el("h1", {}, "Machines ", el("span", { class: "note" }, "(" + list.length + ")")),
    list.length ? el("table", { id: "machines" },
      el("thead", {}, el("tr", {}, ["Host", "MAC", "Address", "Status", "Phase", "Progress", "Last step"].map((h) => el("th", {}, h)))),
      body) : el("div", { class: "empty" }, "No machine in the inventory."),
    el("h2", {}, "Phase timing of the last installs"),
    el("div", { id: "timing", class: "pane" }, el("span", { class: "note" }, "loading…")));
  loadTiming();
}

async function loadTiming() {
  const box = document.getElementById("timing");
  if (!box) return;
  const r = await api("timing?last=20");
  if (!r.ok) { box.replaceChildren(el("span", { class: "note" }, "timing unavailable (" + r.status + ")")); return; }
  const t = await r.json();
  if (!t.spans.length) { box.replaceChildren(el("span", { class: "note" }, "No install finished yet.")); return; }
  const top = Math.max(...t.spans.map((s) => s.max), 0.001);
  box.replaceChildren(
    el("div", { class: "note" }, t.installs.length + " install(s), seconds from bootsvc's receipt of each event"),
    el("table", { class: "bars" },
      el("thead", {}, el("tr", {}, ["Span", "n", "min", "median", "p90", "max", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, t.spans.map((s) => {
        const bar = el("span", { class: "bar", title: "median " + fmtSecs(s.p50) });
        bar.style.width = Math.max(2, Math.round(260 * s.p50 / top)) + "px";
        return el("tr", { "data-span": s.name }, el("td", {}, s.name), el("td", {}, String(s.count)),
          el("td", {}, fmtSecs(s.min)), el("td", {}, fmtSecs(s.p50)), el("td", {}, fmtSecs(s.p90)),
          el("td", {}, fmtSecs(s.max)), el("td", {}, bar));
      }))));
}

// ---- one machine -----------------------------------------------------------------------

function renderMachine(mac) {
  const main = document.getElementById("main");
  const m = S.machines.get(mac);
  if (!m) {
    main.replaceChildren(el("p", { class: "empty" }, "No machine with MAC " + mac + " (yet)."), el("a", { href: "#/" }, "All machines"));
    return;
  }
  const admin = S.session.role === "admin";
  const enc = encodeURIComponent(mac);
  const actions = el("div", { class: "actions" },
    el("button", { type: "button", disabled: !admin, id: "reinstall",
      onclick: () => act("machines/" + enc + "/reinstall", "reinstall", "Allow " + m.hostname + " to netboot and reinstall at its next boot?") },
      "Reinstall at next boot"),
    m.bmc ? [
      el("button", { type: "button", disabled: !admin, class: "danger",
        onclick: () => act("machines/" + enc + "/reinstall/power", "reinstall now", "Reinstall " + m.hostname + " now (netboot + power cycle)?") },
        "Reinstall now"),
      el("button", { type: "button", onclick: () => powerStatus(mac) }, "Power status"),
      ["on", "off", "cycle"].map((a) => el("button", { type: "button", disabled: !admin, class: a === "on" ? null : "danger",
        onclick: () => act("machines/" + enc + "/power/" + a, "power " + a, a === "on" ? null : "Power " + a + " " + m.hostname + "?") },
        "Power " + a)),
    ] : el("span", { class: "note" }, "no BMC in the record: no power buttons"),
    admin ? null : el("span", { class: "note" }, "read-only session"));
  main.replaceChildren(
    el("p", {}, el("a", { href: "#/" }, "← All machines")),
    el("div", { id: "head" }),
    actions,
    el("div", { id: "result", class: "result" }),
    el("h2", {}, "Install timeline"),
    el("div", { id: "timeline" }, el("span", { class: "note" }, "loading…")),
    el("h2", {}, "Events"),
    el("div", { id: "events", class: "pane" }),
    el("h2", {}, "Boot trace"),
    el("div", { id: "trace", class: "pane" }, el("span", { class: "note" }, "loading…")),
    el("h2", {}, "Installer log"),
    el("div", { id: "log", class: "pane" }, el("span", { class: "note" }, "loading…")));
  renderMachineHead(m);
  loadEvents(m);
  loadPane(mac, "trace", "the boot trace");
  loadPane(mac, "log", "the installer log");
}

function renderMachineHead(m) {
  const head = document.getElementById("head");
  if (!head) return;
  const st = m.state || {};
  const pct = progressOf(st);
  const pr = st.progress;
  head.replaceChildren(...[
    el("h1", {}, m.hostname, " ", el("span", { class: "status " + st.status, id: "status" }, st.status)),
    el("dl", { class: "kv" },
      el("dt", {}, "MAC"), el("dd", { class: "mono" }, m.macs.join(", ")),
      el("dt", {}, "Address"), el("dd", { class: "mono" }, m.ip || "from DHCP"),
      el("dt", {}, "Phase"), el("dd", { id: "phase" }, st.phase || "–"),
      el("dt", {}, "Progress"), el("dd", {}, el("progress", { max: 100, value: pct, id: "progress" }),
        el("span", { class: "pct" }, pct + " %" + (pr && pr.bytes_total ? " — " + fmtBytes(pr.bytes_done) + " of " + fmtBytes(pr.bytes_total) + (pr.rate ? ", " + fmtBytes(pr.rate) + "/s" : "") : ""))),
      el("dt", {}, "Last step"), el("dd", { id: "last" }, lastStep(st)),
      el("dt", {}, "Netboot"), el("dd", {}, m.netboot.allowed ? (st.deprovision ? "allowed: the next boot erases every disk" : "allowed") : (m.netboot.allow ? (st.status === "deprovisioned" ? "cleared: deprovisioned" : "cleared by the install") : "not allowed by the record")),
      el("dt", {}, "Installed"), el("dd", {}, st.installed_at ? fmtTime(st.installed_at) : "–"),
      el("dt", {}, "First boot"), el("dd", {}, st.first_boot_at ? fmtTime(st.first_boot_at) : "–"),
      st.deprovision ? [el("dt", {}, "Deprovisioning"), el("dd", {}, "asked for " + fmtTime(st.deprovision.requested_at) + (st.deprovision.removable ? ", removable disks too" : ""))] : null,
      st.deprovisioned_at ? [el("dt", {}, "Deprovisioned"), el("dd", {}, fmtTime(st.deprovisioned_at))] : null,
      el("dt", {}, "Record"), el("dd", { class: "mono" }, m.source)),
    st.last_error && st.last_error.length ? el("div", { class: "errors", id: "errors" },
      el("strong", {}, "Error chain of the last failure"),
      el("ol", {}, st.last_error.map((e) => el("li", { class: "mono" }, e)))) : null].filter(Boolean));
}

async function loadEvents(m) {
  const mac = m.macs[0];
  const r = await api("machines/" + encodeURIComponent(mac) + "/events?limit=1000");
  if (!S.route || S.route.mac !== mac) return;
  const evs = r.ok ? await r.json() : [];
  drawTimeline(evs);
  const box = document.getElementById("events");
  if (!evs.length) { box.replaceChildren(el("span", { class: "note" }, "No event yet.")); return; }
  box.replaceChildren(el("table", { id: "event-table" },
    el("thead", {}, el("tr", {}, ["#", "Received", "Phase", "Message", "From"].map((h) => el("th", {}, h)))),
    el("tbody", {}, evs.slice().reverse().map((e) => el("tr", { "data-phase": e.event.phase },
      el("td", {}, String(e.n)),
      el("td", {}, fmtTime(e.received)),
      el("td", {}, e.event.phase),
      el("td", { class: "msg" }, e.event.message,
        e.event.progress && e.event.progress.bytes_total ? " (" + fmtBytes(e.event.progress.bytes_done) + " of " + fmtBytes(e.event.progress.bytes_total) + ")" : "",
        e.event.error && e.event.error.length ? el("ol", {}, e.event.error.map((x) => el("li", { class: "mono" }, x))) : null),
      el("td", { class: "mono" }, e.source || ""))))));
}

// The last run as a line of phases, each as wide as it lasted.
function drawTimeline(evs) {
  const box = document.getElementById("timeline");
  const t = (e) => Date.parse(e.received);
  let start = -1;
  for (let i = 0; i < evs.length; i++) if (evs[i].event.phase === "booted-installer") start = i;
  if (start < 0) { box.replaceChildren(el("span", { class: "note" }, "No installer run yet.")); return; }
  const firsts = [];
  for (const e of evs.slice(start)) {
    const p = e.event.phase;
    if (p === "power" || p === "unknown") continue;
    if (!firsts.some((f) => f.phase === p)) firsts.push({ phase: p, at: t(e) });
  }
  const last = evs[evs.length - 1];
  const end = Math.max(firsts[firsts.length - 1].at, t(last), firsts[0].at + 1);
  const total = end - firsts[0].at;
  const line = el("div", { class: "timeline", id: "phases" }, firsts.map((f, i) => {
    const to = i + 1 < firsts.length ? firsts[i + 1].at : end;
    const secs = (to - f.at) / 1000;
    const seg = el("div", { class: "tl-seg " + f.phase, "data-phase": f.phase, title: f.phase + ": " + fmtSecs(secs) }, f.phase);
    seg.style.flexGrow = String(Math.max(to - f.at, total / 200));
    seg.style.flexBasis = "0";
    return seg;
  }));
  box.replaceChildren(line, el("div", { class: "tl-axis" }, el("span", {}, fmtTime(new Date(firsts[0].at).toISOString())),
    el("span", {}, fmtSecs(total / 1000) + " in all")));
}

// A pane the service may not have (the boot trace, the installer log): shown when the API answers.
async function loadPane(mac, what, label) {
  const box = document.getElementById(what);
  let r;
  try { r = await api("machines/" + encodeURIComponent(mac) + "/" + what); } catch (_) { return; }
  if (r.status === 404) { box.replaceChildren(el("span", { class: "note" }, "This bootsvc does not keep " + label + ".")); return; }
  if (!r.ok) { box.replaceChildren(el("span", { class: "note" }, label + ": " + r.status)); return; }
  const type = r.headers.get("content-type") || "";
  let text;
  if (type.includes("json")) {
    const j = await r.json();
    text = paneText(j);
  } else {
    text = await r.text();
  }
  const pre = el("pre", { class: "log", id: what + "-text" });
  // Line by line: the line breaks stay, every other control character is shown escaped.
  pre.textContent = text.split("\n").map(vis).join("\n");
  box.replaceChildren(pre);
}

// One trace step as `kind key=value …` (the step's own fields; not its number, time, MAC, run).
function stepText(st) {
  const skip = new Set(["n", "at_ms", "mac", "kind", "run_id"]);
  const kv = Object.entries(st).filter(([k, x]) => !skip.has(k) && x !== null && x !== "" && !(Array.isArray(x) && !x.length))
    .map(([k, x]) => k + "=" + (typeof x === "object" ? JSON.stringify(x) : x));
  return (st.kind ? st.kind + " " : "") + kv.join(" ");
}

// The boot trace (steps and a diagnosis) or the installer log (runs of lines) as lines of text;
// anything else as indented JSON.
function paneText(j) {
  const out = [];
  if (Array.isArray(j.runs)) {
    for (const run of j.runs) {
      out.push("── run " + (run.run_id ?? "?") + (run.dropped ? " (" + run.dropped + " lines dropped)" : ""));
      for (const l of run.lines || []) out.push(typeof l === "string" ? l : (l.text ?? JSON.stringify(l)));
    }
    return out.length ? out.join("\n") : "(no log kept)";
  }
  if (Array.isArray(j.steps)) {
    const d = j.diagnosis;
    if (d) out.push("diagnosis: " + (typeof d === "string" ? d : (d.health ?? "") + ": " + (d.at ?? "") + (d.cause ? "; likely cause: " + d.cause : "")), "");
    for (const s of j.steps) {
      const st = s.at_ms !== undefined ? s : (s.step || s);
      const at = st.at_ms ? new Date(st.at_ms).toLocaleTimeString() + "  " : "";
      out.push(at + stepText(st));
    }
    return out.join("\n");
  }
  return JSON.stringify(j, null, 1);
}

// ---- routing and start -----------------------------------------------------------------

function routeOf() {
  const h = location.hash;
  const m = h.match(/^#\/m\/(.+)$/);
  return m ? { mac: decodeURIComponent(m[1]) } : { list: true };
}

function render(force) {
  const r = routeOf();
  const same = S.route && S.route.mac === r.mac;
  S.route = r;
  if (r.mac) {
    if (!same || force) renderMachine(r.mac);
  } else {
    renderList();
  }
}

async function start() {
  const r = await fetch("/ui/api/session", { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/ui/login"; return; }
  S.session = await r.json();
  document.getElementById("role").textContent = S.session.role === "admin" ? "admin" : "read-only";
  document.getElementById("logout").addEventListener("click", async () => {
    await api("logout", { method: "POST", headers: { "X-Osie-Csrf": S.session.csrf } });
    location.href = "/ui/login";
  });
  window.addEventListener("hashchange", () => render(true));
  render(true);
  connect();
}

start();
