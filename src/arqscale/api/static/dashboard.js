// arqscale dashboard: everything it shows and does goes through the JSON API (/v1, see /openapi.json).
// Job arguments, results and errors are user data: they are only ever set as text (textContent,
// text nodes, attribute values), never parsed as HTML.
"use strict";

const TOKEN_KEY = "arqscale.api-token";
const COUNTS = ["waiting", "held", "active", "delayed", "paused", "completed", "failed", "backlog"];
const PAGE_SIZE = 20;
const SETTLED = new Set(["completed", "failed", "dead", "cancelled", "not_found"]);
const CANCELLABLE = new Set(["waiting", "active", "delayed"]); // list states whose jobs can be cancelled

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

// el("td", {class: "n"}, "text", node): strings become text nodes, never markup.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

// Actions that change something: hidden for a read-only token (the API refuses them anyway, 403).
const MUTATING = new Set(["cancel", "delete", "remove", "requeue", "toggle", "promote", "retry", "duplicate",
  "webhook-retry", "webhook-delete"]);

function button(label, onClick, attrs) {
  const extra = attrs && MUTATING.has(attrs["data-action"]) ? {class: `${attrs.class || ""} mutate`.trim()} : {};
  const b = el("button", {type: "button", ...attrs, ...extra}, label);
  b.addEventListener("click", () => onClick(b));
  return b;
}

function show(node, text) {
  node.textContent = text || "";
  node.hidden = !text;
}

// ---- talking to the API ------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.details = (body && body.details) || [];
  }
}

async function api(method, path, json) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = {Accept: "application/json"};
  if (token) headers.Authorization = "Bearer " + token;
  const init = {method, headers, cache: "no-store"};
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, {message: `the API does not answer (${err.message})`});
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    // not JSON: a proxy's error page, say; the status tells enough
  }
  if (response.status === 401) {
    askForToken(token ? "The API refused this token (401). Check ARQSCALE_API_TOKEN and try again." : "");
    throw new ApiError(401, body);
  }
  // An unknown job id is a 404 whose body is still a job status (state not_found).
  if (!response.ok && !(response.status === 404 && body && body.state === "not_found")) {
    throw new ApiError(response.status, body);
  }
  return body;
}

function describe(err) {
  const fields = err.details.map((d) => `${d.field}: ${d.message}`).join("; ");
  return fields ? `${err.message} (${fields})` : err.message;
}

let flashTimer = null;

function flash(text, isError) {
  show($("flash"), text);
  $("flash").className = isError ? "error" : "";
  clearTimeout(flashTimer);
  if (!isError) flashTimer = setTimeout(() => show($("flash"), ""), 8000); // errors stay until the next action
}

// Runs an action from a button: disables it meanwhile, reports the outcome, then redraws.
async function act(btn, method, path, success) {
  if (btn) btn.disabled = true;
  try {
    const body = await api(method, path);
    flash(success(body), false);
    await refresh();
  } catch (err) {
    if (err.status !== 401) flash(describe(err), true);
  } finally {
    if (btn) btn.disabled = false;
  }
}

// ---- token ---------------------------------------------------------------------------------------

let timer = null;

function askForToken(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(timer);
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("login").hidden = false;
  show($("login-error"), message);
  $("token").focus();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";
  // An HTTP header carries no other characters: fetch() would refuse it before asking the API.
  if (!/^[\x20-\x7e]+$/.test(token)) return show($("login-error"), "A token has only printable ASCII characters.");
  sessionStorage.setItem(TOKEN_KEY, token);
  start();
});

$("sign-out").addEventListener("click", () => askForToken(""));

// ---- routes: every view has its own URL (#/queue/<q>/jobs/<state>/<offset>, #/job/<id>, ...) ----------
// Opening a view pushes its URL, so links can be shared and Back returns to the previous view; opening
// one from a URL (a pasted link, Back, Forward) pushes nothing.

let routing = false;

function setRoute(hash) {
  if (!routing && location.hash !== hash) history.pushState(null, "", hash);
}

function jobsRoute() {
  return `#/queue/${enc(jobs.queue)}/jobs/${jobs.state}/${jobs.offset}`;
}

function deadRoute() {
  return `#/queue/${enc(dead.queue)}/dead/${dead.offset}`;
}

async function applyRoute() {
  const hash = location.hash.replace(/^#\/?/, "");
  routing = true;
  try {
    if (hash.startsWith("job/")) return showJob(decodeURIComponent(hash.slice(4)));
    if (hash.startsWith("search?")) return await runSearch(new URLSearchParams(hash.slice(7)));
    const [kind, rawQueue, view, a] = hash.split("/");
    if (kind !== "queue" || !rawQueue) return;
    const queue = decodeURIComponent(rawQueue);
    const offset = Math.max(0, Number.parseInt(a, 10) || 0);
    if (view === "jobs") await openJobs(queue, STATES[a] ? a : "waiting", Math.max(0, Number.parseInt(hash.split("/")[4], 10) || 0));
    else if (view === "dead") await openDead(queue, offset);
    else if (view === "charts") await openCharts(queue, Number.parseInt(a, 10));
    else if (view === "schedules") await openSchedules(queue);
    else if (view === "webhooks") await openWebhooks(queue);
    else if (view === "workers") await openWorkers(queue);
  } finally {
    routing = false;
  }
}

window.addEventListener("popstate", () => applyRoute().catch(report));

// Keyboard: "/" goes to the search, Escape leaves a field.
document.addEventListener("keydown", (event) => {
  const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName);
  if (event.key === "/" && !typing && !$("app").hidden) {
    event.preventDefault();
    $("search-prefix").focus();
  } else if (event.key === "Escape" && typing) {
    document.activeElement.blur();
  }
});

// ---- search: a queue's jobs by id prefix, function and state -----------------------------------------

function searchParams() {
  const params = new URLSearchParams({queue: $("search-queue").value});
  for (const [name, id] of [["prefix", "search-prefix"], ["function", "search-function"], ["state", "search-state"]]) {
    if ($(id).value) params.set(name, $(id).value);
  }
  return params;
}

