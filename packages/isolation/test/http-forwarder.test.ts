/**
 * Plain-HTTP forwarding through the egress proxy, message framing case by case: each test
 * sends raw bytes to a sandbox's proxy socket and checks the exact bytes that come back and
 * what the upstream server received. Upstreams are real servers on loopback.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { EgressProxy, parseAbsoluteUrl } from "../src/index.js";

/** A raw TCP server: `answer` gets each connection and what it has received so far. */
async function rawServer(answer: (socket: Socket, received: () => string) => void): Promise<{ server: Server; port: number; seen: string[] }> {
  const seen: string[] = [];
  const server = createServer((socket) => {
    let got = "";
    const index = seen.push("") - 1;
    socket.on("data", (d) => {
      got += d.toString("latin1");
      seen[index] = got;
    });
    answer(socket, () => got);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return { server, port: (server.address() as AddressInfo).port, seen };
}

/** Open a client connection to the proxy; `exchange` writes and waits for `until` in what came back. */
function proxyClient(socketPath: string) {
  const s = connect(socketPath);
  let got = Buffer.alloc(0);
  const waiters: Array<() => void> = [];
  s.on("data", (d) => {
    got = Buffer.concat([got, d]);
    waiters.splice(0).forEach((w) => w());
  });
  s.on("close", () => waiters.splice(0).forEach((w) => w()));
  return {
    socket: s,
    write: (data: string | Buffer) => s.write(data),
    async until(pred: (text: string) => boolean, ms = 5000): Promise<string> {
      const deadline = Date.now() + ms;
      while (!pred(got.toString("latin1"))) {
        if (Date.now() > deadline || s.destroyed) throw new Error(`timed out; got ${JSON.stringify(got.toString("latin1").slice(0, 500))}`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 50);
        });
      }
      return got.toString("latin1");
    },
    bytes: () => got,
    closed: () => new Promise<void>((r) => (s.destroyed ? r() : s.once("close", () => r()))),
  };
}

