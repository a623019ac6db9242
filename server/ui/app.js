// auditseal web console (docs/UI.md). Plain ES module, no dependencies. Every value that comes
// from the log is put on the page as text (textContent, text nodes): never as HTML.

const TOKEN_KEY = "auditseal.token";
const FIELDS = ["additionalDetails", "authToken", "customId", "eventStatus", "eventType", "module",
  "nodeId", "searchDetail1", "searchDetail2", "sequenceNumber", "service", "timeStamp"];
const OPERATORS = ["EQ", "NEQ", "GT", "GE", "LT", "LE", "LIKE", "NULL", "NOTNULL"];
// Table columns: (key, heading, value of a row).
const COLUMNS = [
  ["time", "Time (UTC)", (e) => iso(e.timeStamp)],
  ["node", "Node", (e) => e.nodeId],
  ["seq", "Seq", (e) => e.sequenceNumber],
  ["type", "Event type", (e) => e.eventType],
  ["status", "Status", (e) => e.eventStatus],
  ["who", "Who", (e) => e.authToken],
  ["service", "Service", (e) => e.service],
  ["module", "Module", (e) => e.module],
  ["custom", "Custom ID", (e) => e.customId],
  ["sd1", "Search detail 1", (e) => e.searchDetail1],
  ["sd2", "Search detail 2", (e) => e.searchDetail2],
  ["prot", "Protection v:keyid", (e) => protection(e.rowProtection).label],
];
const DEFAULT_COLUMNS = ["time", "node", "seq", "type", "status", "who", "service", "module", "prot"];

const $ = (id) => document.getElementById(id);

// The caller: null until signed in; {name, role, canAudit, canAdmin, ...} after.
let me = null;
// Search paging: the cursors of the pages seen so far (index 0: the first page, no cursor).
let pages = [null];
let nextCursor = null;
let live = null;
// The last search's query: the live view follows with its conditions, and a row's page links
// back to it.
let lastSearch = new URLSearchParams();

// ---- helpers -------------------------------------------------------------------------------

/** An element with text children (strings become text nodes, never markup). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function iso(ms) {
  const d = new Date(Number(ms));
  return isNaN(d) ? String(ms) : d.toISOString();
}

/** `entityVersion:protectionVersion:keyid:hex` (docs/FORMAT.md section 3). */
function protection(p) {
  if (!p) return { label: "none" };
  const parts = String(p).split(":");
  if (parts.length < 4) return { label: "malformed" };
  return { version: parts[1], keyid: parts[2], label: `${parts[1]}:${parts[2]}` };
}

/** The badge of a row's `verification` (docs/API.md "GET /api/v1/events"). */
function verdict(v) {
  if (v === null || v === undefined) return { kind: "unchecked", text: "not verified" };
  if (v.valid === true) return { kind: "valid", text: "valid" };
  const reason = String(v.reason ?? "");
  if (reason.startsWith("rowProtection is null")) return { kind: "unprotected", text: "unprotected", reason };
  if (reason.startsWith("no key is configured") || reason.startsWith("cannot be checked now")) {
    return { kind: "unknown-key", text: "unknown key", reason };
  }
  return { kind: "failed", text: "failed", reason };
}

function badge(v) {
  const d = verdict(v);
  const b = el("span", { class: `badge ${d.kind}` }, d.text);
  if (d.reason) b.append(el("span", { class: "reason" }, `: ${d.reason}`));
  return b;
}