async function runSearch(params) {
  const queue = params.get("queue") || [...rows.keys()][0];
  if (!queue) return;
  fillQueues($("search-queue"), queue);
  $("search-prefix").value = params.get("prefix") || "";
  $("search-function").value = params.get("function") || "";
  $("search-state").value = params.get("state") || "";
  setRoute("#/search?" + searchParams().toString());
  const query = new URLSearchParams(searchParams());
  query.delete("queue");
  const found = await api("GET", `v1/queues/${enc(queue)}/search?${query}`);
  const stateOf = {queued: "waiting", deferred: "delayed", dead: "failed"};
  $("search-list").tBodies[0].replaceChildren(...found.items.map((j) => el("tr", {"data-job": j.job_id},
    el("td", {}, button(j.job_id, () => showJob(j.job_id), {class: "link", "data-action": "view"})),
    el("td", {}, el("span", {class: "state " + j.state}, stateOf[j.state] || j.state)),
    el("td", {}, j.function || "-"),
    el("td", {class: "n"}, String(j.attempts)),
    el("td", {class: "nowrap"}, when(j.enqueued_at) || "-"))));
  $("search-list").hidden = !found.items.length;
  $("search-summary").textContent = `${found.items.length} found` +
    (found.complete ? "" : " (stopped early: narrow the search for more)");
}

function fillQueues(select, chosen) {
  const names = [...rows.keys()];
  if (select.options.length !== names.length) select.replaceChildren(...names.map((n) => el("option", {value: n}, n)));
  if (chosen) select.value = chosen;
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  runSearch(searchParams()).catch(report);
});
$("search-queue").addEventListener("focus", () => fillQueues($("search-queue")));

// ---- the refresh loop ---------------------------------------------------------------------------

async function start() {
  try {
    const session = await api("GET", "v1/session");
    document.body.classList.toggle("read-only", session.read_only);
    $("read-only-note").hidden = !session.read_only;
    await refresh();
    await applyRoute();
  } catch (err) {
    if (err.status === 401) return;
    show($("notice"), describe(err));
  }
  $("login").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = !sessionStorage.getItem(TOKEN_KEY);
  schedule();
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(tick, 1000);
}

async function tick() {
  try {
    await refresh();
  } catch (err) {
    if (err.status === 401) return;
    show($("notice"), describe(err));
  }
  if (!$("app").hidden) schedule();
}

async function refresh() {
  const data = await api("GET", "v1/queues");
  drawQueues(data.queues);
  fillQueues($("search-queue"), $("search-queue").value || undefined);
  show($("notice"), "");
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  const shown = data.queues.find((q) => q.queue === dead.queue);
  if (shown && shown.failed !== dead.total) await loadDead();
  const listed = data.queues.find((q) => q.queue === jobs.queue);
  if (listed) {
    drawTabs(listed);
    await loadJobs();
  }
  if (data.queues.some((q) => q.queue === schedules.queue)) await loadSchedules();
  if (charts.queue && Date.now() - charts.loaded >= 10000) await loadCharts();
  if (crew.queue && Date.now() - crew.loaded >= 5000) await loadWorkers();
  if (Date.now() - redisShown >= 5000) await loadRedis();
  // Only the id last asked for: a refresh of the one shown before must not replace an answer on its way.
  if (looked.id && looked.id === looked.wanted && !SETTLED.has(looked.state)) await lookup(looked.id);
}

// ---- queues ----------------------------------------------------------------------------------------

const rows = new Map(); // queue name -> its row; updated in place so a click never lands on a replaced button

function queueRow(name) {
  const row = {tr: el("tr", {"data-queue": name}), state: el("span", {class: "state"}), cells: {}, paused: false};
  row.tr.append(el("td", {}, el("strong", {}, name)), el("td", {}, row.state));
  for (const col of [...COUNTS, "oldest", "workers"]) {
    row.cells[col] = el("td", {class: "n", "data-col": col});
    row.tr.append(row.cells[col]);
  }
  row.toggle = button("Pause", (b) => {
    const verb = row.paused ? "resume" : "pause";
    act(b, "POST", `v1/queues/${enc(name)}/${verb}`, () => `Queue ${name}: ${verb === "pause" ? "paused" : "resumed"}`);
  }, {"data-action": "toggle"});
  const jobsButton = button("Jobs", () => openJobs(name, "waiting"), {"data-action": "jobs"});
  const deadButton = button("Dead letters", () => openDead(name), {"data-action": "dead"});
  const schedulesButton = button("Schedules", () => openSchedules(name), {"data-action": "schedules"});
  const chartsButton = button("Charts", () => openCharts(name), {"data-action": "charts"});
  const hooksButton = button("Webhooks", () => openWebhooks(name), {"data-action": "webhooks"});
  const workersButton = button("Workers", () => openWorkers(name), {"data-action": "workers"});
  row.tr.append(el("td", {class: "actions"}, row.toggle, " ", jobsButton, " ", deadButton, " ", schedulesButton,
    " ", chartsButton, " ", workersButton, " ", hooksButton));
  return row;
}

function drawQueues(queues) {
  const body = $("queues").tBodies[0];
  const seen = new Set();
  for (const q of queues) {
    seen.add(q.queue);
    let row = rows.get(q.queue);
    if (!row) {
      row = queueRow(q.queue);
      rows.set(q.queue, row);
      body.append(row.tr);
    }
    row.paused = q.is_paused;
    row.state.textContent = q.is_paused ? "paused" : "running";
    row.state.className = "state " + (q.is_paused ? "paused" : "running");
    for (const col of COUNTS) row.cells[col].textContent = String(q[col]);
    row.cells.failed.classList.toggle("bad", q.failed > 0);
    row.tr.classList.toggle("paused", q.is_paused);
    row.cells.oldest.textContent = duration(q.oldest_waiting_seconds);
    row.cells.workers.textContent = String(q.workers);
    row.toggle.textContent = q.is_paused ? "Resume" : "Pause";
    row.last = q;
  }
  for (const [name, row] of rows) {
    if (!seen.has(name)) {
      row.tr.remove();
      rows.delete(name);
    }
  }
}

// ---- all queues at once, and a job from a form ------------------------------------------------------

