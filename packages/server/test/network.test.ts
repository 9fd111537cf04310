/**
 * Network policy end to end, with real sandboxes: `none` reaches nothing, `allowlist` goes
 * only through the host's egress proxy with per-sandbox rules (HTTP, CONNECT and SOCKS5),
 * `open` uses user-mode networking but cannot reach the host's loopback, and exposed ports
 * carry HTTP and WebSocket traffic into a sandbox. Traffic goes only to servers this test
 * starts on loopback or in a network namespace it creates itself.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import { startHarness, type Harness } from "./harness.js";
import { loopbackServer, type LoopbackServer } from "./loopback-server.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A loopback HTTP server on the host answering `<name> <path>`; big paths send N bytes. */
function hostServer(name: string): Promise<LoopbackServer> {
  return loopbackServer((req, res) => {
    const big = /^\/bytes\/(\d+)$/.exec(req.url ?? "");
    if (big) {
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": big[1] });
      res.end(Buffer.alloc(Number(big[1]), 120));
      return;
    }
    res.end(`${name} ${req.url}`);
  });
}

describe("network policy and exposed ports", () => {
  let h: Harness;
  let a: LoopbackServer;
  let b: LoopbackServer;
  before(async () => {
    h = await startHarness();
    a = await hostServer("A");
    b = await hostServer("B");
  });
  after(async () => {
    a.server.close();
    b.server.close();
    await h.close();
  });

  const sh = async (id: string, command: string) => h.exec(id, { command, timeoutMs: 20_000 });

  test("none: no route, no DNS, no proxy socket, no proxy variables", async () => {
    const sb = await h.createSandbox();
    assert.deepEqual(sb.network, { mode: "none" });
    const r = await sh(sb.id, `curl -sS -m 3 http://127.0.0.1:${a.port}/ 2>&1; echo "curl=$?"; cat /proc/net/route | wc -l; ls /dev/.agentbox-proxy.sock 2>&1 | head -1; env | grep -ci proxy; getent hosts example.com; echo "dns=$?"; python3 -c 'import socket; socket.create_connection(("192.0.2.2", ${a.port}), timeout=2)' 2>&1 | tail -1`);
    const lines = r.stdout.trim().split("\n");
    assert.match(lines[0], /Failed to connect|Couldn't connect/);
    assert.equal(lines[1], "curl=7");
    assert.equal(lines[2], "1", "only the header line of the route table");
    assert.match(lines[3], /No such file/);
    assert.equal(lines[4], "0");
    assert.equal(lines[5], "dns=2");
    assert.match(lines[6], /Network is unreachable/);
  });

  test("allowlist: exact rules pass, others get 403 with a reason, a name resolving to loopback is refused", async () => {
    const sb = await h.createSandbox({ network: { mode: "allowlist", allow: [`127.0.0.1:${a.port}`, "localhost", "*.example.invalid"] } });
    const env = await sh(sb.id, "echo $HTTP_PROXY $HTTPS_PROXY $ALL_PROXY $no_proxy");
    assert.equal(env.stdout, "http://127.0.0.1:3128 http://127.0.0.1:3128 socks5h://127.0.0.1:3128 localhost,127.0.0.1,::1\n");
    // HTTP proxy (absolute form), CONNECT and SOCKS5 all reach the allowed server.
    const ok = await sh(sb.id, `curl -sS --noproxy '' http://127.0.0.1:${a.port}/plain; echo; curl -sS --noproxy '' --proxytunnel http://127.0.0.1:${a.port}/tunnel; echo; curl -sS --noproxy '' --socks5-hostname 127.0.0.1:3128 http://127.0.0.1:${a.port}/socks`);
    assert.equal(ok.stdout, "A /plain\nA /tunnel\nA /socks");
    // Another port of the same address, the server of another sandbox: 403, and the reason says why.
    const denied = await sh(sb.id, `curl -sS --noproxy '' -w '%{http_code}' http://127.0.0.1:${b.port}/`);
    assert.equal(denied.stdout, `127.0.0.1:${b.port} is not in the sandbox's allowlist\n403`);
    // "localhost" is allowed by name, but it resolves to a loopback address that no rule names.
    const loop = await sh(sb.id, `curl -sS --noproxy '' -w '%{http_code}' http://localhost:${b.port}/`);
    assert.match(loop.stdout, /^localhost resolves to 127\.0\.0\.1, a loopback address; allow it explicitly .*\n403$/);
    // A wildcard matches names below it (and gets as far as resolving), not the name itself.
    const wild = await sh(sb.id, `curl -sS --noproxy '' http://api.example.invalid/; curl -sS --noproxy '' http://example.invalid/`);
    assert.match(wild.stdout, /^cannot resolve api\.example\.invalid: ENOTFOUND\nexample\.invalid:80 is not in the sandbox's allowlist\n$/);
    // CONNECT refused: curl reports the proxy's 403.
    const tunnel = await sh(sb.id, `curl -sS --noproxy '' --proxytunnel http://127.0.0.1:${b.port}/ 2>&1; echo "curl=$?"`);
    assert.match(tunnel.stdout, /CONNECT tunnel failed, response 403/);
    // Going around the proxy: the sandbox has no route anywhere.
    const direct = await sh(sb.id, `curl -sS -m 3 --noproxy '*' http://127.0.0.1:${a.port}/ 2>&1; echo "curl=$?"; python3 -c 'import socket; socket.create_connection(("192.0.2.2", ${a.port}), timeout=2)' 2>&1 | tail -1`);
    assert.match(direct.stdout, /curl=7\n.*Network is unreachable/s);
    // The proxy's port is a listener of the host's: no process of the sandbox carries it (none
    // to kill), no host socket is mounted in, and the port cannot be taken over beside it.
    const held = await sh(sb.id, [
      "ls -l /proc/[0-9]*/fd/ 2>/dev/null | grep -c 'socket:'",
      "ls /dev/.agentbox-proxy.sock 2>&1 | grep -c 'No such file'",
      `python3 -c 'import socket\nfor a in ("127.0.0.1", "0.0.0.0"):\n  s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)\n  try: s.bind((a, 3128)); print(a, "bound")\n  except OSError as e: print(a, e.strerror)'`,
    ].join("; "));
    assert.equal(held.stdout, "0\n1\n127.0.0.1 Address already in use\n0.0.0.0 Address already in use\n");
    // The egress log has every request of this sandbox, in order, with bytes.
    const log = await h.api("GET", `/v1/sandboxes/${sb.id}/network/log`);
    assert.equal(log.status, 200);
    const entries = log.body.entries as Array<Record<string, any>>;
    const summary = entries.map((e) => `${e.protocol} ${e.host}:${e.port} ${e.allowed}`);
    assert.deepEqual(summary, [
      `http 127.0.0.1:${a.port} true`,
      `connect 127.0.0.1:${a.port} true`,
      `socks 127.0.0.1:${a.port} true`,
      `http 127.0.0.1:${b.port} false`,
      `http localhost:${b.port} false`,
      `http api.example.invalid:80 false`,
      `http example.invalid:80 false`,
      `connect 127.0.0.1:${b.port} false`,
    ]);
    assert.equal(entries[0]!.bytesIn, "A /plain".length);
    assert.equal(entries[0]!.address, "127.0.0.1");
    assert.ok(entries[1]!.bytesIn > "A /tunnel".length, "a tunnel counts the response's head too");
    assert.ok(entries[1]!.bytesOut > 0);
    assert.equal(entries[3]!.reason, `127.0.0.1:${b.port} is not in the sandbox's allowlist`);
    assert.ok(!Number.isNaN(Date.parse(entries[0]!.time)));
    const limited = await h.api("GET", `/v1/sandboxes/${sb.id}/network/log?limit=2`);
    assert.deepEqual(limited.body.entries.map((e: any) => e.protocol), ["http", "connect"]);
  });

  test("a big download through a tunnel is byte-exact after the proxy hands it to the splice relay", async () => {
    const sb = await h.createSandbox({ network: { mode: "allowlist", allow: [`127.0.0.1:${a.port}`] } });
    const size = 8 * 1024 * 1024;
    const want = createHash("sha256").update(Buffer.alloc(size, 120)).digest("hex");
    const r = await sh(sb.id, `curl -sS --noproxy '' --proxytunnel http://127.0.0.1:${a.port}/bytes/${size} | sha256sum; curl -sS --noproxy '' --socks5-hostname 127.0.0.1:3128 http://127.0.0.1:${a.port}/bytes/${size} | sha256sum; curl -sS --noproxy '' http://127.0.0.1:${a.port}/bytes/${size} http://127.0.0.1:${a.port}/after | sha256sum`);
    const plainWant = createHash("sha256").update(Buffer.concat([Buffer.alloc(size, 120), Buffer.from("A /after")])).digest("hex");
    // Plain HTTP: the body goes through the relay too, and the connection is usable after it.
    assert.equal(r.stdout, `${want}  -\n${want}  -\n${plainWant}  -\n`);
    // The log counts the bytes the relay moved too (once it has exited: give it a moment).
    let entries: Array<Record<string, any>> = [];
    for (let i = 0; i < 50; i++) {
      entries = (await h.api("GET", `/v1/sandboxes/${sb.id}/network/log`)).body.entries;
      if (entries.slice(0, 3).every((e) => e.bytesIn >= size)) break;
      await sleep(100);
    }
    assert.deepEqual(entries.map((e) => e.protocol), ["connect", "socks", "http", "http"]);
    assert.deepEqual(entries.slice(2).map((e) => [e.bytesOut, e.bytesIn]), [[0, size], [0, "A /after".length]]);
    for (const e of entries.slice(0, 2)) {
      assert.ok(e.bytesIn > size && e.bytesIn < size + 1000, `bytesIn ${e.bytesIn}`);
      assert.ok(e.bytesOut > 50 && e.bytesOut < 1000, `bytesOut ${e.bytesOut}`);
    }
  });

  test("two sandboxes on one proxy keep their own rules; a rule change applies to the next connection", async () => {
    const one = await h.createSandbox({ network: { mode: "allowlist", allow: [`127.0.0.1:${a.port}`] } });
    const two = await h.createSandbox({ network: { mode: "allowlist", allow: [`127.0.0.1:${b.port}`] } });
    const probe = (id: string) => sh(id, `for p in ${a.port} ${b.port}; do curl -s --noproxy '' -o /dev/null -w '%{http_code} ' http://127.0.0.1:$p/; done`);
    assert.equal((await probe(one.id)).stdout, "200 403 ");
    assert.equal((await probe(two.id)).stdout, "403 200 ");
    // Allow both for the second, with a deny rule that wins over the allow rule for one path of it.
    const patched = await h.api("PATCH", `/v1/sandboxes/${two.id}`, {
      network: { mode: "allowlist", allow: ["127.0.0.0/8"], deny: [`127.0.0.1:${b.port}`] },
    });
    assert.equal(patched.status, 200);
    assert.deepEqual(patched.body.network, { mode: "allowlist", allow: ["127.0.0.0/8"], deny: [`127.0.0.1:${b.port}`] });
    assert.equal((await probe(two.id)).stdout, "200 403 ");
    assert.equal((await probe(one.id)).stdout, "200 403 ");
    assert.deepEqual((await h.api("GET", `/v1/sandboxes/${two.id}`)).body.network.deny, [`127.0.0.1:${b.port}`]);
    // The mode of a running sandbox cannot change; bad rules are refused naming the field.
    const mode = await h.api("PATCH", `/v1/sandboxes/${two.id}`, { network: { mode: "open" } });
    assert.equal(mode.status, 409);
    assert.equal(mode.body.error.code, "CONFLICT");
    const bad = await h.api("PATCH", `/v1/sandboxes/${two.id}`, { network: { mode: "allowlist", allow: ["ok.example", "bad host"] } });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error.message, /network\.allow\.1/);
    assert.match(bad.body.error.message, /is not a host name/);
    const badPort = await h.api("POST", "/v1/templates", { name: "bad-net", network: { mode: "allowlist", allow: ["example.com:99999"] } });
    assert.equal(badPort.status, 400);
    assert.match(badPort.body.error.message, /not a port/);
  });

  test("a template's network applies to its sandboxes", async () => {
    const t = await h.api("POST", "/v1/templates", { name: "net-allow", network: { mode: "allowlist", allow: [`127.0.0.1:${b.port}`] } });
    assert.equal(t.status, 201, JSON.stringify(t.body));
    const sb = await h.createSandbox({ template: "net-allow" });
    assert.deepEqual(sb.network, { mode: "allowlist", allow: [`127.0.0.1:${b.port}`] });
    assert.equal((await sh(sb.id, `curl -s --noproxy '' http://127.0.0.1:${b.port}/t`)).stdout, "B /t");
  });

  describe("open", () => {
    const ns = `abx-test-${process.pid}`;
    const hostSide = `abxh${process.pid % 100000}`;
    let remote: ChildProcess | undefined;
    before(async () => {
      const ip = (...args: string[]) => execFileSync("ip", args, { stdio: "pipe" });
      ip("netns", "add", ns);
      ip("link", "add", hostSide, "type", "veth", "peer", "name", "eth0", "netns", ns);
      ip("addr", "add", "10.213.7.1/30", "dev", hostSide);
      ip("link", "set", hostSide, "up");
      ip("netns", "exec", ns, "ip", "addr", "add", "10.213.7.2/30", "dev", "eth0");
      ip("netns", "exec", ns, "ip", "link", "set", "eth0", "up");
      ip("netns", "exec", ns, "ip", "link", "set", "lo", "up");
      remote = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", `require("http").createServer((q, s) => s.end("remote " + q.url)).listen(8080, "10.213.7.2", () => console.log("up"))`], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      await new Promise<void>((resolve) => remote!.stdout!.once("data", () => resolve()));
    });
    after(() => {
      remote?.kill("SIGKILL");
      try {
        execFileSync("ip", ["netns", "del", ns], { stdio: "pipe" });
      } catch {
        /* already gone */
      }
    });

    test("reaches a remote host but not the host's loopback services", async () => {
      const sb = await h.createSandbox({ network: { mode: "open" } });
      const out = await sh(sb.id, `curl -sS -m 5 http://10.213.7.2:8080/hi; echo; curl -sS -m 3 http://10.0.2.2:${a.port}/ 2>&1; echo "gw=$?"; curl -sS -m 3 http://127.0.0.1:${a.port}/ 2>&1; echo "lo=$?"; grep nameserver /etc/resolv.conf`);
      const lines = out.stdout.trim().split("\n");
      assert.equal(lines[0], "remote /hi");
      assert.match(out.stdout, /gw=(7|28)\n/);
      assert.match(out.stdout, /lo=7\n/);
      assert.equal(lines.at(-1), "nameserver 10.0.2.3");
      // The agentbox API on the host's loopback is out of reach as well.
      const apiPort = new URL(h.server.url).port;
      const api = await sh(sb.id, `curl -sS -m 3 http://10.0.2.2:${apiPort}/healthz 2>&1; echo "api=$?"`);
      assert.match(api.stdout, /api=(7|28)/);
      await h.api("DELETE", `/v1/sandboxes/${sb.id}`);
    });
  });

  describe("exposed ports", () => {
    // A small HTTP + WebSocket echo server, with no dependencies, run inside the sandbox.
    const serverJs = `
const http = require("http"), crypto = require("crypto");
const s = http.createServer((q, r) => { r.setHeader("set-cookie", ["app=1", "wide=2; Path=/; Domain=example.com; HttpOnly"]); r.end(JSON.stringify({ url: q.url, auth: q.headers.authorization ?? null, cookie: q.headers.cookie ?? null, prefix: q.headers["x-forwarded-prefix"] })); });
s.on("upgrade", (q, sock) => {
  const accept = crypto.createHash("sha1").update(q.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
  sock.write("HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: " + accept + "\\r\\n\\r\\n");
  sock.on("data", (f) => {
    const len = f[1] & 127, mask = f.subarray(2, 6), data = Buffer.from(f.subarray(6, 6 + len).map((b, i) => b ^ mask[i % 4]));
    const out = Buffer.from("echo " + q.url + " " + data.toString());
    sock.write(Buffer.concat([Buffer.from([0x81, out.length]), out]));
  });
});
s.listen(8000, "127.0.0.1", () => console.log("listening"));`;

    test("HTTP and WebSocket round trips with the port's token or the API key; closing revokes it", async () => {
      const sb = await h.createSandbox();
      await h.api("PUT", `/v1/sandboxes/${sb.id}/files?path=/workspace/server.js`, undefined, { raw: serverJs });
      const proc = await h.api("POST", `/v1/sandboxes/${sb.id}/processes`, { command: "node /workspace/server.js" });
      assert.equal(proc.status, 201);
      for (let i = 0; i < 100; i++) {
        const logs = await h.api("GET", `/v1/sandboxes/${sb.id}/processes/${proc.body.id}/logs`);
        if (String(logs.body.stdout ?? "").includes("listening")) break;
        await sleep(50);
      }
      const exposed = await h.api("POST", `/v1/sandboxes/${sb.id}/ports`, { port: 8000 });
      assert.equal(exposed.status, 201);
      assert.equal(exposed.body.port, 8000);
      const url = new URL(exposed.body.url);
      assert.equal(url.origin, h.server.url);
      assert.equal(url.pathname, `/v1/sandboxes/${sb.id}/ports/8000/`);
      const token = url.searchParams.get("token")!;
      assert.ok(token.length >= 32);
      // The token in the url is enough, and it never reaches the sandbox's server.
      const first = await fetch(`${exposed.body.url.replace("/?", "/page?a=1&")}`);
      assert.equal(first.status, 200);
      const seen = (await first.json()) as Record<string, unknown>;
      assert.deepEqual(seen, { url: "/page?a=1", auth: null, cookie: null, prefix: `/v1/sandboxes/${sb.id}/ports/8000` });
      // The page's next requests carry the cookie the proxy set (scoped to this port's path).
      const cookies = first.headers.getSetCookie();
      // The sandbox's own cookies stay under its port's path (no Domain, no reach into the API's paths).
      assert.ok(cookies.includes(`app=1; Path=/v1/sandboxes/${sb.id}/ports/8000/`), cookies.join(" | "));
      assert.ok(cookies.includes(`wide=2; Path=/v1/sandboxes/${sb.id}/ports/8000/; HttpOnly`), cookies.join(" | "));
      const ours = cookies.find((c) => c.startsWith("agentbox_port_token="))!;
      assert.match(ours, new RegExp(`Path=/v1/sandboxes/${sb.id}/ports/8000/; HttpOnly`));
      const byCookie = await fetch(`${h.server.url}/v1/sandboxes/${sb.id}/ports/8000/next`, { headers: { cookie: `${ours.split(";")[0]}; app=1` } });
      assert.deepEqual(await byCookie.json(), { url: "/next", auth: null, cookie: "app=1", prefix: `/v1/sandboxes/${sb.id}/ports/8000` });
      // The API key works too, and is removed before forwarding.
      const byKey = await fetch(`${h.server.url}/v1/sandboxes/${sb.id}/ports/8000/k`, { headers: { authorization: `Bearer ${h.server.apiKey}` } });
      assert.equal(((await byKey.json()) as { auth: unknown }).auth, null);
      // No credential, or another port's: 401.
      assert.equal((await fetch(`${h.server.url}/v1/sandboxes/${sb.id}/ports/8000/`)).status, 401);
      assert.equal((await fetch(`${h.server.url}/v1/sandboxes/${sb.id}/ports/8000/?token=wrong`)).status, 401);
      // WebSocket through the same url.
      const wsUrl = exposed.body.url.replace(/^http/, "ws").replace("/?", "/socket?");
      const ws = new WebSocket(wsUrl);
      const echoed = await new Promise<string>((resolve, reject) => {
        ws.once("open", () => ws.send("ping"));
        ws.once("message", (d) => resolve(d.toString()));
        ws.once("error", reject);
      });
      assert.equal(echoed, "echo /socket ping");
      ws.terminate(); // the toy server above does not answer close frames
      const badWs = new WebSocket(`${h.server.url.replace("http", "ws")}/v1/sandboxes/${sb.id}/ports/8000/socket`);
      const refused = await new Promise<number>((resolve) => badWs.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0)));
      assert.equal(refused, 401);
      // Listing, a port where nothing listens (502), closing (404 after).
      const list = await h.api("GET", `/v1/sandboxes/${sb.id}/ports`);
      assert.deepEqual(list.body.ports.map((p: any) => p.port), [8000]);
      const empty = await h.api("POST", `/v1/sandboxes/${sb.id}/ports`, { port: 9000 });
      const unreachable = await fetch(empty.body.url);
      assert.equal(unreachable.status, 502);
      assert.equal(((await unreachable.json()) as any).error.code, "PORT_UNREACHABLE");
      const closed = await h.api("DELETE", `/v1/sandboxes/${sb.id}/ports/8000`);
      assert.deepEqual(closed.body, { port: 8000, closed: true });
      const after = await fetch(exposed.body.url);
      assert.equal(after.status, 404);
      const badPort = await h.api("POST", `/v1/sandboxes/${sb.id}/ports`, { port: 70000 });
      assert.equal(badPort.status, 400);
    });
  });
});