function showError(message) {
  const p = $("error");
  p.textContent = message;
  p.hidden = !message;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function authHeaders() {
  const t = sessionStorage.getItem(TOKEN_KEY);
  return t ? { Authorization: `Bearer ${t}` } : {};
}

/** Calls the API; resolves to the response (ok) or throws ApiError with the JSON body. */
async function call(method, path, body, extra = {}) {
  const headers = { ...authHeaders(), ...extra.headers };
  const init = { method, headers, signal: extra.signal, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (!r.ok) {
    let b = null;
    try { b = await r.json(); } catch { /* an empty 405 or 408 */ }
    if (r.status === 401 && me) signOut("Your credentials are no longer accepted: sign in again.");
    throw new ApiError(r.status, b);
  }
  return r;
}

const getJson = async (path) => (await call("GET", path)).json();

function clear(node) {
  node.replaceChildren();
  return node;
}

function fillTable(table, headings, rows) {
  clear(table.tHead).append(el("tr", {}, ...headings.map((h) => el("th", {}, h))));
  clear(table.tBodies[0]).append(...rows);
}

// ---- sign-in -------------------------------------------------------------------------------

async function signIn(token) {
  if (token !== null) sessionStorage.setItem(TOKEN_KEY, token);
  try {
    me = await getJson("/api/v1/whoami");
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    me = null;
    showError(e.status === 401 ? "Not accepted: unknown or revoked token, or no certificate mapped to a role." : e.message);
    route();
    return;
  }
  showError("");
  $("who").textContent = `${me.name} (${me.role})`;
  $("signout").hidden = false;
  for (const a of $("nav").querySelectorAll("a")) {
    a.hidden = !(a.dataset.need === "admin" ? me.canAdmin : me.canAudit);
  }
  $("nav").hidden = !me.canAudit;
  route();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  stopLive();
  $("who").textContent = "";
  $("signout").hidden = true;
  $("nav").hidden = true;
  clear($("results").tBodies[0]);
  showError(message || "");
  route();
}

// ---- views ---------------------------------------------------------------------------------

function show(view) {
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== `view-${view}`;
  for (const a of $("nav").querySelectorAll("a")) {
    a.classList.toggle("current", a.getAttribute("href") === `#${view}`);
  }
}

/** Shows what the location's hash names, as far as the caller's role allows. */
function route() {
  const hash = location.hash.slice(1);
  const [view, rest] = splitOnce(hash, hash.startsWith("event/") ? "/" : "?");
  if (!me) return show("signin");
  if (!me.canAudit) return show("noaccess");
  if (view !== "live") stopLive();
  switch (view) {
    case "event": show("event"); return loadEvent(decodeURIComponent(rest));
    case "live": return show("live");
    case "verify": show("verify"); return loadVerifyStatus();
    case "keys": show("keys"); return loadKeys();
    case "tokens":
      if (!me.canAdmin) break;
      show("tokens");
      return loadTokens();
    case "search":
    default:
      break;
  }
  show("search");
  formFromQuery(new URLSearchParams(view === "search" ? rest : ""));
  pages = [null];
  return runSearch();
}

function splitOnce(s, sep) {
  const i = s.indexOf(sep);
  return i < 0 ? [s, ""] : [s.slice(0, i), s.slice(i + 1)];
}

// ---- search --------------------------------------------------------------------------------

function conditionRow(field = "eventType", op = "EQ", value = "") {
  const f = el("select", { name: "cfield", "aria-label": "column" }, ...FIELDS.map((x) => el("option", {}, x)));
  f.value = field;
  const o = el("select", { name: "cop", "aria-label": "operator" }, ...OPERATORS.map((x) => el("option", {}, x)));
  o.value = op;
  const v = el("input", { name: "cvalue", "aria-label": "value", spellcheck: "false" });
  v.value = value;
  const remove = el("button", { type: "button" }, "Remove");
  const row = el("div", { class: "condition" }, f, o, v, remove);
  remove.addEventListener("click", () => row.remove());
  return row;
}

/** The search form as URL parameters (what the shareable link holds: never credentials). */
function queryFromForm() {
  const f = $("search-form");
  const q = new URLSearchParams();
  for (const name of ["type", "status", "node", "who", "from", "to"]) {
    const v = f.elements[name].value;
    if (v) q.set(name, v);
  }
  for (const row of $("conditions").querySelectorAll(".condition")) {
    const [field, op, value] = [...row.querySelectorAll("select, input")].map((x) => x.value);
    q.append("c", op === "NULL" || op === "NOTNULL" ? `${field} ${op}` : `${field} ${op} ${value}`);
  }
  q.set("order", f.elements.order.value);
  q.set("limit", f.elements.limit.value);
  const cols = [...$("column-choices").querySelectorAll("input:checked")].map((x) => x.value);
  if (cols.join() !== DEFAULT_COLUMNS.join()) q.set("cols", cols.join(","));
  return q;
}

function formFromQuery(q) {
  const f = $("search-form");
  for (const name of ["type", "status", "node", "who", "from", "to"]) f.elements[name].value = q.get(name) ?? "";
  f.elements.order.value = q.get("order") === "asc" ? "asc" : "desc";
  f.elements.limit.value = ["25", "50", "100", "250"].includes(q.get("limit")) ? q.get("limit") : "25";
  const rows = q.getAll("c").map((c) => {
    const [field, rest] = splitOnce(c, " ");
    const [op, value] = splitOnce(rest, " ");
    return conditionRow(field, op.toUpperCase(), value);
  });
  clear($("conditions")).append(...rows);
  const cols = q.get("cols")?.split(",") ?? DEFAULT_COLUMNS;
  for (const box of $("column-choices").querySelectorAll("input")) box.checked = cols.includes(box.value);
  $("share").href = `#search?${q}`;
}

/** The API's `criteria` parameters for the form's query (docs/API.md "GET /api/v1/events"). */
function criteria(q) {
  const out = new URLSearchParams();
  const eq = { type: "eventType", status: "eventStatus", node: "nodeId", who: "authToken" };
  for (const [k, field] of Object.entries(eq)) if (q.get(k)) out.append("criteria", `${field} EQ ${q.get(k)}`);
  // datetime-local is the browser's local time: sent as an ISO-8601 instant.
  if (q.get("from")) out.append("criteria", `timeStamp GE ${new Date(q.get("from")).toISOString()}`);
  if (q.get("to")) out.append("criteria", `timeStamp LT ${new Date(q.get("to")).toISOString()}`);
  for (const c of q.getAll("c")) out.append("criteria", c);
  return out;
}

function currentQuery() {
  return new URLSearchParams(splitOnce(location.hash.slice(1), "?")[1]);
}

function chosenColumns(q) {
  const cols = q.get("cols")?.split(",") ?? DEFAULT_COLUMNS;
  return COLUMNS.filter(([k]) => cols.includes(k));
}

function eventRow(e, cols) {
  const tr = el("tr", { class: "event", dataset: { pk: e.pk } },
    ...cols.map(([, , f]) => el("td", {}, f(e) ?? "")),
    el("td", {}, badge(e.verification)));
  tr.tabIndex = 0;
  const open = () => { location.hash = `#event/${encodeURIComponent(e.pk)}`; };
  tr.addEventListener("click", open);
  tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") open(); });
  return tr;
}

async function runSearch() {
  const q = currentQuery();
  const crit = criteria(q);
  const cols = chosenColumns(q);
  const page = pages.length - 1;
  const limit = Number(q.get("limit") || 25);
  const params = new URLSearchParams(crit);
  params.set("order", q.get("order") === "asc" ? "asc" : "desc");
  params.set("limit", String(limit));
  if (pages[page]) params.set("cursor", pages[page]);
  $("summary").textContent = "Searching…";
  $("prev").disabled = $("next").disabled = true;
  try {
    const [list, count] = await Promise.all([
      getJson(`/api/v1/events?${params}`),
      getJson(`/api/v1/events:count?${crit}`),
    ]);
    nextCursor = list.nextCursor;
    fillTable($("results"), [...cols.map(([, h]) => h), "Verification"], list.events.map((e) => eventRow(e, cols)));
    const first = page * limit + 1;
    $("summary").textContent = list.count === 0
      ? `No rows on this page; ${count.count} match.`
      : `Rows ${first}–${first + list.count - 1} of ${count.count}`;
    $("summary").dataset.total = count.count;
    // When the rows were shown, in ms since the page started loading (the browser tests read it).
    $("summary").dataset.shownAt = String(Math.round(performance.now()));
    $("prev").disabled = page === 0;
    $("next").disabled = !nextCursor;
    showError("");
  } catch (e) {
    clear($("results").tBodies[0]);
    $("summary").textContent = "";
    if (e.body?.error === "verification_failed") {
      showError(`A row failed verification, so the server refused the whole page (protection.error_on_verify_fail): node ${e.body.nodeId} sequence ${e.body.sequenceNumber}, pk ${e.body.pk}: ${e.body.reason}`);
    } else {
      showError(e.message);
    }
  }
}

// ---- one event -----------------------------------------------------------------------------

async function loadEvent(pk) {
  $("back").href = `#search?${lastSearch}`;
  $("event-title").textContent = pk;
  clear($("event-fields").tBodies[0]);
  clear($("event-details").tBodies[0]);
  clear($("event-badge"));
  // Answered for a failing row too, which the row itself is not with error_on_verify_fail.
  loadProof(pk);
  try {
    const e = await getJson(`/api/v1/events/${encodeURIComponent(pk)}`);
    $("event-badge").append(badge(e.verification));
    const p = protection(e.rowProtection);
    const rows = [
      ["pk", e.pk], ["nodeId", e.nodeId], ["sequenceNumber", e.sequenceNumber],
      ["timeStamp", `${e.timeStamp} (${iso(e.timeStamp)})`], ["eventType", e.eventType],
      ["eventStatus", e.eventStatus], ["authToken", e.authToken], ["service", e.service],
      ["module", e.module], ["customId", e.customId], ["searchDetail1", e.searchDetail1],
      ["searchDetail2", e.searchDetail2], ["rowVersion", e.rowVersion],
      ["protection version", p.version ?? p.label], ["keyid", p.keyid ?? ""],
      ["rowProtection", e.rowProtection], ["additionalDetails (stored XML)", e.additionalDetails],
    ];
    $("event-fields").tBodies[0].append(...kvRows(rows));
    $("event-details-error").hidden = !e.detailsError;
    $("event-details-error").textContent = e.detailsError ?? "";
    const details = Object.entries(e.details ?? {}).map(([k, v]) =>
      el("tr", {}, el("th", {}, k), el("td", {}, typeof v === "string" ? v : JSON.stringify(v))));
    $("event-details").tBodies[0].append(...details);
    showError("");
  } catch (err) {
    showError(err.body?.error === "verification_failed" ? `This row fails verification: ${err.body.reason}` : err.message);
  }
}

const kvRows = (rows) => rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v ?? "null")));