async function everyQueue(btn, verb) {
  if (!confirm(`${verb === "pause" ? "Pause" : "Resume"} every queue?`)) return;
  btn.disabled = true;
  try {
    const names = [...rows.keys()];
    for (const name of names) await api("POST", `v1/queues/${enc(name)}/${verb}`);
    flash(`${names.length} queue(s) ${verb === "pause" ? "paused" : "resumed"}`, false);
    await refresh();
  } catch (err) {
    report(err);
  } finally {
    btn.disabled = false;
  }
}

$("pause-all").addEventListener("click", (e) => everyQueue(e.currentTarget, "pause"));
$("resume-all").addEventListener("click", (e) => everyQueue(e.currentTarget, "resume"));

// Opened empty, or filled from a job (Duplicate): the same function and arguments, a new id.
function openAdd(job) {
  fillQueues($("add-queue"), job && job.queue);
  $("add-function").value = (job && job.function) || "";
  $("add-args").value = JSON.stringify((job && job.args) || []);
  $("add-kwargs").value = JSON.stringify((job && job.kwargs) || {});
  $("add-priority").value = job && job.priority !== null && job.priority !== undefined ? job.priority : "";
  $("add-defer").value = "";
  $("add-id").value = "";
  show($("add-error"), "");
  $("add").hidden = false;
  $("add-function").focus();
}

$("add-open").addEventListener("click", () => openAdd(null));
$("add-close").addEventListener("click", () => { $("add").hidden = true; });

$("add-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = {function: $("add-function").value.trim()};
  try {
    body.args = JSON.parse($("add-args").value || "[]");
    body.kwargs = JSON.parse($("add-kwargs").value || "{}");
  } catch (err) {
    return show($("add-error"), `Arguments are not JSON: ${err.message}`);
  }
  if ($("add-priority").value !== "") body.priority = Number($("add-priority").value);
  if ($("add-defer").value !== "") body.defer_seconds = Number($("add-defer").value);
  if ($("add-id").value.trim()) body.job_id = $("add-id").value.trim();
  const queue = $("add-queue").value;
  try {
    const r = await api("POST", `v1/queues/${enc(queue)}/jobs`, body);
    show($("add-error"), "");
    flash(`Enqueued ${r.job_id} in ${queue}`, false);
    $("add").hidden = true;
    showJob(r.job_id);
  } catch (err) {
    if (err.status !== 401) show($("add-error"), describe(err));
  }
});

// ---- a queue's live workers --------------------------------------------------------------------------------

const crew = {queue: null, loaded: 0};

async function openWorkers(queue) {
  Object.assign(crew, {queue, loaded: 0});
  setRoute(`#/queue/${enc(queue)}/workers`);
  $("workers-queue").textContent = queue;
  try {
    await loadWorkers();
    $("workers").hidden = false;
  } catch (err) {
    report(err);
  }
}

function ago(seconds) {
  if (!seconds) return "-";
  return `${duration(Math.max(Date.now() / 1000 - seconds, 0.1))} ago`;
}

async function loadWorkers() {
  const queue = crew.queue;
  const list = await api("GET", `v1/queues/${enc(queue)}/workers`);
  if (queue !== crew.queue) return;
  crew.loaded = Date.now();
  $("workers-total").textContent = `(${list.workers.length})`;
  $("workers-list").tBodies[0].replaceChildren(...list.workers.map((w) => el("tr", {"data-worker": w.worker_id},
    el("td", {class: "nowrap"}, w.worker_id),
    el("td", {}, w.pod || w.host || "-"),
    el("td", {class: "n"}, w.pid === null ? "-" : String(w.pid)),
    el("td", {class: "n", "data-col": "running"},
      w.running === null ? "-" : `${w.running}${w.concurrency ? ` of ${w.concurrency}` : ""}`),
    el("td", {class: "nowrap", title: w.started_at ? iso(w.started_at) : ""}, when(w.started_at) || "-"),
    el("td", {class: "nowrap", "data-col": "heartbeat"}, ago(w.heartbeat_at)))));
  $("workers-list").hidden = !list.workers.length;
  $("workers-empty").hidden = list.workers.length > 0;
}

$("workers-close").addEventListener("click", () => {
  crew.queue = null;
  $("workers").hidden = true;
});

// ---- undeliverable webhooks of a queue ------------------------------------------------------------------

const hooks = {queue: null};

async function openWebhooks(queue) {
  hooks.queue = queue;
  setRoute(`#/queue/${enc(queue)}/webhooks`);
  $("webhooks-queue").textContent = queue;
  try {
    await loadWebhooks();
    $("webhooks").hidden = false;
  } catch (err) {
    report(err);
  }
}

async function loadWebhooks() {
  const queue = hooks.queue;
  const page = await api("GET", `v1/queues/${enc(queue)}/webhooks/dead?limit=100`);
  if (queue !== hooks.queue) return;
  $("webhooks-total").textContent = `(${page.total})`;
  $("webhooks-list").tBodies[0].replaceChildren(...page.items.map((d) => el("tr", {"data-delivery": d.id},
    el("td", {class: "nowrap"}, d.id),
    el("td", {}, d.endpoint),
    el("td", {}, d.event),
    el("td", {}, button(d.job_id, () => showJob(d.job_id), {class: "link", "data-action": "view"})),
    el("td", {class: "n"}, String(d.attempts)),
    el("td", {class: "error-cell", title: d.last_error || ""}, d.last_error || "-"),
    el("td", {class: "nowrap"}, when(d.failed_at) || "-"),
    el("td", {class: "nowrap"},
      button("Retry", (b) => hookAct(b, "POST", `/${enc(d.id)}/retry`, `Sending ${d.id} again`), {"data-action": "webhook-retry"}),
      button("Delete", (b) => hookAct(b, "DELETE", `/${enc(d.id)}`, `Deleted ${d.id}`), {class: "danger", "data-action": "webhook-delete"})))));
  $("webhooks-empty").hidden = page.items.length > 0;
}

async function hookAct(btn, method, suffix, said) {
  if (method === "DELETE" && !confirm("Delete this undeliverable webhook? It will not be sent.")) return;
  btn.disabled = true;
  try {
    await api(method, `v1/queues/${enc(hooks.queue)}/webhooks/dead${suffix}`);
    flash(said, false);
    await loadWebhooks();
  } catch (err) {
    report(err);
  } finally {
    btn.disabled = false;
  }
}

