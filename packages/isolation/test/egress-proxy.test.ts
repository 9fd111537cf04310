/**
 * The egress proxy on its own, with real sockets: a loopback upstream server, clients
 * speaking HTTP (absolute form), CONNECT and SOCKS5 to a sandbox's unix socket. Names are
 * resolved by a table given to the proxy (this machine has no DNS to test against).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { connect, type AddressInfo, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { EgressPolicy, EgressProxy, specialAddress } from "../src/index.js";

const HOSTS: Record<string, string[]> = {
  "api.example.test": ["127.0.0.1"],
  "deep.api.example.test": ["127.0.0.1"],
  "public.example.test": ["93.184.216.34"],
  "rebind.example.test": ["169.254.169.254"],
};

/** Send `request` on a fresh connection to the sandbox's socket; resolve with everything it answered. */
function roundTrip(socketPath: string, request: Buffer | string, opts: { endAfterMs?: number } = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s: Socket = connect(socketPath);
    const chunks: Buffer[] = [];
    s.on("data", (d) => chunks.push(d));
    s.on("error", reject);
    s.on("close", () => resolve(Buffer.concat(chunks)));
    s.write(request);
    setTimeout(() => s.end(), opts.endAfterMs ?? 300);
  });
}

describe("egress proxy", () => {
  let dir: string;
  let upstream: Server;
  let port: number;
  const proxy = new EgressProxy({ resolve: async (host) => HOSTS[host] ?? Promise.reject(Object.assign(new Error("not found"), { code: "ENOTFOUND" })) });
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "agentbox-egress-"));
    upstream = createServer((req, res) => {
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => res.end(`${req.method} ${req.url} host=${req.headers.host} proxy=${req.headers["proxy-connection"] ?? "-"} body=${body}`));
    });
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", () => r()));
    port = (upstream.address() as AddressInfo).port;
  });
  after(async () => {
    await proxy.close();
    upstream.close();
    upstream.closeAllConnections();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a wildcard rule with the resolved loopback address allowed passes; without it the address is refused", async () => {
    const sock = join(dir, "a.sock");
    proxy.attach("a", { mode: "allowlist", allow: ["*.example.test", `127.0.0.1:${port}`] });
    await proxy.serve("a", sock);
    const ok = await roundTrip(sock, `POST http://deep.api.example.test:${port}/p?q=1 HTTP/1.1\r\nHost: deep.api.example.test:${port}\r\nProxy-Connection: keep-alive\r\nContent-Length: 3\r\n\r\nabc`);
    assert.match(ok.toString(), /\r\n\r\nPOST \/p\?q=1 host=deep\.api\.example\.test:\d+ proxy=- body=abc$/);
    proxy.setPolicy("a", { mode: "allowlist", allow: ["*.example.test"] });
    const refused = await roundTrip(sock, `GET http://api.example.test:${port}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.match(refused.toString(), /^HTTP\/1\.1 403 Forbidden\r\n/);
    assert.match(refused.toString(), /x-agentbox-reason: api\.example\.test resolves to 127\.0\.0\.1, a loopback address/);
    // Cloud metadata behind an allowed name: refused the same way.
    const meta = await roundTrip(sock, "GET http://rebind.example.test/latest HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.match(meta.toString(), /rebind\.example\.test resolves to 169\.254\.169\.254, a link-local address/);
    const log = proxy.log("a");
    assert.deepEqual(log.map((e) => [e.host, e.allowed]), [["deep.api.example.test", true], ["api.example.test", false], ["rebind.example.test", false]]);
    assert.equal(log[0]!.bytesOut, 3);
    await proxy.detach("a");
    assert.deepEqual(proxy.log("a"), []);
  });

  test("CONNECT and SOCKS5 (names and IPv4), deny before allow, and malformed requests", async () => {
    const sock = join(dir, "b.sock");
    proxy.attach("b", { mode: "allowlist", allow: ["127.0.0.1", "api.example.test", "*.example.test"], deny: ["deep.api.example.test"] });
    await proxy.serve("b", sock);
    const tunnel = await roundTrip(sock, `CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\nGET /t HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n`);
    assert.match(tunnel.toString(), /^HTTP\/1\.1 200 Connection Established\r\n\r\nHTTP\/1\.1 200 OK[\s\S]*GET \/t host=t proxy=- body=$/);
    const denied = await roundTrip(sock, `CONNECT deep.api.example.test:${port} HTTP/1.1\r\n\r\n`);
    assert.match(denied.toString(), /^HTTP\/1\.1 403 Forbidden[\s\S]*deep\.api\.example\.test:\d+ matches a deny rule\n$/);
    // SOCKS5: greeting, then CONNECT by name (0x03) with the request right behind it.
    const name = Buffer.from("api.example.test");
    const socksReq = Buffer.concat([
      Buffer.from([5, 1, 0]),
      Buffer.from([5, 1, 0, 3, name.length]), name, Buffer.from([port >> 8, port & 255]),
      Buffer.from("GET /s HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n"),
    ]);
    // api.example.test resolves to loopback, which only an address rule opens: "127.0.0.1" is one.
    const socks = await roundTrip(sock, socksReq);
    assert.deepEqual([...socks.subarray(0, 2)], [5, 0]);
    assert.deepEqual([...socks.subarray(2, 4)], [5, 0]);
    assert.match(socks.subarray(12).toString(), /GET \/s host=s/);
    const socksDenied = await roundTrip(sock, Buffer.concat([Buffer.from([5, 1, 0, 5, 1, 0, 1, 8, 8, 8, 8, 0, 53])]));
    assert.deepEqual([...socksDenied], [5, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
    const noAuth = await roundTrip(sock, Buffer.from([5, 1, 2]));
    assert.deepEqual([...noAuth], [5, 0xff]);
    const relative = await roundTrip(sock, "GET /not-absolute HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.match(relative.toString(), /^HTTP\/1\.1 400 Bad Request[\s\S]*send absolute http:\/\/ URLs/);
    const garbage = await roundTrip(sock, "\x01\x02\x03 not http\r\n\r\n");
    assert.match(garbage.toString(), /^(HTTP\/1\.1 400 Bad Request|)/);
    const badConnect = await roundTrip(sock, "CONNECT nowhere HTTP/1.1\r\n\r\n");
    assert.match(badConnect.toString(), /^HTTP\/1\.1 400 Bad Request/);
    const log = proxy.log("b");
    assert.deepEqual(log.map((e) => `${e.protocol} ${e.host} ${e.allowed}`), [
      "connect 127.0.0.1 true", "connect deep.api.example.test false", "socks api.example.test true", "socks 8.8.8.8 false",
    ]);
    assert.ok(log[0]!.bytesOut > 30 && log[0]!.bytesIn > 30);
    await proxy.detach("b");
  });

  test("policy matching: special addresses, ports, any", () => {
    assert.equal(specialAddress("8.8.8.8"), undefined);
    assert.equal(specialAddress("10.1.2.3"), "a private or reserved address");
    assert.equal(specialAddress("::1"), "a loopback address");
    assert.equal(specialAddress("fe80::1"), "a link-local address");
    assert.equal(specialAddress("::ffff:127.0.0.1"), "a loopback address");
    assert.equal(specialAddress("::ffff:8.8.8.8"), undefined);
    assert.equal(specialAddress("2001:4860:4860::8888"), undefined);
    const p = new EgressPolicy({ mode: "allowlist", allow: ["*:443", "10.0.0.0/8:5432"] });
    assert.deepEqual(p.checkHost("anything.example", 443), { allowed: true });
    assert.equal(p.checkHost("anything.example", 80).allowed, false);
    assert.equal(p.checkHost("8.8.8.8", 443).allowed, true);
    assert.equal(p.checkHost("10.0.0.5", 443).allowed, false, "* never covers private addresses");
    assert.equal(p.checkHost("10.0.0.5", 5432).allowed, true);
    assert.deepEqual(p.pickAddress("db", ["10.9.9.9"], 5432), { address: "10.9.9.9" });
    assert.deepEqual(p.pickAddress("x", ["127.0.0.1", "93.184.216.34"], 443), { address: "93.184.216.34" });
    assert.equal(new EgressPolicy({ mode: "none" }).checkHost("a.example", 80).allowed, false);
  });
});