describe("plain-HTTP forwarding", () => {
  let dir: string;
  const proxy = new EgressProxy();
  let sock: string;
  const servers: Server[] = [];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "agentbox-fwd-"));
    sock = join(dir, "p.sock");
    proxy.attach("s", { mode: "allowlist", allow: ["127.0.0.1"] });
    await proxy.serve("s", sock);
  });
  after(async () => {
    await proxy.close();
    for (const s of servers) s.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("absolute URLs parse to host, port and origin-form path", () => {
    assert.deepEqual(parseAbsoluteUrl("http://Example.com/a?b=1"), { host: "example.com", port: 80, path: "/a?b=1" });
    assert.deepEqual(parseAbsoluteUrl("http://127.0.0.1:8080"), { host: "127.0.0.1", port: 8080, path: "/" });
    assert.deepEqual(parseAbsoluteUrl("http://[::1]:81?q"), { host: "[::1]", port: 81, path: "/?q" });
    assert.equal(parseAbsoluteUrl("https://example.com/"), undefined);
    assert.equal(parseAbsoluteUrl("http://user@example.com/"), undefined);
    assert.equal(parseAbsoluteUrl("http://example.com:0/"), undefined);
    assert.equal(parseAbsoluteUrl("/relative"), undefined);
  });

  test("the request is rewritten to origin-form without hop-by-hop headers; keep-alive requests to two hosts share one client connection", async () => {
    const one = await rawServer((s, got) => s.on("data", () => got().endsWith("\r\n\r\n") && s.write("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")));
    const two = await rawServer((s, got) => s.on("data", () => got().endsWith("\r\n\r\n") && s.write("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")));
    servers.push(one.server, two.server);
    const c = proxyClient(sock);
    c.write(`GET http://127.0.0.1:${one.port}/x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:${one.port}\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic abc\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-Keep: 2\r\n\r\n`);
    await c.until((t) => t.endsWith("one"));
    c.write(`GET http://127.0.0.1:${two.port}/z HTTP/1.1\r\nHost: 127.0.0.1:${two.port}\r\n\r\n`);
    const text = await c.until((t) => t.endsWith("two"));
    assert.equal(text, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\noneHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo");
    assert.equal(one.seen[0], `GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:${one.port}\r\nX-Keep: 2\r\nConnection: keep-alive\r\n\r\n`);
    assert.equal(two.seen[0], `GET /z HTTP/1.1\r\nHost: 127.0.0.1:${two.port}\r\nConnection: keep-alive\r\n\r\n`);
    c.socket.destroy();
  });

  test("requests that repeat the previous header lines are treated alike, and a changed line is read afresh", async () => {
    const up = await rawServer((s, got) => {
      let answered = 0;
      s.on("data", () => {
        const done = got().split("\r\n\r\n").length - 1;
        for (; answered < done; answered++) s.write(`HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n${answered}`);
      });
    });
    servers.push(up.server);
    const c = proxyClient(sock);
    const lines = `Host: 127.0.0.1:${up.port}\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n`;
    c.write(`GET http://127.0.0.1:${up.port}/a HTTP/1.1\r\n${lines}`);
    await c.until((t) => t.endsWith("0"));
    // The same lines under another request line: the new method and path, the same rewrite.
    c.write(`DELETE http://127.0.0.1:${up.port}/b HTTP/1.1\r\n${lines}`);
    await c.until((t) => t.endsWith("1"));
    // One line changed: now the client asks to close, and the proxy must hear it.
    c.write(`GET http://127.0.0.1:${up.port}/c HTTP/1.1\r\nHost: 127.0.0.1:${up.port}\r\nConnection: close\r\n\r\n`);
    await c.closed();
    assert.equal(c.bytes().toString("latin1"), "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n0HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2");
    assert.equal(
      up.seen[0],
      `GET /a HTTP/1.1\r\nHost: 127.0.0.1:${up.port}\r\nConnection: keep-alive\r\n\r\n` +
        `DELETE /b HTTP/1.1\r\nHost: 127.0.0.1:${up.port}\r\nConnection: keep-alive\r\n\r\n` +
        `GET /c HTTP/1.1\r\nHost: 127.0.0.1:${up.port}\r\nConnection: keep-alive\r\n\r\n`,
    );
  });

  test("header bytes outside ASCII reach the server unchanged", async () => {
    const up = await rawServer((s, got) => s.on("data", () => got().endsWith("\r\n\r\n") && s.end("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")));
    servers.push(up.server);
    const c = proxyClient(sock);
    c.write(Buffer.concat([Buffer.from(`GET http://127.0.0.1:${up.port}/ HTTP/1.1\r\nHost: x\r\nX-Name: caf`), Buffer.from([0xe9, 0xff]), Buffer.from("\r\n\r\n")]));
    await c.until((t) => t.endsWith("\r\n\r\n"));
    assert.deepEqual(Buffer.from(up.seen[0]!, "latin1"), Buffer.concat([Buffer.from("GET / HTTP/1.1\r\nHost: x\r\nX-Name: caf"), Buffer.from([0xe9, 0xff]), Buffer.from("\r\nConnection: keep-alive\r\n\r\n")]));
    c.socket.destroy();
  });

  test("chunked request and response bodies, HEAD, 204 and 304 are framed right", async () => {
    const up = await rawServer((s, got) => {
      let answered = 0;
      s.on("data", () => {
        const reqs = got().split(/(?=(?:POST|HEAD|GET) \/)/);
        for (; answered < reqs.length; answered++) {
          const r = reqs[answered]!;
          if (r.startsWith("POST") && !r.endsWith("0\r\n\r\n")) return;
          if (!r.startsWith("POST") && !r.endsWith("\r\n\r\n")) return;
          if (r.startsWith("POST")) s.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n");
          else if (r.startsWith("HEAD")) s.write("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
          else if (r.startsWith("GET /204")) s.write("HTTP/1.1 204 No Content\r\n\r\n");
          else s.write("HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n");
        }
      });
    });
    servers.push(up.server);
    const c = proxyClient(sock);
    const base = `http://127.0.0.1:${up.port}`;
    c.write(`POST ${base}/p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`);
    await c.until((t) => t.endsWith("X-Trailer: t\r\n\r\n"));
    c.write(`HEAD ${base}/h HTTP/1.1\r\nHost: h\r\n\r\n`);
    await c.until((t) => t.endsWith("Content-Length: 1000\r\n\r\n"));
    c.write(`GET ${base}/204 HTTP/1.1\r\nHost: h\r\n\r\nGET ${base}/304 HTTP/1.1\r\nHost: h\r\n\r\n`);
    const text = await c.until((t) => t.endsWith("Content-Length: 50\r\n\r\n"));
    assert.equal(
      text,
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n" +
        "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" +
        "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
    );
    assert.equal(up.seen.length, 1, "one upstream connection for all four");
    assert.match(up.seen[0]!, /^POST \/p HTTP\/1\.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n3\r\nabc\r\n0\r\n\r\nHEAD \/h/);
    const log = proxy.log("s").slice(-4);
    assert.deepEqual(log.map((e) => [e.bytesOut, e.bytesIn]), [[3, 5], [0, 0], [0, 0], [0, 0]]);
    c.socket.destroy();
  });

  test("Expect: 100-continue: the interim response comes through, then the body goes up", async () => {
    const up = await rawServer((s, got) => {
      let state = 0;
      s.on("data", () => {
        if (state === 0 && got().includes("\r\n\r\n")) {
          state = 1;
          s.write("HTTP/1.1 100 Continue\r\n\r\n");
        }
        if (state === 1 && got().endsWith("\r\n\r\nbody!")) {
          state = 2;
          s.write("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
        }
      });
    });
    servers.push(up.server);
    const c = proxyClient(sock);
    c.write(`PUT http://127.0.0.1:${up.port}/u HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`);
    await c.until((t) => t.includes("100 Continue\r\n\r\n"));
    c.write("body!");
    const text = await c.until((t) => t.endsWith("ok"));
    assert.equal(text, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
    c.socket.destroy();
  });

  test("a close-delimited response ends the client connection after it", async () => {
    const up = await rawServer((s, got) => s.on("data", () => got().endsWith("\r\n\r\n") && s.end("HTTP/1.1 200 OK\r\n\r\nuntil the end")));
    servers.push(up.server);
    const c = proxyClient(sock);
    c.write(`GET http://127.0.0.1:${up.port}/ HTTP/1.1\r\nHost: h\r\n\r\n`);
    await c.closed();
    assert.equal(c.bytes().toString(), "HTTP/1.1 200 OK\r\n\r\nuntil the end");
  });

  test("an upgrade (WebSocket-style) through the plain proxy becomes a raw stream both ways", async () => {
    const up = await rawServer((s, got) => {
      let upgraded = false;
      s.on("data", () => {
        if (!upgraded && got().includes("\r\n\r\n")) {
          upgraded = true;
          s.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
          return;
        }
        if (upgraded && got().endsWith("ping")) s.write("pong");
      });
    });
    servers.push(up.server);
    const c = proxyClient(sock);
    c.write(`GET http://127.0.0.1:${up.port}/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`);
    await c.until((t) => t.includes("101 Switching"));
    c.write("ping");
    await c.until((t) => t.endsWith("pong"));
    assert.match(up.seen[0]!, /^GET \/ws HTTP\/1\.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nping$/);
    c.socket.destroy();
  });

  test("bad requests get 400 or 431 and the connection closes; a denied request is 403 and keep-alive goes on", async () => {
    const cases: Array<[string, RegExp]> = [
      ["GET /relative HTTP/1.1\r\nHost: h\r\n\r\n", /^HTTP\/1\.1 400 Bad Request[\s\S]*send absolute http:\/\/ URLs/],
      ["NOT A REQUEST\r\n\r\n", /^HTTP\/1\.1 400 Bad Request[\s\S]*malformed request line/],
      ["GET http://127.0.0.1:1/ HTTP/1.1\r\n folded: x\r\n\r\n", /^HTTP\/1\.1 400 Bad Request/],
      ["POST http://127.0.0.1:1/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", /^HTTP\/1\.1 400 Bad Request/],
      [`GET http://127.0.0.1:1/ HTTP/1.1\r\nX: ${"a".repeat(70_000)}\r\n\r\n`, /^HTTP\/1\.1 431 /],
    ];
    for (const [request, expected] of cases) {
      const c = proxyClient(sock);
      c.write(request);
      await c.closed();
      assert.match(c.bytes().toString(), expected);
    }
    const server = createHttpServer((_q, r) => r.end("fine"));
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as AddressInfo).port;
    const c = proxyClient(sock);
    c.write("GET http://10.1.2.3/ HTTP/1.1\r\nHost: x\r\n\r\n");
    await c.until((t) => t.includes("not in the sandbox's allowlist\n"));
    c.write(`GET http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
    const text = await c.until((t) => t.endsWith("fine"));
    assert.match(text, /^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*HTTP\/1\.1 200 OK\r\n/);
    c.socket.destroy();
  });

  test("a 4 MiB body is byte-exact without the relay (all through this process)", async () => {
    const payload = Buffer.alloc(4 * 1024 * 1024);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 255;
    const server = createHttpServer((_q, r) => {
      r.writeHead(200, { "content-length": payload.length });
      r.end(payload);
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as AddressInfo).port;
    const c = proxyClient(sock);
    c.write(`GET http://127.0.0.1:${port}/big HTTP/1.1\r\nHost: x\r\n\r\n`);
    await c.until(() => c.bytes().length >= payload.length);
    const all = c.bytes();
    const body = all.subarray(all.indexOf("\r\n\r\n") + 4);
    assert.equal(createHash("sha256").update(body).digest("hex"), createHash("sha256").update(payload).digest("hex"));
    c.socket.destroy();
  });
});