$("webhooks-retry-all").addEventListener("click", (e) => hookAct(e.currentTarget, "POST", "/retry", "Sending every undeliverable webhook again"));
$("webhooks-purge-all").addEventListener("click", (e) => hookAct(e.currentTarget, "DELETE", "?all=true", "Deleted every undeliverable webhook"));
$("webhooks-close").addEventListener("click", () => {
  hooks.queue = null;
  $("webhooks").hidden = true;
});

// ---- charts: the last hour of one queue, and Redis at a glance ---------------------------------------
// Only the opened queue's history is read (lazily, every 10 s): a page with 100 queues costs one
// history read per 10 s, not 100.

const SVG = "http://www.w3.org/2000/svg";
const HOUR = 3600;
const CHARTS = [
  {key: "counts", title: "Waiting, active, delayed", series: [
    ["waiting", (s) => s.waiting], ["active", (s) => s.active], ["delayed", (s) => s.delayed]]},
  {key: "rates", title: "Completed and failed per second", series: [
    ["completed/s", (s) => s.completed_per_second, "s1"], ["failed/s", (s) => s.failed_per_second, "s3"]]},
  {key: "oldest", title: "Oldest waiting job (s)", series: [["oldest", (s) => s.oldest_waiting_seconds]]},
  {key: "workers", title: "Live workers (replicas)", series: [["workers", (s) => s.workers]]},
];
const SPANS = [300, 900, HOUR]; // what the chart shows: the last 5 min, 15 min or hour
const charts = {queue: null, loaded: 0, span: HOUR};
let redisShown = 0;

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

function seriesClass(spec, i) {
  return spec.series[i][2] || `s${i}`;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 5, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

function short(value) {
  if (value === null || value === undefined) return "–";
  return Number.isInteger(value) ? String(value) : value.toFixed(value < 10 ? 2 : 1);
}

// One chart: a line per series over the last hour; a missing value (no rate yet) breaks its line.
function chart(spec, samples, now, span) {
  const W = 360, H = 120, L = 36, B = 16;
  const values = spec.series.map(([, pick]) => samples.map(pick));
  const top = niceMax(Math.max(0, ...values.flat().filter((v) => v !== null && v !== undefined)));
  const x = (at) => L + ((at - (now - span)) / span) * (W - L - 4);
  const y = (v) => H - B - (v / top) * (H - B - 6);
  const label = `${spec.title}: ` + spec.series.map(([name], i) => `${name} ${short(values[i].at(-1))}`).join(", ");
  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "chart"});
  const title = svg("title");
  title.textContent = label;
  root.append(title, svg("line", {x1: L, x2: W - 4, y1: H - B, y2: H - B, class: "axis"}));
  for (const [v, text] of [[top, short(top)], [0, "0"]]) {
    const t = svg("text", {x: L - 4, y: y(v) + 4, "text-anchor": "end", class: "tick"});
    t.textContent = text;
    root.append(t);
  }
  const minutes = (s) => `-${s / 60} min`;
  for (const [at, text, anchor] of [[now - span, minutes(span), "start"], [now - span / 2, minutes(span / 2), "middle"], [now, "now", "end"]]) {
    const t = svg("text", {x: x(at), y: H - 2, "text-anchor": anchor, class: "tick"});
    t.textContent = text;
    root.append(t);
  }
  values.forEach((series, i) => {
    let points = [];
    const flush = () => {
      if (points.length) root.append(svg("polyline", {points: points.join(" "), class: `line ${seriesClass(spec, i)}`}));
      points = [];
    };
    series.forEach((v, j) => {
      if (v === null || v === undefined) return flush();
      points.push(`${x(samples[j].at).toFixed(1)},${y(v).toFixed(1)}`);
    });
    flush();
  });
  const legend = el("figcaption", {});
  spec.series.forEach(([name], i) => {
    legend.append(el("span", {class: `key ${seriesClass(spec, i)}`, "data-series": name}, `${name} ${short(values[i].at(-1))}`), " ");
  });
  return el("figure", {"data-chart": spec.key}, el("h3", {}, spec.title), root, legend);
}

async function openCharts(queue, span) {
  Object.assign(charts, {queue, loaded: 0, span: SPANS.includes(span) ? span : HOUR});
  setRoute(`#/queue/${enc(queue)}/charts/${charts.span}`);
  for (const b of $("charts-spans").querySelectorAll("button")) {
    b.setAttribute("aria-selected", String(Number(b.dataset.span) === charts.span));
  }
  $("charts-queue").textContent = queue;
  try {
    await loadCharts();
    $("charts").hidden = false;
  } catch (err) {
    report(err);
  }
}

async function loadCharts() {
  const queue = charts.queue;
  const data = await api("GET", `v1/queues/${enc(queue)}/history?since_seconds=${charts.span}`);
  if (queue !== charts.queue) return; // another queue was opened meanwhile
  charts.loaded = Date.now();
  const now = Date.now() / 1000;
  $("charts-grid").replaceChildren(...CHARTS.map((spec) => chart(spec, data.samples, now, charts.span)));
  $("charts-empty").hidden = data.samples.length > 0;
}

$("charts-spans").addEventListener("click", (event) => {
  const b = event.target.closest("button[data-span]");
  if (b) openCharts(charts.queue, Number(b.dataset.span));
});

$("charts-close").addEventListener("click", () => {
  charts.queue = null;
  $("charts").hidden = true;
});

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

async function loadRedis() {
  redisShown = Date.now();
  try {
    const r = await api("GET", "v1/redis");
    const limit = r.maxmemory_bytes ? ` of ${bytes(r.maxmemory_bytes)}` : "";
    $("redis").textContent = `Redis ${r.version}: ${bytes(r.used_memory_bytes)}${limit}, ${r.connected_clients} clients, ${r.commands_per_second} commands/s`;
  } catch (err) {
    if (err.status === 401) throw err;
    $("redis").textContent = "";
  }
}

// ---- jobs by state -----------------------------------------------------------------------------------

