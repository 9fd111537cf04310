import { describe, it, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { Agentbox, DEFAULT_URL, isAgentboxError } from "../src/index.js";
import { startFakeServer, sandboxInfo } from "./fake-server.js";

describe("Agentbox client", () => {
  const saved = { url: process.env["AGENTBOX_URL"], key: process.env["AGENTBOX_API_KEY"] };
  beforeEach(() => {
    delete process.env["AGENTBOX_URL"];
    delete process.env["AGENTBOX_API_KEY"];
  });
  afterEach(() => {
    for (const [name, value] of [["AGENTBOX_URL", saved.url], ["AGENTBOX_API_KEY", saved.key]] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });

  it("throws UNAUTHORIZED telling to set AGENTBOX_API_KEY when there is no key", () => {
    assert.throws(() => new Agentbox(), (e: unknown) => {
      assert.ok(isAgentboxError(e, "UNAUTHORIZED"));
      assert.match(e.message, /AGENTBOX_API_KEY/);
      return true;
    });
  });

  it("defaults to http://127.0.0.1:7878 and reads AGENTBOX_URL / AGENTBOX_API_KEY", async () => {
    process.env["AGENTBOX_API_KEY"] = "from-env";
    assert.equal(new Agentbox().url, DEFAULT_URL);
    assert.equal(DEFAULT_URL, "http://127.0.0.1:7878");
    await using server = await startFakeServer(() => ({ body: { status: "ok", version: "x" } }));
    process.env["AGENTBOX_URL"] = server.url;
    const client = new Agentbox();
    assert.equal(client.url, server.url);
    await client.health();
    assert.equal(server.requests[0]!.headers.authorization, "Bearer from-env");
    // Explicit options win over the environment.
    await new Agentbox({ apiKey: "explicit" }).health();
    assert.equal(server.requests[1]!.headers.authorization, "Bearer explicit");
  });

  it("builds the list query with status, template and metadata.KEY=VALUE", async () => {
    await using server = await startFakeServer(() => ({ body: { sandboxes: [sandboxInfo("a"), sandboxInfo("b")] } }));
    const client = new Agentbox({ url: server.url, apiKey: "k" });
    const list = await client.sandboxes.list({
      status: "ready",
      template: "py",
      metadata: { owner: "alice", "team name": "a&b=c" },
    });
    assert.deepEqual(
      list.map((s) => s.id),
      ["a", "b"],
    );
    const url = server.requests[0]!.url;
    assert.equal(url.pathname, "/v1/sandboxes");
    assert.deepEqual([...url.searchParams.entries()], [
      ["status", "ready"],
      ["template", "py"],
      ["metadata.owner", "alice"],
      ["metadata.team name", "a&b=c"],
    ]);
    assert.match(url.search, /metadata\.owner=alice/);
  });

  it("sends no query string for an unfiltered list", async () => {
    await using server = await startFakeServer(() => ({ body: { sandboxes: [] } }));
    const client = new Agentbox({ url: server.url, apiKey: "k" });
    assert.deepEqual(await client.sandboxes.list(), []);
    assert.equal(server.requests[0]!.url.search, "");
  });

  it("gets a sandbox by id, escaping it in the path", async () => {
    await using server = await startFakeServer(() => ({ body: sandboxInfo("sb-1", { metadata: { a: "b" } }) }));
    const client = new Agentbox({ url: server.url, apiKey: "k" });
    const sb = await client.sandboxes.get("sb-1");
    assert.equal(sb.id, "sb-1");
    assert.equal(sb.status, "ready");
    assert.deepEqual(sb.info.metadata, { a: "b" });
    assert.deepEqual(JSON.parse(JSON.stringify(sb)), sandboxInfo("sb-1", { metadata: { a: "b" } }));
    await client.sandboxes.get("../x");
    assert.equal(server.requests[1]!.url.pathname, "/v1/sandboxes/..%2Fx");
  });
});
