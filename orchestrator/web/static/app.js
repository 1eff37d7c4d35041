// orch dashboard: live updates over one event stream per page (polling if it keeps failing),
// and the operator actions. Data from the server is only ever set as text, never as HTML.
"use strict";

const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
const page = meta("orch-page");
const token = meta("orch-token");
const live = document.getElementById("live");
let failures = 0;
let polling = null;

function cell(row, text, className) {
  const td = document.createElement("td");
  if (className) {
    const span = document.createElement("span");
    span.className = className;
    span.textContent = text;
    td.appendChild(span);
  } else {
    td.textContent = text;
  }
  row.appendChild(td);
  return td;
}

function boardRow(item) {
  const tr = document.createElement("tr");
  tr.dataset.id = item.id;
  const link = document.createElement("a");
  link.href = "/item/" + encodeURIComponent(item.id);
  link.textContent = item.id;
  cell(tr, "").appendChild(link);
  const status = cell(tr, item.status, "status " + item.status.toLowerCase());
  if (item.stale) {
    const stale = document.createElement("span");
    stale.className = "stale";
    stale.textContent = " stale: " + item.stale;
    status.appendChild(stale);
  }
  for (const key of ["title", "owner", "started", "attempts", "job", "notes"]) cell(tr, String(item[key]));
  return tr;
}

const shown = new Map(); // id -> [signature, row]: only rows that changed are rebuilt

function renderBoard(data) {
  for (const [status, count] of Object.entries(data.summary)) {
    const el = document.querySelector(`[data-count="${status}"]`);
    if (el) el.textContent = String(count);
  }
  const body = document.getElementById("rows");
  const sameOrder = data.items.length === body.children.length &&
    data.items.every((item, k) => body.children[k].dataset.id === item.id);
  const rows = data.items.map((item) => {
    const signature = JSON.stringify(item);
    const known = shown.get(item.id);
    if (known && known[0] === signature) return known[1];
    const row = boardRow(item);
    shown.set(item.id, [signature, row]);
    return row;
  });
  if (sameOrder) {
    rows.forEach((row, k) => { if (body.children[k] !== row) body.replaceChild(row, body.children[k]); });
  } else {
    body.replaceChildren(...rows);
  }
  document.querySelectorAll("img[data-chart]").forEach((img) => {
    const url = new URL(img.src, location.href);
    url.searchParams.set("t", Date.now());
    img.src = url.toString();
  });
}

function renderList(id, lines) {
  const list = document.getElementById(id);
  if (!list) return;
  const items = lines.map((text) => {
    const li = document.createElement("li");
    li.textContent = text;
    return li;
  });
  list.replaceChildren(...(items.length ? items : [Object.assign(document.createElement("li"), { textContent: "none" })]));
}

function renderItem(data) {
  for (const el of document.querySelectorAll("[data-field]")) {
    const value = data[el.dataset.field];
    el.textContent = Array.isArray(value) ? value.join(", ") : String(value ?? "");
  }
  renderList("notes", data.notes ? data.notes.split("; ") : []);
  renderList("history", data.history.map((e) => `${e.time} ${e.actor} ${e.event} ${e.from} → ${e.to} ${e.note || ""}`));
  renderList("attempts", data.runs.map((a) => `attempt ${a.attempt}: ${a.state} on ${a.branch}, ${a.steps.length} step(s)`));
  renderList("commits", data.commits.map((c) => `${c.sha.slice(0, 10)} ${c.subject} (${c.files.slice(0, 8).join(", ")})`));
}

function renderJob(data) {
  document.getElementById("job-status").textContent = data.status;
  document.getElementById("job-progress").value = data.progress;
  document.getElementById("job-counts").textContent =
    `${data.completed}/${data.dispatched} done, ${data.failed} failed, ${data.backlog} in backlog`;
  const body = document.getElementById("results");
  body.replaceChildren(...data.results.map((r) => {
    const tr = document.createElement("tr");
    for (const key of ["id", "status", "attempts", "duration_s", "pool", "branch", "cost_usd"]) cell(tr, String(r[key] ?? ""));
    return tr;
  }));
  const log = document.getElementById("log");
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.textContent = data.log.join("\n");
  if (atBottom) log.scrollTop = log.scrollHeight;
}

let latest = 0; // answers can arrive out of order: only the newest request's answer is shown

async function refresh() {
  const mine = ++latest;
  let url;
  if (page === "board") url = "/api/items" + location.search;
  else if (page.startsWith("item:")) url = "/api/items/" + encodeURIComponent(page.slice(5));
  else if (page.startsWith("job:")) url = "/api/jobs/" + encodeURIComponent(page.slice(4));
  else return;
  const answer = await fetch(url, { headers: { Accept: "application/json" } });
  if (!answer.ok) return;
  const data = await answer.json();
  if (mine !== latest) return;
  if (page === "board") renderBoard(data);
  else if (page.startsWith("item:")) renderItem(data);
  else renderJob(data);
  document.body.dataset.refreshed = String(Date.now());
}

function startPolling() {
  if (polling) return;
  live.textContent = "polling";
  polling = setInterval(refresh, 2000);
}

function connect() {
  const source = new EventSource("/api/stream");
  source.addEventListener("hello", () => {
    failures = 0;
    live.textContent = "live";
    live.classList.add("on");
  });
  source.addEventListener("change", refresh);
  source.addEventListener("resync", refresh);
  source.onerror = () => {
    live.classList.remove("on");
    failures += 1;
    if (failures >= 5 || source.readyState === EventSource.CLOSED) {  // a refusal (503) is never retried
      source.close();
      startPolling();
    } else {
      live.textContent = "reconnecting";
    }
  };
}

async function act(button) {
  const box = button.closest(".actions");
  const message = document.getElementById("message");
  const body = {};
  for (const input of box.querySelectorAll("input")) body[input.name] = input.value;
  const answer = await fetch(`/api/items/${encodeURIComponent(box.dataset.id)}/${button.dataset.action}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Orch-Token": token },
    body: JSON.stringify(body),
  });
  const data = await answer.json();
  message.className = "message" + (answer.ok ? " ok" : "");
  message.textContent = answer.ok ? `${data.id} -> ${data.status}` : data.error;
  refresh();
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button) act(button);
});

if (page !== "error") connect();
