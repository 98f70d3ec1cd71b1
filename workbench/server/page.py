"""The dashboard the release service serves itself, at ``{prefix}`` and ``{prefix}dashboard``.

Unlike the Voila/JupyterLab dashboard (which runs in the person's own kernel
and asserts ``$JUPYTERHUB_USER``), this page acts as the person *signed in*:
every request it makes goes to the HTTP API with the browser's session
cookie, and every POST carries the ``workbench-csrf`` cookie's value in
``X-Workbench-CSRF``. It shows what the server answered, never what it
hoped for: a 4xx/5xx shows the error's ``detail`` in red; success is
shown only on a 2xx, followed by the refreshed board.

The page is one self-contained HTML document (no CDN, no build step: hub
machines are often offline). A browser without a session is sent to the hub's
sign-in when a hub is configured, and otherwise told how to sign in.
"""
from __future__ import annotations

import html
import json
from typing import Any

# at module level: FastAPI resolves the handlers' annotations (strings, with the __future__ import) in these globals
from fastapi import Request
from fastapi.responses import HTMLResponse, Response

API_SUFFIX = "/api/v1/openapi.json"


def mounted_prefix(app: Any) -> str:
    """The path the app is served under (``/services/workbench``, or ``""``), as create_app placed the API."""
    return str(app.openapi_url or API_SUFFIX).removesuffix(API_SUFFIX)