/** The row's batch statement and inclusion proof (docs/API.md "GET /api/v1/events/{pk}/proof"). */
async function loadProof(pk) {
  const note = $("event-batch-note");
  const inclusion = clear($("event-inclusion").tBodies[0]);
  const statement = clear($("event-statement").tBodies[0]);
  note.textContent = "Loading…";
  delete note.dataset.batched;
  let p;
  try {
    p = await getJson(`/api/v1/events/${encodeURIComponent(pk)}/proof`);
  } catch (e) {
    note.textContent = `Could not load the row's proof: ${e.message}`;
    return;
  }
  note.dataset.batched = String(p.batched);
  if (!p.batched) {
    const kind = { 1: "an HMAC", 2: "a signature" }[p.protectionVersion];
    note.textContent = kind
      ? `Not batched: protection version ${p.protectionVersion}, ${kind} with keyid ${p.keyid} over this row alone. It has no batch statement and no inclusion proof.`
      : "No readable protection (see the verification above): no batch statement and no inclusion proof.";
    return;
  }
  const s = p.statement;
  const i = p.inclusion;
  note.textContent = !i ? `Batched (protection version ${p.protectionVersion}), but its proof cannot be read: ${p.inclusionError}`
    : !s ? `Batched (protection version ${p.protectionVersion}), but no batch statement starting at sequence ${i.firstSequenceNumber} is stored.`
    : `Batched (protection version ${p.protectionVersion}): row ${i.leafIndex + 1} of the ${i.treeSize} rows, sequence ${s.firstSequenceNumber} to ${s.lastSequenceNumber}, under one signed statement.`;
  if (i) {
    const matches = !s ? "no statement" : i.root === s.merkleRoot ? "yes" : "NO";
    inclusion.append(...kvRows([
      ["leafIndex", i.leafIndex], ["treeSize", i.treeSize], ["leafHash", i.leafHash],
      ["path (sibling first)", i.path.join("\n") || "(empty: the only row)"],
      ["root from the path", i.root ?? `none: ${i.rootError}`], ["equals the statement's merkleRoot", matches],
    ]));
  }
  if (s) {
    statement.append(...kvRows([
      ["statement: nodeId", s.nodeId], ["firstSequenceNumber", s.firstSequenceNumber],
      ["lastSequenceNumber", s.lastSequenceNumber], ["timeStamp", `${s.timeStamp} (${iso(s.timeStamp)})`],
      ["merkleRoot", s.merkleRoot], ["previousHash", s.previousHash], ["keyId", s.keyId],
      ["layout", s.layout], ["statementProtection", s.statementProtection], ["statementHash", s.statementHash],
    ]), el("tr", {}, el("th", {}, "statement verification"), el("td", {}, badge(s.verification))));
  }
}