const STATES = {
  waiting: {label: "Waiting", when: "Ready since", at: (j) => j.scheduled_for,
    hint: "In the order workers take them: most urgent priority first, then the longest waiting."},
  active: {label: "Active", when: "Ready since", at: (j) => j.scheduled_for,
    hint: "Running now (a worker holds a live lease on each), in the order they were taken."},
  delayed: {label: "Delayed", when: "Runs at", at: (j) => j.scheduled_for,
    hint: "Deferred jobs and retries waiting for their backoff, soonest first."},
  completed: {label: "Completed", when: "Finished", at: (j) => j.finished_at,
    hint: "Newest first, within the queue's retention of completed jobs."},
  failed: {label: "Failed", when: "Failed", at: (j) => j.finished_at,
    hint: "The dead-letter store, newest first: use Dead letters to requeue or delete."},
};

const jobs = {queue: null, state: "waiting", offset: 0, paused: false, drawn: null, asked: 0};

function tabCount(q, state) {
  return state === "waiting" ? q.waiting + q.paused : q[state];
}

function drawTabs(q) {
  jobs.paused = q.is_paused;
  for (const tab of $("jobs-tabs").querySelectorAll("button[data-state]")) {
    const state = tab.dataset.state;
    tab.textContent = `${STATES[state].label} (${tabCount(q, state)})`;
    tab.setAttribute("aria-selected", String(state === jobs.state));
  }
}

async function openJobs(queue, state, offset) {
  Object.assign(jobs, {queue, state, offset: offset || 0, drawn: null});
  setRoute(jobsRoute());
  const row = rows.get(queue);
  if (row && row.last) drawTabs(row.last);
  $("jobs-queue").textContent = queue;
  try {
    await loadJobs();
    $("jobs").hidden = false;
    $("jobs").scrollIntoView({block: "nearest"});
  } catch (err) {
    report(err);
  }
}

async function loadJobs() {
  const {queue, state, offset} = jobs;
  const asked = ++jobs.asked; // an answer for an earlier tab or page must not replace a newer one
  const page = await api("GET", `v1/queues/${enc(queue)}/jobs?state=${state}&offset=${offset}&limit=${PAGE_SIZE}`);
  if (asked !== jobs.asked) return;
  if (!page.items.length && offset > 0 && page.total > 0) {
    jobs.offset = Math.max(0, Math.floor((page.total - 1) / PAGE_SIZE) * PAGE_SIZE); // the last page emptied
    return loadJobs();
  }
  // Lease expiries move with every heartbeat and are not shown: leave them out of the comparison.
  const shown = page.items.map(({lease_expires_at, ...item}) => item);
  const signature = JSON.stringify([queue, state, offset, jobs.paused, page.total, page.held, shown]);
  if (signature === jobs.drawn) return; // unchanged: keep the rows (and a click in progress) as they are
  jobs.drawn = signature;
  const info = STATES[state];
  $("jobs-total").textContent = `(${page.total} ${state})`;
  $("jobs-when").textContent = info.when;
  const held = page.held ? ` ${page.held} more are held back by their keys' limits (not listed; they run as their keys free up).` : "";
  $("clean-form").hidden = !(state === "completed" || state === "failed");
  $("clean-state").textContent = state;
  $("jobs-hint").textContent = info.hint + (state === "waiting" && jobs.paused ? " The queue is paused: they wait until it is resumed." : "") + held;
  $("jobs-list").tBodies[0].replaceChildren(...page.items.map((item) => jobRow(queue, state, item)));
  $("jobs-list").hidden = !page.items.length;
  $("jobs-empty").hidden = page.items.length > 0;
  const last = Math.min(offset + PAGE_SIZE, page.total);
  $("jobs-page").textContent = page.total ? `${offset + 1}-${last} of ${page.total}` : "";
  $("jobs-prev").disabled = offset === 0;
  $("jobs-next").disabled = last >= page.total;
}

// Completed: their results go, oldest first, 1000 a call (repeated while more remain). Failed: the dead letters.
$("clean-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const {queue, state} = jobs;
  const age = Number($("clean-age").value);
  if (!confirm(`Delete ${state} jobs of ${queue} that ended more than ${age} s ago?`)) return;
  let deleted = 0;
  try {
    for (let more = true; more;) {
      const r = await api("POST", `v1/queues/${enc(queue)}/clean?state=${state}&older_than_seconds=${age}`);
      deleted += r.deleted;
      more = r.more;
    }
    flash(`Cleaned ${deleted} ${state} job(s) of ${queue}`, false);
    jobs.drawn = null;
    await refresh();
  } catch (err) {
    report(err);
  }
});

function jobRow(queue, state, item) {
  const at = STATES[state].at(item);
  let details = item.note;
  let cls = "";
  if (state === "active" && item.progress) {
    details = el("span", {}, el("progress", {max: 100, value: item.progress.percent}),
      ` ${item.progress.percent}% `, item.progress.message);
  } else if (item.error) {
    details = item.error.split("\n", 1)[0];
    cls = "error-cell";
  } else if (state === "completed" && item.started_at && item.finished_at) {
    details = `took ${duration(Math.max(item.finished_at - item.started_at, 0.001))}`;
  }
  const actions = [button(item.job_id, () => showJob(item.job_id), {class: "link", "data-action": "view"})];
  if (state === "failed") {
    actions.push(" ", button("Dead letter", () => showDetail(queue, item.job_id), {"data-action": "dead-letter"}));
  }
  if (state === "failed") {
    actions.push(" ", button("Retry", (b) => retryJob(b, queue, item.job_id), {"data-action": "retry"}));
  }
  if (state === "delayed") {
    actions.push(" ", button("Promote", (b) => promoteJob(b, item.job_id), {"data-action": "promote"}));
  }
  if (CANCELLABLE.has(state)) {
    actions.push(" ", button("Cancel", (b) => cancelJob(b, item.job_id), {class: "danger", "data-action": "cancel"}));
  }
  return el("tr", {"data-job": item.job_id},
    el("td", {class: "nowrap"}, ...actions),
    el("td", {}, item.function || "-"),
    el("td", {class: "n"}, item.priority === null ? "-" : String(item.priority)),
    el("td", {class: "n"}, String(item.attempts)),
    el("td", {class: "nowrap"}, when(item.enqueued_at) || "-"),
    el("td", {class: "nowrap", title: at ? iso(at) : ""}, when(at) || "-"),
    el("td", cls ? {class: cls, title: item.error} : {}, details));
}

