// banger experimental web UI. Renders /api/state with DOM methods only
// (textContent, never innerHTML) so names and messages cannot inject markup.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const pollMs = 3000;
let sessionsVM = null;
let logTarget = null;

function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === undefined || c === null ? "" : String(c);
    tr.appendChild(td);
  }
  return tr;
}

function bytes(n) {
  if (!n) return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}

function duration(s) {
  if (!s) return "";
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? h + "h" + m + "m" : m ? m + "m" + (s % 60) + "s" : s + "s";
}

function showError(msg) {
  const e = $("error");
  e.textContent = msg || "";
  e.hidden = !msg;
}

async function request(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method === "POST") {
    opts.headers["X-CSRF-Token"] = csrf;
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body || {});
  }
  const resp = await fetch(path, opts);
  const text = await resp.text();
  let data = null;
  try { data = JSON.parse(text); } catch (_) { /* plain-text error */ }
  if (!resp.ok) {
    throw new Error(data && data.error ? data.error.message : text.trim() || resp.statusText);
  }
  return data;
}

function vmPath(name, rest) { return "/api/vms/" + encodeURIComponent(name) + "/" + rest; }

async function action(vm, verb) {
  let body = {};
  if (verb === "delete") {
    const live = vm.state === "running" || vm.state === "paused";
    const q = live ? "VM " + vm.name + " is " + vm.state + ". Kill it and delete it with its disks?"
                   : "Delete VM " + vm.name + " and its disks?";
    if (!confirm(q)) return;
    body = { force: live };
  }
  try {
    showError("");
    await request("POST", vmPath(vm.name, verb), body);
  } catch (e) {
    showError(verb + " " + vm.name + ": " + e.message);
  }
  refresh();
}

function button(label, fn, disabled) {
  const b = el("button", label);
  b.type = "button";
  b.disabled = !!disabled;
  b.addEventListener("click", () => { b.disabled = true; fn(); });
  return b;
}

function renderVMs(vms) {
  const tb = $("vms").tBodies[0];
  tb.replaceChildren();
  $("novms").hidden = vms.length > 0;
  for (const vm of vms) {
    const st = vm.stats || {};
    const live = vm.state === "running" || vm.state === "paused";
    const notes = [];
    if (vm.accel && vm.accel !== "kvm") notes.push("accel: " + vm.accel);
    for (const w of vm.warnings || []) notes.push(w);
    if (vm.state_reason) notes.push(vm.state_reason);
    if (vm.stats_error) notes.push("stats: " + vm.stats_error);
    const actions = document.createElement("span");
    actions.append(
      button("start", () => action(vm, "start"), vm.state !== "stopped" && vm.state !== "error"),
      button("stop", () => action(vm, "stop"), !live),
      button("delete", () => action(vm, "delete"), vm.state === "creating"),
      button("sessions", () => openSessions(vm.name), vm.state !== "running"));
    tb.appendChild(row([
      vm.name, el("span", vm.state, "state-" + vm.state), vm.ip, vm.cpus, vm.memory_mib + " MiB", vm.vmm,
      live && vm.stats ? st.cpu_percent.toFixed(1) : "", live ? bytes(st.rss_bytes) : "",
      live ? duration(st.uptime_seconds) : "", notes.join("; "), actions]));
  }
}

function renderOps(ops) {
  const tb = $("ops").tBodies[0];
  tb.replaceChildren();
  $("noops").hidden = ops.length > 0;
  for (const op of ops) {
    const p = el("progress");
    p.max = 1;
    p.value = op.progress || 0;
    tb.appendChild(row([op.id, op.kind, op.target, op.state, op.stage, p, op.error]));
  }
}

function renderImages(images) {
  const tb = $("images").tBodies[0];
  tb.replaceChildren();
  $("noimages").hidden = images.length > 0;
  for (const im of images) {
    tb.appendChild(row([im.name, (im.id || "").slice(0, 12), bytes(im.disk_bytes || im.size_bytes),
      im.managed ? "yes" : "no", (im.used_by || []).join(", "), new Date(im.created_at).toLocaleString()]));
  }
}

let refreshing = false;

async function refresh() {
  // A slow daemon must not pile up overlapping polls.
  if (refreshing) return;
  refreshing = true;
  try {
    const s = await request("GET", "/api/state");
    renderVMs(s.vms);
    renderOps(s.ops);
    renderImages(s.images);
    $("updated").textContent = "updated " + new Date(s.generated_at).toLocaleTimeString();
    if (s.errors && s.errors.length) showError(s.errors.join("; "));
    else if ($("error").textContent.startsWith("refresh:")) showError("");
  } catch (e) {
    showError("refresh: " + e.message);
  } finally {
    refreshing = false;
  }
}

async function openSessions(name) {
  sessionsVM = name;
  $("sessions-vm").textContent = name;
  $("sessions-section").hidden = false;
  await refreshSessions();
}

async function refreshSessions() {
  if (!sessionsVM) return;
  const tb = $("sessions").tBodies[0];
  try {
    const res = await request("GET", vmPath(sessionsVM, "sessions"));
    tb.replaceChildren();
    $("nosessions").hidden = res.sessions.length > 0;
    for (const s of res.sessions) {
      const vm = sessionsVM;
      tb.appendChild(row([s.name, s.state, s.pid || "", (s.argv || []).join(" "), bytes(s.log_bytes),
        button("log", () => openLog(vm, s.name))]));
    }
  } catch (e) {
    showError("sessions of " + sessionsVM + ": " + e.message);
  }
}

async function openLog(vm, session) {
  logTarget = { vm, session };
  $("log-name").textContent = vm + "/" + session;
  $("log-section").hidden = false;
  await refreshLog();
}

async function refreshLog() {
  if (!logTarget) return;
  try {
    const res = await request("GET", vmPath(logTarget.vm, "sessions/" + encodeURIComponent(logTarget.session) + "/logs?tail=32768"));
    const pre = $("log");
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = res.data;
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  } catch (e) {
    showError("log: " + e.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("sessions-close").addEventListener("click", () => { sessionsVM = null; logTarget = null; $("sessions-section").hidden = true; $("log-section").hidden = true; });
  $("log-close").addEventListener("click", () => { logTarget = null; $("log-section").hidden = true; });
  refresh();
  setInterval(refresh, pollMs);
  // Sessions are listed over SSH in the guest: poll them less often.
  setInterval(refreshSessions, 10000);
  setInterval(refreshLog, pollMs);
});
