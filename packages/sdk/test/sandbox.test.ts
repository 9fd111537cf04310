import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Agentbox, isAgentboxError } from "../src/index.js";
import { startFakeServer, sandboxInfo, execResult, type RecordedRequest, type Reply } from "./fake-server.js";

/** A fake that creates `sb-1`, deletes it once, then says SANDBOX_NOT_FOUND. */
function lifecycle() {
  let deleted = false;
  return (req: RecordedRequest): Reply => {
    if (req.method === "POST" && req.url.pathname === "/v1/sandboxes") return { status: 201, body: sandboxInfo("sb-1") };
    if (req.method === "DELETE" && req.url.pathname === "/v1/sandboxes/sb-1") {
      if (deleted) return { status: 404, body: { error: { code: "SANDBOX_NOT_FOUND", message: "gone" } } };
      deleted = true;
      return { status: 204 };
    }
    return { status: 404, body: { error: { code: "NOT_FOUND", message: "no route" } } };
  };
}

describe("Sandbox", () => {
  it("`await using` deletes the sandbox at the end of the scope", async () => {
    await using server = await startFakeServer(lifecycle());
    const client = new Agentbox({ url: server.url, apiKey: "k" });
    {
      await using sb = await client.sandboxes.create();
      assert.equal(sb.id, "sb-1");
      assert.equal(server.requests.length, 1);
    }
    assert.deepEqual(
      server.requests.map((r) => `${r.method} ${r.url.pathname}`),
      ["POST /v1/sandboxes", "DELETE /v1/sandboxes/sb-1"],
    );
    assert.equal(server.requests[1]!.headers.authorization, "Bearer k");
  });

  it("dispose does not delete twice after an explicit delete", async () => {
    await using server = await startFakeServer(lifecycle());
    const client = new Agentbox({ url: server.url, apiKey: "k" });
    {
      await using sb = await client.sandboxes.create();
      await sb.delete();
      assert.equal(sb.status, "deleted");
    }
    assert.equal(server.requests.filter((r) => r.method === "DELETE").length, 1);
  });

  it("delete throws SANDBOX_NOT_FOUND but dispose swallows it", async () => {
    await using server = await startFakeServer(lifecycle());
    const client = new Agentbox({ url: server.url, apiKey: "k" });
    const first = await client.sandboxes.create();
    const second = await client.sandboxes.create(); // another handle on the same sandbox
    await first.delete();
    await assert.rejects(second.delete(), (e: unknown) => isAgentboxError(e, "SANDBOX_NOT_FOUND") && e.status === 404);
    const third = await client.sandboxes.create();
    await third[Symbol.asyncDispose](); // already gone: no error
  });

  it("dispose propagates other errors", async () => {
    await using server = await startFakeServer((req) =>
      req.method === "POST"
        ? { status: 201, body: sandboxInfo("sb-1") }
        : { status: 503, body: { error: { code: "RUNTIME_UNAVAILABLE", message: "runtime down" } } },
    );
    const client = new Agentbox({ url: server.url, apiKey: "k" });
    const sb = await client.sandboxes.create();
    await assert.rejects(sb[Symbol.asyncDispose](), (e: unknown) => isAgentboxError(e, "RUNTIME_UNAVAILABLE"));
  });

  it("exec sends `command` for a string and `argv` for an array, with options", async () => {
    await using server = await startFakeServer((req) =>
      req.url.pathname.endsWith("/exec") ? { body: execResult } : { status: 201, body: sandboxInfo("sb-1") },
    );
    const client = new Agentbox({ url: server.url, apiKey: "k" });
    const sb = await client.sandboxes.create();
    assert.deepEqual(await sb.exec("echo hi | cat"), execResult);
    await sb.exec(["ls", "-la", "/tmp dir"], { cwd: "/tmp", env: { A: "1" }, stdin: "in", timeoutMs: 5000, maxOutputBytes: 100 });
    const [, first, second] = server.requests;
    assert.equal(first!.method, "POST");
    assert.equal(first!.url.pathname, "/v1/sandboxes/sb-1/exec");
    assert.deepEqual(first!.body, { command: "echo hi | cat" });
    assert.deepEqual(second!.body, {
      argv: ["ls", "-la", "/tmp dir"],
      cwd: "/tmp",
      env: { A: "1" },
      stdin: "in",
      timeoutMs: 5000,
      maxOutputBytes: 100,
    });
  });

  it("exec is not cut short by the client's request timeout", async () => {
    await using server = await startFakeServer((req) =>
      req.url.pathname.endsWith("/exec") ? { body: execResult, delayMs: 300 } : { status: 201, body: sandboxInfo("sb-1") },
    );
    const client = new Agentbox({ url: server.url, apiKey: "k", timeoutMs: 100 });
    const sb = await client.sandboxes.create();
    assert.deepEqual(await sb.exec("sleep 0.3"), execResult);
    assert.deepEqual(await sb.exec("sleep 0.3", { timeoutMs: 10 }), execResult); // grace beyond the exec's own timeout
  });

  it("setTimeout posts timeoutSeconds and updates info; refresh re-reads it", async () => {
    let expiresAt = "2025-01-01T01:00:00.000Z";
    await using server = await startFakeServer((req) => {
      if (req.url.pathname.endsWith("/timeout")) expiresAt = "2025-01-01T05:00:00.000Z";
      if (req.method === "GET") return { body: sandboxInfo("sb-1", { expiresAt, status: "paused" }) };
      return { status: req.url.pathname.endsWith("/timeout") ? 200 : 201, body: sandboxInfo("sb-1", { expiresAt }) };
    });
    const client = new Agentbox({ url: server.url, apiKey: "k" });
    const sb = await client.sandboxes.create();
    const updated = await sb.setTimeout(600);
    assert.equal(updated.expiresAt, "2025-01-01T05:00:00.000Z");
    assert.equal(sb.info.expiresAt, "2025-01-01T05:00:00.000Z");
    const req = server.requests[1]!;
    assert.equal(`${req.method} ${req.url.pathname}`, "POST /v1/sandboxes/sb-1/timeout");
    assert.deepEqual(req.body, { timeoutSeconds: 600 });
    await sb.refresh();
    assert.equal(sb.status, "paused");
  });
});