// A failed job is a dead letter: retrying it requeues it under its id, tries reset.
function retryJob(btn, queue, id) {
  act(btn, "POST", `v1/queues/${enc(queue)}/dead-letters/${enc(id)}/requeue`, () => `Retrying ${id}`);
}

function promoteJob(btn, id) {
  act(btn, "POST", `v1/jobs/${enc(id)}/promote`, () => `Promoted ${id}: it runs next in its priority`);
}

// Waiting or delayed: it never runs. Running: its worker stops it within a second. Either way it ends cancelled.
function cancelJob(btn, id) {
  if (!confirm(`Cancel job ${id}? It will not run (or, if running, is stopped) and is not retried.`)) return;
  act(btn, "POST", `v1/jobs/${enc(id)}/cancel`,
    (r) => r.status === "cancelled" ? `Cancelled ${id}` : `Cancelling ${id}: its worker stops it`);
}

function showJob(id) {
  setRoute(`#/job/${enc(id)}`);
  $("lookup-id").value = id;
  lookup(id);
  $("lookup").scrollIntoView({block: "nearest"});
}

$("jobs-tabs").addEventListener("click", (event) => {
  const tab = event.target.closest("button[data-state]");
  if (tab) openJobs(jobs.queue, tab.dataset.state);
});
$("jobs-prev").addEventListener("click", () => { jobs.offset = Math.max(0, jobs.offset - PAGE_SIZE); setRoute(jobsRoute()); loadJobs().catch(report); });
$("jobs-next").addEventListener("click", () => { jobs.offset += PAGE_SIZE; setRoute(jobsRoute()); loadJobs().catch(report); });
$("jobs-close").addEventListener("click", () => {
  Object.assign(jobs, {queue: null, drawn: null});
  $("jobs").hidden = true;
});

// ---- schedules ---------------------------------------------------------------------------------------

const schedules = {queue: null, drawn: null, asked: 0};

async function openSchedules(queue) {
  Object.assign(schedules, {queue, drawn: null});
  setRoute(`#/queue/${enc(queue)}/schedules`);
  $("schedules-queue").textContent = queue;
  try {
    await loadSchedules();
    $("schedules").hidden = false;
    $("schedules").scrollIntoView({block: "nearest"});
  } catch (err) {
    report(err);
  }
}

async function loadSchedules() {
  const queue = schedules.queue;
  const asked = ++schedules.asked;
  const list = await api("GET", `v1/queues/${enc(queue)}/schedules`);
  if (asked !== schedules.asked || queue !== schedules.queue) return;
  const signature = JSON.stringify(list);
  if (signature === schedules.drawn) return; // unchanged: keep the rows (and a click in progress)
  schedules.drawn = signature;
  $("schedules-total").textContent = `(${list.schedules.length})`;
  $("schedules-list").tBodies[0].replaceChildren(...list.schedules.map((s) => scheduleRow(queue, s)));
  $("schedules-list").hidden = !list.schedules.length;
  $("schedules-empty").hidden = list.schedules.length > 0;
}

function timing(s) {
  if (!s) return "-";
  if (s.every !== null) return `every ${duration(s.every)}`;
  return s.timezone === "UTC" ? `cron ${s.cron}` : `cron ${s.cron} (${s.timezone})`;
}

function scheduleRow(queue, view) {
  const path = `v1/queues/${enc(queue)}/schedules/${enc(view.name)}`;
  const last = view.last_job
    ? button(view.last_job.job_id, () => showJob(view.last_job.job_id), {class: "link", "data-action": "last-job",
      title: "tick " + iso(view.last_job.tick_at)})
    : "-";
  const state = view.problem ? "broken" : view.paused ? "paused" : "running";
  const verb = view.paused ? "resume" : "pause";
  const toggle = button(view.paused ? "Resume" : "Pause",
    (b) => act(b, "POST", `${path}/${verb}`, () => `Schedule ${view.name}: ${verb === "pause" ? "paused" : "resumed"}`),
    {"data-action": "toggle"});
  const remove = button("Remove", (b) => {
    if (!confirm(`Remove schedule ${view.name} of ${queue}? Jobs it already enqueued stay.`)) return;
    act(b, "DELETE", path, () => `Removed schedule ${view.name}`);
  }, {class: "danger", "data-action": "remove"});
  if (view.origin === "spec") {
    remove.disabled = true;
    remove.title = "declared in the queues file: remove it there";
  }
  return el("tr", {"data-schedule": view.name},
    el("td", {}, view.name, view.origin === "spec" ? el("span", {class: "muted"}, " (declared)") : null),
    el("td", view.problem ? {class: "error-cell", title: view.problem} : {}, view.problem || timing(view.schedule)),
    el("td", {}, view.schedule ? view.schedule.function : "-"),
    el("td", {class: "nowrap", title: view.next_run_at ? iso(view.next_run_at) : ""}, when(view.next_run_at) || "-"),
    el("td", {class: "nowrap"}, last),
    el("td", {}, el("span", {class: "state " + state, "data-state": state}, state)),
    el("td", {class: "nowrap"}, toggle, " ", remove));
}

$("schedules-close").addEventListener("click", () => {
  Object.assign(schedules, {queue: null, drawn: null});
  $("schedules").hidden = true;
});

// ---- dead letters ----------------------------------------------------------------------------------

const dead = {queue: null, offset: 0, total: null};

async function openDead(queue, offset) {
  Object.assign(dead, {queue, offset: offset || 0, total: null});
  setRoute(deadRoute());
  $("detail").hidden = true;
  try {
    await loadDead();
    $("dead").hidden = false;
  } catch (err) {
    if (err.status !== 401) flash(describe(err), true);
  }
}

