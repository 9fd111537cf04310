/**
 * The SDK's `sandbox.network` and `sandbox.ports` against a real server and real sandboxes:
 * rule changes take effect on the next connection, the egress log records them, and an
 * exposed port reaches a server started inside the sandbox. Traffic goes only to servers
 * this test starts on the host's loopback or inside the sandbox.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Agentbox, AgentboxApiError, isAgentboxError, type EgressLogEntry, type ExposedPort } from "@agentbox/sdk";
import { startHarness, type Harness } from "./harness.js";
import { loopbackServer, type LoopbackServer } from "./loopback-server.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A loopback HTTP server on the host answering `<name> <method> <path>`. */
function hostServer(name: string): Promise<LoopbackServer> {
  return loopbackServer((req, res) => {
    req.resume();
    req.on("end", () => res.end(`${name} ${req.method} ${req.url}`));
  });
}

describe("SDK network and ports", () => {
  let h: Harness;
  let client: Agentbox;
  let a: LoopbackServer;
  let b: LoopbackServer;

  before(async () => {
    h = await startHarness();
    client = new Agentbox({ url: h.server.url, apiKey: h.server.apiKey });
    a = await hostServer("A");
    b = await hostServer("B");
  });
  after(async () => {
    a.server.close();
    b.server.close();
    await h.close();
  });

  test("network.update changes the rules for the next connection; network.log records each one", async () => {
    await using sb = await client.sandboxes.create({ network: { mode: "allowlist", allow: [`127.0.0.1:${a.port}`] } });
    assert.equal(sb.status, "ready", sb.info.statusMessage);
    assert.deepEqual(sb.info.network, { mode: "allowlist", allow: [`127.0.0.1:${a.port}`] });
    assert.deepEqual(sb.network.policy, { mode: "allowlist", allow: [`127.0.0.1:${a.port}`] });
    const curl = async (port: number, path: string, data?: string) =>
      (await sb.exec(`curl -s --noproxy '' ${data !== undefined ? `-d '${data}' ` : ""}-w ' %{http_code}' http://127.0.0.1:${port}${path}`, { timeoutMs: 20_000 })).stdout;

    assert.equal(await curl(a.port, "/one"), "A GET /one 200");
    assert.equal(await curl(b.port, "/refused"), `127.0.0.1:${b.port} is not in the sandbox's allowlist\n 403`);

    // Allow B too (the mode is the sandbox's own when left out): the next request passes.
    const updated = await sb.network.update({ allow: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`] });
    assert.deepEqual(updated.network, { mode: "allowlist", allow: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`] });
    assert.deepEqual(sb.info.network, updated.network, "the handle keeps the updated state");
    assert.equal(await curl(b.port, "/after", "hello"), "B POST /after 200");

    // A deny rule wins over an allow rule that matches too.
    await sb.network.update({ mode: "allowlist", allow: ["127.0.0.0/8"], deny: [`127.0.0.1:${b.port}`] });
    assert.deepEqual(sb.info.network, { mode: "allowlist", allow: ["127.0.0.0/8"], deny: [`127.0.0.1:${b.port}`] });
    assert.equal(await curl(b.port, "/denied"), `127.0.0.1:${b.port} matches a deny rule\n 403`);
    assert.equal(await curl(a.port, "/two"), "A GET /two 200");
    assert.deepEqual((await sb.refresh()).network, { mode: "allowlist", allow: ["127.0.0.0/8"], deny: [`127.0.0.1:${b.port}`] });

    // The mode of a running sandbox cannot change; a bad rule is refused naming it.
    await assert.rejects(sb.network.update({ mode: "open" }), (e) => isAgentboxError(e, "CONFLICT") && e.status === 409);
    await assert.rejects(sb.network.update({ allow: ["ok.example", "bad host"] }), (e) => isAgentboxError(e, "INVALID_REQUEST") && /network\.allow\.1/.test(e.message));
    assert.deepEqual(sb.info.network.deny, [`127.0.0.1:${b.port}`], "a refused update leaves the handle as it was");

    const entries = await sb.network.log();
    const withoutTime = entries.map(({ time, ...rest }) => {
      assert.ok(Math.abs(Date.now() - Date.parse(time)) < 120_000, time);
      return rest;
    });
    const allowed = (port: number, bytesOut: number, bytesIn: number): Omit<EgressLogEntry, "time"> => ({
      host: "127.0.0.1",
      port,
      allowed: true,
      address: "127.0.0.1",
      protocol: "http",
      bytesOut,
      bytesIn,
    });
    const refused = (port: number, reason: string): Omit<EgressLogEntry, "time"> => ({ host: "127.0.0.1", port, allowed: false, reason, protocol: "http", bytesOut: 0, bytesIn: 0 });
    assert.deepEqual(withoutTime, [
      allowed(a.port, 0, "A GET /one".length),
      refused(b.port, `127.0.0.1:${b.port} is not in the sandbox's allowlist`),
      allowed(b.port, "hello".length, "B POST /after".length),
      refused(b.port, `127.0.0.1:${b.port} matches a deny rule`),
      allowed(a.port, 0, "A GET /two".length),
    ]);
    // A limit keeps the most recent entries (still oldest first).
    const limited = await sb.network.log({ limit: 2 });
    assert.deepEqual(limited, entries.slice(-2));
  });

  test("ports: expose reaches a server in the sandbox, list/get/close, typed errors", async () => {
    await using sb = await client.sandboxes.create();
    await sb.files.write("/workspace/hello.txt", "hello from the sandbox\n");
    const server = await sb.startProcess(["python3", "-m", "http.server", "8000", "--bind", "127.0.0.1"], { cwd: "/workspace", id: "web" });

    const exposed = await sb.ports.expose(8000);
    assert.equal(exposed.port, 8000);
    const url = new URL(exposed.url);
    assert.equal(url.origin, h.server.url);
    assert.equal(url.pathname, `/v1/sandboxes/${sb.id}/ports/8000/`);
    assert.match(url.searchParams.get("token") ?? "", /^[A-Za-z0-9_-]{32}$/);
    assert.ok(Math.abs(Date.now() - Date.parse(exposed.createdAt)) < 60_000);

    // The url alone reaches the server once it listens (502 PORT_UNREACHABLE until then).
    const file = exposed.url.replace("/?", "/hello.txt?");
    let res: Response | undefined;
    for (let i = 0; i < 200; i++) {
      res = await fetch(file);
      if (res.status === 200) break;
      assert.equal(res.status, 502);
      await res.body?.cancel();
      await sleep(50);
    }
    assert.equal(res?.status, 200);
    assert.equal(await res!.text(), "hello from the sandbox\n");

    // Exposing again gives the same url; list and get agree.
    assert.deepEqual(await sb.ports.expose(8000), exposed);
    assert.deepEqual(await sb.ports.list(), [exposed]);
    assert.deepEqual(await sb.ports.get(8000), exposed);

    // ports.fetch goes with the API key; the sandbox's own answers come back whatever their status.
    const viaSdk = await sb.ports.fetch(8000, "hello.txt?x=1");
    assert.equal(viaSdk.status, 200);
    assert.equal(await viaSdk.text(), "hello from the sandbox\n");
    const missing = await sb.ports.fetch(8000, "/missing.txt");
    assert.equal(missing.status, 404);
    assert.match(await missing.text(), /File not found/);

    // A port where nothing listens: the url answers 502, ports.fetch throws PORT_UNREACHABLE.
    const empty: ExposedPort = await sb.ports.expose(9000);
    const direct = await fetch(empty.url);
    assert.equal(direct.status, 502);
    assert.equal(((await direct.json()) as { error: { code: string } }).error.code, "PORT_UNREACHABLE");
    await assert.rejects(sb.ports.fetch(9000, "/"), (e) => {
      assert.ok(e instanceof AgentboxApiError);
      assert.equal(e.code, "PORT_UNREACHABLE");
      assert.equal(e.status, 502);
      return true;
    });
    assert.deepEqual((await sb.ports.list()).map((p) => p.port), [8000, 9000]);

    // Closing revokes the url; the port is then unknown.
    assert.deepEqual(await sb.ports.close(8000), { port: 8000, closed: true });
    assert.equal((await fetch(file)).status, 404);
    await assert.rejects(sb.ports.get(8000), (e) => isAgentboxError(e, "NOT_FOUND") && e.status === 404);
    await assert.rejects(sb.ports.fetch(8000, "/hello.txt"), (e) => isAgentboxError(e, "NOT_FOUND"));
    assert.deepEqual(await sb.ports.close(8000), { port: 8000, closed: false });
    assert.deepEqual((await sb.ports.list()).map((p) => p.port), [9000]);
    await assert.rejects(sb.ports.expose(70000), (e) => isAgentboxError(e, "INVALID_REQUEST"));
    await server.kill();
  });
});