def add_routes(app: Any, state: Any) -> None:
    from ..errors import NotSignedIn

    base = mounted_prefix(app) + "/"
    hub = getattr(state.auth, "hub", None)

    def dashboard(request: Request) -> Response:
        client = request.client.host if request.client else None
        try:
            who, _ = state.auth.identify(request.headers, request.cookies, client)
        except NotSignedIn:
            who = None
        if who is None and hub is not None:
            from .hub import login_redirect

            return login_redirect(hub, request)
        if who is None:
            return HTMLResponse(_signed_out(base), status_code=401)
        config = json.dumps({"api": base + "api/v1", "logout": base + "logout" if hub is not None else None})
        return HTMLResponse(_PAGE.replace("__CONFIG__", config.replace("<", "\\u003c")),
            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                     "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                                "style-src 'unsafe-inline'; frame-ancestors 'none'"})

    app.add_api_route(base, dashboard, methods=["GET"], include_in_schema=False)
    app.add_api_route(base + "dashboard", dashboard, methods=["GET"], include_in_schema=False)


def _signed_out(base: str) -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Release Workbench: sign in</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 3em auto">
<h1>Release Workbench</h1>
<p class="wb-signed-out">You are not signed in. This server is not running as a JupyterHub service, so there is
no browser sign-in here. Either</p>
<ul>
<li>run it as a JupyterHub service (docs/server.md, Behind JupyterHub) and open it through the hub, or</li>
<li>use the API with a token: <code>workbench token create --user YOU</code>, then
<code>curl -H "Authorization: Bearer TOKEN" {html.escape(base)}api/v1/status</code>, or
<code>workbench.Client(URL, token=TOKEN)</code> in a notebook.</li>
</ul></body></html>"""


# The page: the script reads its settings from the JSON in #wb-config ("<" escaped by add_routes), and builds all
# markup with textContent / createElement, so nothing a pipeline or a person typed is ever parsed as HTML.
_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Release Workbench</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1b1f24; }
 header { display: flex; gap: 1em; align-items: baseline; }
 h1 { font-size: 1.4em; margin: 0; }
 table { border-collapse: collapse; margin: .5em 0 1.5em; }
 td, th { border-bottom: 1px solid #d0d7de; padding: .3em .6em; text-align: left; vertical-align: top; }
 .wb-stage { display: inline-block; padding: .1em .5em; margin: .1em; border-radius: .8em; background: #eaeef2; }
 .wb-stage[data-status="passed"] { background: #cdeccd; }
 .wb-stage[data-status="failed"], .wb-stage[data-status="rejected"] { background: #f6caca; }
 .wb-stage[data-status="waiting"] { background: #fde9a9; }
 .wb-stage[data-status="running"], .wb-stage[data-status="scheduled"] { background: #c8e1ff; }
 .wb-message { min-height: 1.4em; margin: .5em 0; }
 .wb-message.wb-error { color: #b31d28; font-weight: 600; }
 .wb-message.wb-ok { color: #116329; }
 input.wb-comment { width: 22em; }
</style></head>
<body>
<script type="application/json" id="wb-config">__CONFIG__</script>
<header><h1>Release Workbench</h1><span class="wb-who">…</span><a class="wb-logout" hidden>sign out</a></header>
<div class="wb-message" role="status" aria-live="polite"></div>
<h2>Pending approvals</h2>
<table class="wb-approvals"><thead><tr><th>Stage</th><th>Waiting since</th><th>May approve</th><th>Comment</th><th></th></tr></thead>
<tbody></tbody></table>
<h2>Board</h2>
<div class="wb-board-controls"><input class="wb-board-filter" type="search" placeholder="filter by name">
<select class="wb-board-status"><option value="">any status</option><option value="failed">failing</option>
<option value="waiting">waiting for approval</option><option value="running">running</option>
<option value="scheduled">scheduled</option><option value="passed">passed</option>
<option value="cancelled">cancelled</option><option value="rejected">rejected</option>
<option value="never run">never run</option><option value="paused">paused</option></select>
<button type="button" class="wb-board-prev">previous</button> <button type="button" class="wb-board-next">next</button>
<span class="wb-board-summary"></span></div>
<table class="wb-board"><thead><tr><th>Pipeline</th><th>Run</th><th>Status</th><th>Stages</th></tr></thead>
<tbody></tbody></table>
<script>
"use strict";
const CONFIG = JSON.parse(document.getElementById("wb-config").textContent);
const $ = (sel) => document.querySelector(sel);
let WHO = "?";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("data-")) node.setAttribute(k, v); else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}

function csrf() {
  const m = document.cookie.split("; ").find((c) => c.startsWith("workbench-csrf="));
  return m ? decodeURIComponent(m.slice("workbench-csrf=".length)) : "";
}

function say(text, ok) {
  const m = $(".wb-message");
  m.textContent = text;
  m.className = "wb-message " + (ok ? "wb-ok" : "wb-error");
}

// One request; resolves with the parsed body on 2xx and rejects with the server's own detail otherwise.
async function call(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (method !== "GET") { headers["Content-Type"] = "application/json"; headers["X-Workbench-CSRF"] = csrf(); }
  let r;
  try {
    r = await fetch(CONFIG.api + path, { method, headers, credentials: "same-origin",
                                          body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) { throw new Error("the release service does not answer: " + e.message); }
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const detail = data && data.detail ? data.detail : (r.statusText || "request failed");
    throw new Error(`HTTP ${r.status}: ${detail}`);
  }
  return data;
}

// The board is drawn a page at a time (10,000 rows of DOM took seconds on every refresh); the filter and the
// counts go over every row the API sent, so no pipeline is out of reach (as workbench/dashboard/paging.py).
const PAGE = 50;
let boardRows = [], pageNo = 1;
const waits = (r) => r.status === "waiting" || (r.stages || []).some((s) => s.status === "waiting");
function has(r, status) {
  if (status === "waiting") return waits(r);
  if (status === "paused") return !!r.paused;
  return (r.status || "never run") === status;
}
function renderBoard(rows) {
  if (rows !== undefined) boardRows = rows;
  const words = $(".wb-board-filter").value.toLowerCase().split(/\s+/).filter((w) => w);
  const status = $(".wb-board-status").value;
  const matched = boardRows.filter((r) => words.every((w) => r.pipeline.toLowerCase().includes(w))
                                         && (!status || has(r, status)));
  const pages = Math.max(1, Math.ceil(matched.length / PAGE));
  pageNo = Math.min(Math.max(1, pageNo), pages);
  const shown = matched.slice((pageNo - 1) * PAGE, pageNo * PAGE);
  const names = { failed: "failing", waiting: "waiting for approval", running: "running", passed: "passed",
                  "never run": "never run", paused: "paused" };
  const counts = Object.keys(names).map((k) => [k, boardRows.filter((r) => has(r, k)).length]).filter(([, n]) => n);
  $(".wb-board-summary").textContent = [`${boardRows.length} pipelines`, ...counts.map(([k, n]) => `${n} ${names[k]}`)]
    .join(" · ") + " — " + (matched.length ? `showing ${(pageNo - 1) * PAGE + 1}–${(pageNo - 1) * PAGE + shown.length}`
    + ` of ${matched.length} matched, page ${pageNo} of ${pages}` : "no pipeline matches the filter");
  $(".wb-board-prev").disabled = pageNo <= 1;
  $(".wb-board-next").disabled = pageNo >= pages;
  const body = $(".wb-board tbody");
  body.replaceChildren();
  for (const run of shown) {
    const stages = el("td");
    for (const s of run.stages || []) {
      stages.append(el("span", { "class": "wb-stage", "data-stage": s.name, "data-status": s.status,
                                  "title": s.approved_by ? "approved by " + s.approved_by : s.status },
                       s.name + ": " + s.status));
    }
    body.append(el("tr", { "data-pipeline": run.pipeline }, el("td", {}, run.pipeline),
                   el("td", {}, run.counter == null ? "" : `${run.counter} (${run.label})`),
                   el("td", {}, run.status), stages));
  }
}

let shownApprovals = null;

// Re-drawn only when the waiting stages changed, so a periodic refresh does not wipe a comment being typed.
function renderApprovals(rows, force) {
  const key = JSON.stringify(rows.map((a) => a.locator));
  if (!force && key === shownApprovals) return;
  shownApprovals = key;
  const body = $(".wb-approvals tbody");
  body.replaceChildren();
  if (!rows.length) body.append(el("tr", {}, el("td", { colSpan: 5 }, "nothing is waiting for a decision")));
  for (const a of rows) {
    const comment = el("input", { "class": "wb-comment", type: "text", placeholder: "comment (required to reject)" });
    const approve = el("button", { "class": "wb-approve", type: "button" }, "Approve");
    const reject = el("button", { "class": "wb-reject", type: "button" }, "Reject");
    const decide = async (verb) => {
      const text = comment.value.trim();
      if (verb === "reject" && !text) { say("a rejection needs a comment", false); comment.focus(); return; }
      approve.disabled = reject.disabled = true;
      const [p, c, s] = [a.pipeline, a.counter, a.stage].map((x) => encodeURIComponent(String(x)));
      try {
        const out = await call("POST", `/approvals/${p}/${c}/${s}/${verb}`, { comment: text || null });
        const run = out && out.status ? ` (run ${out.pipeline || a.pipeline}/${out.counter || a.counter}: ${out.status})` : "";
        say(`${verb === "approve" ? "approved" : "rejected"} ${a.locator} as ${WHO}${run}`, true);
        await refresh(true);
      } catch (e) {
        say(e.message, false);
        approve.disabled = reject.disabled = false;
      }
    };
    approve.addEventListener("click", () => decide("approve"));
    reject.addEventListener("click", () => decide("reject"));
    body.append(el("tr", { "class": "wb-approval", "data-locator": a.locator }, el("td", {}, a.locator),
                   el("td", {}, a.waiting_since || ""), el("td", {}, a.approvers || ""), el("td", {}, comment),
                   el("td", {}, approve, " ", reject)));
  }
}

async function refresh(force) {
  const [board, approvals] = await Promise.all([call("GET", "/status"), call("GET", "/approvals")]);
  renderBoard(board);
  renderApprovals(approvals, force);
  document.body.dataset.loaded = "true";
}

async function start() {
  $(".wb-board-filter").addEventListener("input", () => { pageNo = 1; renderBoard(); });
  $(".wb-board-status").addEventListener("change", () => { pageNo = 1; renderBoard(); });
  $(".wb-board-prev").addEventListener("click", () => { pageNo -= 1; renderBoard(); });
  $(".wb-board-next").addEventListener("click", () => { pageNo += 1; renderBoard(); });
  if (CONFIG.logout) { const a = $(".wb-logout"); a.href = CONFIG.logout; a.hidden = false; }
  try {
    const me = await call("GET", "/whoami");
    WHO = me.user;
    $(".wb-who").textContent = `signed in as ${me.user}` + (me.groups.length ? ` (groups: ${me.groups.join(", ")})` : "");
    await refresh(true);
  } catch (e) { say(e.message, false); }
  setInterval(() => { refresh(false).catch((e) => say(e.message, false)); }, 15000);
}
start();
</script>
</body></html>
"""