// ---- export --------------------------------------------------------------------------------

function download(name, blob) {
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

async function exportAs(format) {
  const params = criteria(currentQuery());
  params.set("format", format);
  $("export-status").textContent = "Exporting…";
  try {
    const r = await call("GET", `/api/v1/export?${params}`);
    const name = `auditseal-export.${format}`;
    download(name, await r.blob());
    const status = clear($("export-status"));
    status.append(`${r.headers.get("X-Auditseal-Rows")} rows exported, signed.`);
    if (format !== "ndjson") {
      // CESeCore's companion file, with the request line first (docs/API.md "GET /api/v1/export").
      // A link to click: browsers block a second download that no click started.
      const sig = `${r.headers.get("X-Auditseal-Request")}\n${r.headers.get("X-Auditseal-Signature")}\n`;
      const a = el("a", { id: "export-sig", download: `${name}.sig` }, `Save ${name}.sig`);
      a.href = URL.createObjectURL(new Blob([sig], { type: "text/plain" }));
      status.append(" Keep the signature beside it: ", a);
    }
  } catch (e) {
    $("export-status").textContent = "";
    showError(`Export failed: ${e.message}`);
  }
}

// ---- live ----------------------------------------------------------------------------------

/** Follows the stream with fetch (EventSource cannot send an Authorization header). */
async function startLive() {
  const crit = criteria(lastSearch);
  const cols = chosenColumns(lastSearch);
  const ctl = new AbortController();
  live = { ctl, lastId: null };
  const me_live = live;
  $("live-toggle").textContent = "Stop";
  fillTable($("live-rows"), [...cols.map(([, h]) => h), "Verification"], []);
  while (live === me_live) {
    try {
      const headers = me_live.lastId ? { "Last-Event-ID": me_live.lastId } : {};
      const r = await call("GET", `/api/v1/events/stream?${crit}`, undefined, { signal: ctl.signal, headers });
      $("live-status").textContent = "Following.";
      $("live-status").dataset.state = "following";
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          onSseMessage(buf.slice(0, end), cols, me_live);
          buf = buf.slice(end + 2);
        }
      }
    } catch (e) {
      if (live !== me_live) return;
      $("live-status").textContent = `Disconnected (${e.message}); retrying…`;
      $("live-status").dataset.state = "retrying";
      if (e.status && e.status !== 429 && e.status < 500) return stopLive();
    }
    await new Promise((res) => setTimeout(res, 2000));
  }
}