async function loadDead() {
  const queue = dead.queue;
  const page = await api("GET", `v1/queues/${enc(queue)}/dead-letters?offset=${dead.offset}&limit=${PAGE_SIZE}`);
  if (!page.items.length && dead.offset > 0) {
    dead.offset = Math.max(0, dead.offset - PAGE_SIZE); // the last page emptied
    return loadDead();
  }
  dead.total = page.total;
  $("dead-queue").textContent = queue;
  $("dead-total").textContent = `(${page.total})`;
  $("dead-list").tBodies[0].replaceChildren(...page.items.map((item) => deadRow(queue, item)));
  $("dead-list").hidden = !page.items.length;
  $("dead-empty").hidden = page.items.length > 0;
  const last = Math.min(dead.offset + PAGE_SIZE, page.total);
  $("dead-page").textContent = page.total ? `${dead.offset + 1}-${last} of ${page.total}` : "";
  $("dead-requeue-all").disabled = $("dead-purge-all").disabled = !page.total;
  $("dead-prev").disabled = dead.offset === 0;
  $("dead-next").disabled = last >= page.total;
}

function deadRow(queue, item) {
  const firstLine = item.error.split("\n", 1)[0];
  return el("tr", {"data-job": item.job_id},
    el("td", {}, button(item.job_id, () => showDetail(queue, item.job_id), {class: "link", "data-action": "view"})),
    el("td", {}, item.function || "-"),
    el("td", {class: "n"}, String(item.attempts)),
    el("td", {class: "error-cell", title: item.error}, firstLine),
    el("td", {class: "nowrap", title: iso(item.failed_at)}, when(item.failed_at)),
    el("td", {class: "nowrap"},
      button("Requeue", (b) => requeue(b, queue, item.job_id), {"data-action": "requeue"}),
      button("Delete", (b) => purge(b, queue, item.job_id), {class: "danger", "data-action": "delete"})));
}

function requeue(btn, queue, id) {
  if (detail.id === id) $("detail").hidden = true;
  act(btn, "POST", `v1/queues/${enc(queue)}/dead-letters/${enc(id)}/requeue`, () => `Requeued ${id} to ${queue}`);
}

function purge(btn, queue, id) {
  if (!confirm(`Delete dead letter ${id} of ${queue}? It cannot be run again.`)) return;
  if (detail.id === id) $("detail").hidden = true;
  act(btn, "DELETE", `v1/queues/${enc(queue)}/dead-letters/${enc(id)}`, () => `Deleted ${id}`);
}

$("dead-requeue-all").addEventListener("click", (e) => {
  const queue = dead.queue;
  if (!confirm(`Requeue every dead letter of ${queue}?`)) return;
  act(e.target, "POST", `v1/queues/${enc(queue)}/dead-letters/requeue`, (r) => {
    const skipped = Object.keys(r.skipped).length;
    return `Requeued ${r.requeued.length} job(s) to ${queue}` + (skipped ? `; ${skipped} skipped` : "");
  });
});
$("dead-purge-all").addEventListener("click", (e) => {
  const queue = dead.queue;
  if (!confirm(`Delete every dead letter of ${queue}? They cannot be run again.`)) return;
  $("detail").hidden = true;
  act(e.target, "DELETE", `v1/queues/${enc(queue)}/dead-letters?all=true`, (r) => `Deleted ${r.purged} dead letter(s)`);
});
$("dead-prev").addEventListener("click", () => { dead.offset = Math.max(0, dead.offset - PAGE_SIZE); setRoute(deadRoute()); loadDead().catch(report); });
$("dead-next").addEventListener("click", () => { dead.offset += PAGE_SIZE; setRoute(deadRoute()); loadDead().catch(report); });
$("dead-close").addEventListener("click", () => {
  Object.assign(dead, {queue: null, total: null});
  $("dead").hidden = true;
  $("detail").hidden = true;
});

function report(err) {
  if (err.status !== 401) flash(describe(err), true);
}

// ---- one dead letter -----------------------------------------------------------------------------------

const detail = {queue: null, id: null};

async function showDetail(queue, id) {
  let entry;
  try {
    entry = await api("GET", `v1/queues/${enc(queue)}/dead-letters/${enc(id)}`);
  } catch (err) {
    return report(err);
  }
  Object.assign(detail, {queue, id});
  $("detail-id").textContent = id;
  $("detail-fields").replaceChildren(...fields([
    ["Queue", entry.queue],
    ["Function", entry.function],
    ["Priority", entry.priority],
    ["Attempts", entry.attempts],
    ["Enqueued", when(entry.enqueued_at)],
    ["Failed", when(entry.failed_at)],
    ["Arguments", block(entry.args)],
    ["Keyword arguments", block(entry.kwargs)],
    ["Error", block(entry.error)],
    ["Traceback", block(entry.traceback)],
  ]));
  $("detail").hidden = false;
  $("detail").scrollIntoView({block: "nearest"});
}

$("detail-requeue").addEventListener("click", (e) => requeue(e.target, detail.queue, detail.id));
$("detail-purge").addEventListener("click", (e) => purge(e.target, detail.queue, detail.id));
$("detail-close").addEventListener("click", () => { $("detail").hidden = true; });

// ---- job lookup ------------------------------------------------------------------------------------------

const looked = {id: null, wanted: null, state: null, drawn: null, asked: 0};

$("lookup-form").addEventListener("submit", (event) => {
  event.preventDefault();
  lookup($("lookup-id").value.trim());
});

