/**
 * (m) Egress through the allowlist proxy: one client program, run on the host straight at a
 * loopback HTTP server and inside an allowlist sandbox through its proxy (client → the proxy
 * in the runtime, on its listener in the sandbox's namespace → server). It times sequential
 * keep-alive GETs and one 100 MiB download itself, so process start-up counts on neither side.
 */
import { spawn, type ChildProcess } from "node:child_process";
import type { Agentbox, Sandbox } from "@agentbox/sdk";
import { summarize, type Summary } from "./stats.js";

/** The client: `node -e CLIENT <direct|proxy> <port> <gets> <downloadBytes>` prints {gets: ms[], downloadMs}. */
const CLIENT = `
const http = require("http");
const [mode, port, gets, bytes] = process.argv.slice(-4);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const target = "127.0.0.1:" + port;
function get(path) {
  const opts = mode === "proxy"
    ? { host: "127.0.0.1", port: 3128, path: "http://" + target + path, headers: { host: target }, agent }
    : { host: "127.0.0.1", port: Number(port), path, agent };
  return new Promise((resolve, reject) => {
    http.get(opts, (res) => { let n = 0; res.on("data", (d) => (n += d.length)); res.on("end", () => resolve(n)); }).on("error", reject);
  });
}
function openTunnel() {
  return new Promise((resolve, reject) => {
    http.request({ host: "127.0.0.1", port: 3128, method: "CONNECT", path: target }).on("connect", (res, socket) => {
      // Every request of the keep-alive agent goes over this one tunnel.
      agent.createConnection = () => socket;
      resolve();
    }).on("error", reject).end();
  });
}
(async () => {
  if (mode === "connect") await openTunnel();
  const times = [];
  for (let i = 0; i < 10; i++) await get("/small");
  for (let i = 0; i < Number(gets); i++) { const t = performance.now(); await get("/small"); times.push(performance.now() - t); }
  const t = performance.now();
  const got = await get("/bytes/" + bytes);
  if (got !== Number(bytes)) throw new Error("short download: " + got);
  console.log(JSON.stringify({ gets: times, downloadMs: performance.now() - t }));
})();`;

/** The upstream: a loopback HTTP server in its own process (so neither client shares its event loop). */
const SERVER = `
const http = require("http");
const chunk = Buffer.alloc(1 << 20, 120);
http.createServer((req, res) => {
  const m = /^\\/bytes\\/(\\d+)$/.exec(req.url);
  if (!m) return res.end("ok");
  let left = Number(m[1]);
  res.writeHead(200, { "content-length": left });
  const more = () => { while (left > 0) { const n = Math.min(left, chunk.length); left -= n; if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return res.once("drain", more); } res.end(); };
  more();
}).listen(0, "127.0.0.1", function () { console.log(this.address().port); });`;

export interface ProxyModeResult {
  get: Summary;
  getRatio: number;
  MBps: number;
  throughputRatio: number;
  met: { get: boolean; throughput: boolean };
  /** The GET ratio of the untimed first round, on a freshly started runtime (information only). */
  coldGetRatio: number;
}

export interface NetworkResult {
  directGet: Summary;
  directMBps: number;
  /** Absolute-form requests (HTTP_PROXY with an http:// url). */
  plainHttp: ProxyModeResult;
  /** A CONNECT tunnel (HTTPS_PROXY, ALL_PROXY-style clients). */
  tunnel: ProxyModeResult;
}

interface Run {
  gets: number[];
  downloadMs: number;
}

function runDirect(port: number, gets: number, bytes: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["-e", CLIENT, "direct", String(port), String(gets), String(bytes)], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    child.once("exit", (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`direct client exited ${code}`))));
  });
}

async function runProxied(sb: Sandbox, port: number, gets: number, bytes: number, mode: "proxy" | "connect"): Promise<Run> {
  const r = await sb.exec(["node", "/tmp/net-client.js", mode, String(port), String(gets), String(bytes)], { timeoutMs: 120_000 });
  if (r.exitCode !== 0) throw new Error(`proxied client failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

export async function networkBench(client: Agentbox, rounds: number, gets: number): Promise<NetworkResult> {
  const server: ChildProcess = spawn(process.execPath, ["-e", SERVER], { stdio: ["ignore", "pipe", "inherit"] });
  try {
    const port = await new Promise<number>((resolve) => server.stdout!.once("data", (d: Buffer) => resolve(Number(d.toString().trim()))));
    const sb = await client.sandboxes.create({ network: { mode: "allowlist", allow: [`127.0.0.1:${port}`] } });
    try {
      await sb.files.write("/tmp/net-client.js", CLIENT);
      const bytes = 100 * 2 ** 20;
      const runs = { direct: [] as Run[], proxy: [] as Run[], connect: [] as Run[] };
      // One untimed round first, as for the other figures: the proxy is a long-running service,
      // and its first few hundred requests run on code the JIT has not compiled yet. What that
      // round measured is reported (coldGetRatio), not counted.
      const cold = { direct: await runDirect(port, gets, 1 << 20), proxy: await runProxied(sb, port, gets, 1 << 20, "proxy"), connect: await runProxied(sb, port, gets, 1 << 20, "connect") };
      const coldRatio = (r: Run) => summarize(r.gets).p50 / summarize(cold.direct.gets).p50;
      for (let i = 0; i < rounds; i++) {
        runs.direct.push(await runDirect(port, gets, bytes));
        runs.proxy.push(await runProxied(sb, port, gets, bytes, "proxy"));
        runs.connect.push(await runProxied(sb, port, gets, bytes, "connect"));
      }
      const rate = (rs: Run[]) => bytes / 1e6 / (summarize(rs.map((r) => r.downloadMs)).p50 / 1000);
      const directGet = summarize(runs.direct.flatMap((r) => r.gets));
      const directMBps = rate(runs.direct);
      const mode = (rs: Run[]): Omit<ProxyModeResult, "coldGetRatio"> => {
        const get = summarize(rs.flatMap((r) => r.gets));
        const MBps = rate(rs);
        const getRatio = get.p50 / directGet.p50;
        const throughputRatio = MBps / directMBps;
        return { get, getRatio, MBps, throughputRatio, met: { get: getRatio <= 2, throughput: throughputRatio >= 0.5 } };
      };
      return {
        directGet,
        directMBps,
        plainHttp: { ...mode(runs.proxy), coldGetRatio: coldRatio(cold.proxy) },
        tunnel: { ...mode(runs.connect), coldGetRatio: coldRatio(cold.connect) },
      };
    } finally {
      await sb.delete();
    }
  } finally {
    server.kill();
  }
}
