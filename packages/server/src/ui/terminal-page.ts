/**
 * A minimal browser terminal: `/ui/terminal/<sandbox>` serves a page that runs
 * xterm.js, creates (or, with `?terminal=<id>`, attaches to) a terminal of the
 * sandbox and connects to its WebSocket. The page holds no secret and is served
 * without the API key; the key is given in the URL fragment (`#token=<key>`,
 * never sent to the server by the browser) or typed into the page, and the page
 * uses it for its API calls like any other client.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type { ServerResponse } from "node:http";
import { AgentboxError } from "@agentbox/protocol";
import type { Router } from "../http/router.js";

const require = createRequire(import.meta.url);

/** Files the page loads, from the xterm.js packages (no CDN: the page works offline). */
const ASSETS: Record<string, { module: string; type: string }> = {
  "xterm.mjs": { module: "@xterm/xterm/lib/xterm.mjs", type: "text/javascript" },
  "xterm.css": { module: "@xterm/xterm/css/xterm.css", type: "text/css" },
  "addon-fit.mjs": { module: "@xterm/addon-fit/lib/addon-fit.mjs", type: "text/javascript" },
};
const cache = new Map<string, Buffer>();

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>agentbox terminal</title>
<link rel="stylesheet" href="/ui/assets/xterm.css">
<style>
  html, body { margin: 0; height: 100%; background: #111; color: #ddd; font: 14px system-ui, sans-serif; }
  #bar { padding: 4px 8px; display: flex; gap: 8px; align-items: center; }
  #bar input { background: #222; color: #ddd; border: 1px solid #444; padding: 2px 6px; }
  #status { margin-left: auto; opacity: .8; }
  #term { position: absolute; top: 32px; left: 0; right: 0; bottom: 0; padding: 4px; }
</style>
</head>
<body>
<div id="bar">
  <form id="keyform" hidden><label>API key <input id="key" type="password" autocomplete="off"></label> <button>Connect</button></form>
  <span id="status">connecting…</span>
</div>
<div id="term"></div>
<script type="module">
import { Terminal } from "/ui/assets/xterm.mjs";
import { FitAddon } from "/ui/assets/addon-fit.mjs";

const sandbox = decodeURIComponent(location.pathname.split("/").pop());
const params = new URLSearchParams(location.search);
const statusEl = document.getElementById("status");
const setStatus = (text) => (statusEl.textContent = text);

// The key stays in this page's memory only: pages served from sandboxes' exposed ports share
// this origin, so nothing that outlives the page (storage, cookies) may hold it.
function apiKey() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) history.replaceState(null, "", location.pathname + location.search);
  return fromHash;
}

async function start(key) {
  const term = new Terminal({ cursorBlink: true, fontFamily: "monospace", fontSize: 14 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(document.getElementById("term"));
  fit.fit();
  window.agentboxTerminal = term;
  const base = "/v1/sandboxes/" + encodeURIComponent(sandbox) + "/terminals";
  const body = { cols: term.cols, rows: term.rows };
  if (params.get("terminal")) body.id = params.get("terminal");
  const res = await fetch(base, { method: "POST", headers: { authorization: "Bearer " + key, "content-type": "application/json" }, body: JSON.stringify(body) });
  const info = await res.json();
  if (!res.ok) {
    setStatus("error: " + (info.error?.message ?? res.status));
    return;
  }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(scheme + "//" + location.host + base + "/" + encodeURIComponent(info.id) + "/connect?token=" + encodeURIComponent(key));
  ws.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  ws.onopen = () => {
    setStatus(sandbox + " · " + info.id);
    ws.send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") return term.write(new Uint8Array(ev.data));
    const msg = JSON.parse(ev.data);
    if (msg.type === "exit") setStatus("exited with code " + msg.exitCode);
    else if (msg.type === "error") setStatus("error: " + msg.message);
  };
  ws.onclose = (ev) => { if (!statusEl.textContent.startsWith("exited")) setStatus("disconnected (" + ev.code + ")"); };
  term.onData((data) => ws.readyState === 1 && ws.send(encoder.encode(data)));
  term.onBinary((data) => ws.readyState === 1 && ws.send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
  term.onResize(({ cols, rows }) => ws.readyState === 1 && ws.send(JSON.stringify({ type: "resize", cols, rows })));
  addEventListener("resize", () => fit.fit());
  term.focus();
}

const key = apiKey();
if (key) start(key);
else {
  setStatus("enter the API key to connect");
  const form = document.getElementById("keyform");
  form.hidden = false;
  form.onsubmit = (e) => {
    e.preventDefault();
    const k = document.getElementById("key").value.trim();
    form.hidden = true;
    start(k);
  };
}
</script>
</body>
</html>
`;

function sendRaw(res: ServerResponse, type: string, body: Buffer | string): void {
  res.writeHead(200, {
    "content-type": `${type}; charset=utf-8`,
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
    // The page runs only its own scripts and talks only to this server.
    "content-security-policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
  });
  res.end(body);
}

/** Paths under /ui/ are served without the API key (see above). */
export function isPublicUiPath(pathname: string): boolean {
  return pathname.startsWith("/ui/");
}

export function uiRoutes(router: Router): void {
  router.get("/ui/terminal/:sandbox", ({ res }) => {
    sendRaw(res, "text/html", PAGE);
    return undefined;
  });
  router.get("/ui/assets/:file", ({ res, params }) => {
    const asset = Object.hasOwn(ASSETS, params.file!) ? ASSETS[params.file!] : undefined;
    if (!asset) throw new AgentboxError("NOT_FOUND", `no asset ${params.file}`);
    let body = cache.get(params.file!);
    if (!body) {
      body = readFileSync(require.resolve(asset.module));
      cache.set(params.file!, body);
    }
    sendRaw(res, asset.type, body);
    return undefined;
  });
}