async function lookup(id) {
  const out = $("job");
  const asked = ++looked.asked; // a slow answer for an earlier id must not replace a newer one
  looked.wanted = id;
  let job;
  try {
    job = await api("GET", `v1/jobs/${enc(id)}`);
  } catch (err) {
    if (asked !== looked.asked) return;
    Object.assign(looked, {id: null, state: null, drawn: null});
    out.hidden = false;
    if (err.status !== 401) out.replaceChildren(...fields([["Job", id], ["Error", describe(err)]]));
    return;
  }
  // The job's log (ctx["log"] and logging while its tasks ran), as plain text in a <pre>: never markup.
  let logs = null;
  if (job.state !== "not_found") {
    try {
      logs = logText(await api("GET", `v1/jobs/${enc(id)}/logs?limit=1000`));
    } catch (err) {
      logs = `(log not available: ${describe(err)})`;
    }
  }
  // The timeline: the job's events from its queue's stream (enqueue, each try with its worker and
  // duration, retries, the end). Trimmed streams keep fewer; the status above stays exact.
  let events = null;
  if (job.state !== "not_found") {
    try {
      events = (await api("GET", `v1/jobs/${enc(id)}/events?limit=1000`)).events;
    } catch (err) {
      events = null;
    }
  }
  if (asked !== looked.asked) return;
  const signature = JSON.stringify([job, logs, events]);
  const same = looked.id === id && looked.drawn === signature && !out.hidden;
  Object.assign(looked, {id, state: job.state, drawn: signature}); // redrawn every second until it settles
  if (same) return; // unchanged: keep the view (and a click on its Cancel button) as it is
  out.hidden = false;
  const progress = job.progress && el("span", {},
    el("progress", {max: 100, value: job.progress.percent}), ` ${job.progress.percent}% `, job.progress.message);
  const cancel = ["queued", "deferred", "active"].includes(job.state)
    ? button("Cancel", (b) => cancelJob(b, job.job_id), {class: "danger", "data-action": "cancel"})
    : null;
  const extra = [];
  if (job.state === "deferred") extra.push(" ", button("Promote", (b) => promoteJob(b, job.job_id), {"data-action": "promote"}));
  if (job.state === "dead") extra.push(" ", button("Retry", (b) => retryJob(b, job.queue, job.job_id), {"data-action": "retry"}));
  if (job.queue && job.function && job.args !== null && job.args !== undefined) {
    extra.push(" ", button("Duplicate", () => openAdd(job), {"data-action": "duplicate"}));
  }
  out.replaceChildren(...fields([
    ["Job", job.job_id],
    ["State", el("span", {},
      el("span", {class: "state " + job.state, "data-state": job.state}, job.state),
      job.held ? el("span", {class: "muted", "data-held": "true"}, " held back by its key's limit") : null,
      cancel ? " " : null, cancel, ...extra)],
    ["", job.state === "not_found" ? "No job with this id (or its result has expired)." : null],
    ["Queue", job.queue],
    ["Function", job.function],
    ["Priority", job.priority],
    ["Key", job.group],
    ["Attempts", job.state === "not_found" ? null : job.attempts],
    ["Progress", progress],
    ["Schedule", scheduleLink(job.job_id)],
    ["Arguments", job.args === null || job.args === undefined ? null : block(job.args)],
    ["Keyword arguments", job.kwargs === null || job.kwargs === undefined ? null : block(job.kwargs)],
    ["Result", job.result === null ? null : block(job.result)],
    ["Error", block(job.error)],
    ["Enqueued", when(job.enqueued_at)],
    ["Scheduled for", when(job.scheduled_for)],
    ["Started", when(job.started_at)],
    ["Finished", when(job.finished_at)],
    ["Note", job.note],
    ["Logs", logs === null ? null : el("pre", {class: "logs", "data-field": "logs"}, logs)],
    ["Timeline", events === null ? null : timeline(events)],
  ]));
}

// A schedule's jobs have ids sched:<queue>:<name>:<tick ms>: link back to the queue's schedules.
function scheduleLink(id) {
  const m = /^sched:([^:]+):(.+):(\d+)$/.exec(id);
  if (!m) return null;
  const [, queue, name, tick] = m;
  return el("span", {},
    button(name, () => openSchedules(queue), {class: "link", "data-action": "open-schedule"}),
    ` in ${queue}, tick ${new Date(Number(tick)).toISOString()}`);
}

function eventLine(e) {
  const parts = [new Date(e.at).toISOString().replace("T", " ").replace("Z", ""), e.event];
  if (e.try) parts.push(`try ${e.try}`);
  if (e.worker) parts.push(`on ${e.worker}`);
  if (e.func) parts.push(e.func);
  if (e.duration_ms !== null && e.duration_ms !== undefined) parts.push(e.duration_ms < 1000 ? `ran ${e.duration_ms} ms` : `ran ${duration(e.duration_ms / 1000)}`);
  if (e.delay_ms) parts.push(`ready in ${duration(e.delay_ms / 1000)}`);
  if (e.progress !== null && e.progress !== undefined) parts.push(`${e.progress}%`);
  if (e.message) parts.push(e.message);
  if (e.reason) parts.push(`(${e.reason})`);
  if (e.error) parts.push(`: ${e.error.split("\n")[0]}`);
  return parts.join(" ");
}

function timeline(events) {
  if (!events.length) return el("span", {class: "muted"}, "no events kept for this job");
  return el("ol", {class: "timeline", "data-field": "timeline"},
    ...events.map((e) => el("li", {class: "ev " + e.event, "data-event": e.event}, eventLine(e))));
}

// A page of log lines as text: time, try, level, message (later lines of a message indented).
function logText(page) {
  if (!page.total) return "(no log lines)";
  const lines = page.lines.map((l) => {
    const at = l.at ? new Date(l.at * 1000).toISOString() : "-";
    const attempt = l.attempt === null || l.attempt === undefined ? "-" : `try ${l.attempt}`;
    return `${at} ${attempt} ${l.level}: ${l.message.replace(/\n/g, "\n    ")}`;
  });
  const more = page.total > page.offset + page.lines.length ? `\n... ${page.total - page.lines.length} more line(s): arqscale logs JOB` : "";
  return lines.join("\n") + more;
}

// ---- formatting ------------------------------------------------------------------------------------------

// [label, value] pairs to <dt>/<dd>, skipping empty values.
function fields(pairs) {
  const nodes = [];
  for (const [label, value] of pairs) {
    if (value === null || value === undefined) continue;
    nodes.push(el("dt", {}, label), el("dd", {}, typeof value === "object" ? value : String(value)));
  }
  return nodes;
}

// A value in a <pre>: strings as they are, anything else as indented JSON.
function block(value) {
  if (value === null || value === undefined) return null;
  return el("pre", {}, typeof value === "string" ? value : JSON.stringify(value, null, 2));
}

function when(seconds) {
  return seconds === null || seconds === undefined ? null : new Date(seconds * 1000).toLocaleString();
}

function iso(seconds) {
  return new Date(seconds * 1000).toISOString();
}

function duration(seconds) {
  if (!seconds) return "-";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const s = Math.floor(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

start();