function onSseMessage(block, cols, state) {
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("id:")) state.lastId = line.slice(3).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trimStart();
  }
  if (!data) return;
  const tbody = $("live-rows").tBodies[0];
  tbody.prepend(eventRow(JSON.parse(data), cols));
  while (tbody.rows.length > 500) tbody.lastElementChild.remove();
}

function stopLive() {
  if (!live) return;
  live.ctl.abort();
  live = null;
  $("live-toggle").textContent = "Start";
  $("live-status").textContent = "Stopped.";
  $("live-status").dataset.state = "stopped";
}


// ---- verify --------------------------------------------------------------------------------

// Whether this page's run is under way, and the next look at its progress.
let verifying = false;
let verifyTimer = null;

/** "42 s", "3 min", "5 h", "2 d": how long ago, roughly. */
function age(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

/** Each node's last sequence and newest checkpoint, and the current or last run's progress
 * (docs/API.md "GET /api/v1/verify"); looks again every 500 ms while a run is going on. */
async function loadVerifyStatus() {
  clearTimeout(verifyTimer);
  let v;
  try {
    v = await getJson("/api/v1/verify");
  } catch (e) {
    showError(e.message);
    return;
  }
  fillTable($("verify-overview"), ["Node", "Last sequence", "Last entry (UTC)", "Newest checkpoint", "Made (UTC)", "Checkpoint age"],
    v.nodes.map((n) => {
      const c = n.newestCheckpoint;
      return el("tr", { dataset: { node: n.nodeId } }, ...[n.nodeId, n.lastSequenceNumber ?? "none",
        n.lastTimeStamp === null ? "" : iso(n.lastTimeStamp), c ? c.sequenceNumber : "none",
        c ? iso(c.timeStamp) : "", c ? (c.verifies ? age(c.ageMs) : `does not verify: ${c.problem}`) : ""]
        .map((x) => el("td", {}, x)));
    }));
  $("verify-overview-note").textContent = v.truncated
    ? `The first ${v.nodes.length} nodes by node id; the log has more (verify them by name).` : "";
  const run = v.run;
  const progress = $("verify-progress");
  progress.dataset.running = String(v.running);
  if (run) {
    $("verify-run-title").textContent = v.running
      ? `Run started by ${run.by} at ${iso(run.startedAt)}: rows verified so far`
      : `Last run, by ${run.by} at ${iso(run.startedAt)}: ${run.outcome ?? "did not finish"}`;
    fillTable(progress, ["Node", "Rows verified", "Of about", "State"], run.nodes.map((n) =>
      el("tr", { dataset: { node: n.nodeId } }, ...[n.nodeId, n.verifiedRows, n.expectedRows,
        n.done ? "done" : v.running ? "verifying…" : "stopped"].map((x) => el("td", {}, x)))));
  }
  if ((v.running || verifying) && location.hash.startsWith("#verify")) {
    verifyTimer = setTimeout(loadVerifyStatus, 500);
  }
}

async function runVerify() {
  $("verify-run").disabled = true;
  $("verify-status").textContent = "Verifying every node… (this may take minutes on a large log)";
  clear($("verify-report"));
  verifying = true;
  setTimeout(loadVerifyStatus, 200);
  try {
    const r = await (await call("POST", "/api/v1/verify", {})).json();
    $("verify-status").textContent = `${r.outcome}: ${r.report.rows} rows, ${r.report.errors} errors, ${r.report.warnings} warnings in ${r.report.elapsedMs} ms (logged as ${r.event.nodeId}/${r.event.sequenceNumber})`;
    $("verify-status").dataset.outcome = r.outcome;
    fillTable($("verify-nodes"), ["Node", "Rows", "First", "Last sequence", "Holes", "Failed rows", "Failed batches", "Checkpoints", "Failed checkpoints"],
      r.report.nodes.map((n) => el("tr", {},
        ...[n.nodeId, n.rows, n.firstSequence ?? "", n.lastSequence ?? "", n.holes.length, n.failed.length,
          n.failedBatches.length, n.checkpoints, n.failedCheckpoints.length].map((v) => el("td", {}, v)))));
    $("verify-report").textContent = JSON.stringify(r.report, null, 2);
  } catch (e) {
    $("verify-status").textContent = "";
    showError(`Verification could not run: ${e.message}`);
  } finally {
    verifying = false;
    $("verify-run").disabled = false;
    loadVerifyStatus();
  }
}

// ---- keys and tokens -----------------------------------------------------------------------

async function loadKeys() {
  try {
    const { keys } = await getJson("/api/v1/keys");
    fillTable($("keys"), ["keyid", "Algorithm", "Signs new rows", "Can sign", "Public key"],
      keys.map((k) => el("tr", {}, el("td", {}, k.keyid), el("td", {}, k.algorithm),
        el("td", {}, k.current ? "yes" : ""), el("td", {}, k.canSign ? "yes" : "no"),
        el("td", {}, k.publicKeyPem ? el("pre", {}, k.publicKeyPem) : "(secret key, not shown)"))));
  } catch (e) {
    showError(e.message);
  }
}

async function loadTokens() {
  try {
    const { tokens } = await getJson("/api/v1/tokens");
    fillTable($("tokens"), ["Name", "Role", "Created", "Revoked", ""], tokens.map((t) => {
      const cell = el("td");
      if (!t.revoked) {
        const b = el("button", { type: "button" }, "Revoke");
        b.addEventListener("click", () => revoke(t.name));
        cell.append(b);
      }
      return el("tr", {}, el("td", {}, t.name), el("td", {}, t.role), el("td", {}, t.created), el("td", {}, t.revoked ?? ""), cell);
    }));
  } catch (e) {
    showError(e.message);
  }
}

async function revoke(name) {
  if (!confirm(`Revoke the token ${name}? Its holder loses access within 2 seconds.`)) return;
  try {
    await call("DELETE", `/api/v1/tokens/${encodeURIComponent(name)}`);
    showError("");
  } catch (e) {
    showError(e.message);
  }
  loadTokens();
}

async function createToken(ev) {
  ev.preventDefault();
  const f = ev.target;
  try {
    const t = await (await call("POST", "/api/v1/tokens", { name: f.elements.name.value, role: f.elements.role.value })).json();
    $("token-secret").textContent = t.token;
    $("token-new").hidden = false;
    f.reset();
    showError("");
  } catch (e) {
    showError(e.message);
  }
  loadTokens();
}

// ---- wiring --------------------------------------------------------------------------------

function init() {
  $("column-choices").append(...COLUMNS.map(([k, h]) =>
    el("label", {}, el("input", { type: "checkbox", value: k }), h)));
  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("signin-token");
    const token = input.value.trim();
    input.value = "";
    signIn(token);
  });
  $("signin-cert").addEventListener("click", () => signIn(null));
  $("signout").addEventListener("click", () => signOut(""));
  $("add-condition").addEventListener("click", () => $("conditions").append(conditionRow()));
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const hash = `#search?${queryFromForm()}`;
    // The same hash fires no hashchange: search again by hand.
    if (location.hash === hash) route();
    else location.hash = hash;
  });
  $("next").addEventListener("click", () => { pages.push(nextCursor); runSearch(); });
  $("prev").addEventListener("click", () => { pages.pop(); runSearch(); });
  for (const b of $("export-bar").querySelectorAll("button")) {
    b.addEventListener("click", () => exportAs(b.dataset.format));
  }
  $("live-toggle").addEventListener("click", () => (live ? stopLive() : startLive()));
  $("verify-run").addEventListener("click", runVerify);
  $("token-form").addEventListener("submit", createToken);
  window.addEventListener("hashchange", () => {
    if (location.hash.startsWith("#search")) lastSearch = currentQuery();
    route();
  });
  if (location.hash.startsWith("#search")) lastSearch = currentQuery();
  if (sessionStorage.getItem(TOKEN_KEY)) signIn(sessionStorage.getItem(TOKEN_KEY));
  else route();
}

init();
