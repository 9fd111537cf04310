import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Agentbox, AgentboxApiError, isAgentboxError } from "../src/index.js";
import { startFakeServer, unusedPort, sandboxInfo } from "./fake-server.js";

describe("HTTP transport", () => {
  it("sends the bearer key, JSON body and headers", async () => {
    await using server = await startFakeServer(() => ({ status: 201, body: sandboxInfo("sb-new") }));
    const client = new Agentbox({ url: server.url, apiKey: "secret-key" });
    const sb = await client.sandboxes.create({ template: "py", timeoutSeconds: 60, metadata: { owner: "me" } });
    assert.equal(sb.id, "sb-new");
    const req = server.requests[0]!;
    assert.equal(req.method, "POST");
    assert.equal(req.url.pathname, "/v1/sandboxes");
    assert.equal(req.headers.authorization, "Bearer secret-key");
    assert.equal(req.headers["content-type"], "application/json");
    assert.deepEqual(req.body, { template: "py", timeoutSeconds: 60, metadata: { owner: "me" } });
  });

  it("maps the error body to AgentboxApiError with code, status and details", async () => {
    await using server = await startFakeServer(() => ({
      status: 404,
      body: { error: { code: "SANDBOX_NOT_FOUND", message: "no sandbox sb-x", details: { id: "sb-x" } } },
    }));
    const client = new Agentbox({ url: server.url, apiKey: "k" });
    const error = await client.sandboxes.get("sb-x").then(
      () => assert.fail("expected an error"),
      (e: unknown) => e,
    );
    assert.ok(error instanceof AgentboxApiError);
    assert.equal(error.code, "SANDBOX_NOT_FOUND");
    assert.equal(error.status, 404);
    assert.equal(error.message, "no sandbox sb-x");
    assert.deepEqual(error.details, { id: "sb-x" });
    assert.ok(isAgentboxError(error));
    assert.ok(isAgentboxError(error, "SANDBOX_NOT_FOUND"));
    assert.ok(!isAgentboxError(error, "NOT_FOUND"));
    assert.ok(!isAgentboxError(new Error("x")));
    assert.deepEqual(error.toJSON(), { error: { code: "SANDBOX_NOT_FOUND", message: "no sandbox sb-x", details: { id: "sb-x" } } });
  });

  it("gives a typed error for error responses that are not JSON", async () => {
    const replies = [
      { status: 502, body: "<html><body>Bad Gateway</body></html>", headers: { "content-type": "text/html" } },
      { status: 503, body: "" },
      { status: 401, body: "nope" },
      { status: 404, body: "Not Found" },
      { status: 418, body: "teapot" },
    ];
    let i = 0;
    await using server = await startFakeServer(() => replies[i++]!);
    const client = new Agentbox({ url: server.url, apiKey: "k" });
    const expected: Array<[string, number]> = [
      ["INTERNAL", 502],
      ["RUNTIME_UNAVAILABLE", 503],
      ["UNAUTHORIZED", 401],
      ["NOT_FOUND", 404],
      ["INVALID_REQUEST", 418],
    ];
    for (const [code, status] of expected) {
      await assert.rejects(client.sandboxes.get("a"), (e: unknown) => {
        assert.ok(e instanceof AgentboxApiError);
        assert.equal(e.code, code);
        assert.equal(e.status, status);
        assert.match(e.message, new RegExp(`HTTP ${status}`));
        return true;
      });
    }
  });

  it("keeps an unknown server code in serverCode and derives code from the status", async () => {
    await using server = await startFakeServer(() => ({
      status: 409,
      body: { error: { code: "FUTURE_CODE_NOT_IN_REGISTRY", message: "the session ended" } },
    }));
    const client = new Agentbox({ url: server.url, apiKey: "k" });
    await assert.rejects(client.sandboxes.get("a"), (e: unknown) => {
      assert.ok(isAgentboxError(e, "CONFLICT"));
      assert.equal(e.serverCode, "FUTURE_CODE_NOT_IN_REGISTRY");
      assert.equal(e.status, 409);
      return true;
    });
  });

  it("maps a refused connection to CONNECTION_FAILED", async () => {
    const port = await unusedPort();
    const client = new Agentbox({ url: `http://127.0.0.1:${port}`, apiKey: "k" });
    await assert.rejects(client.health(), (e: unknown) => {
      assert.ok(isAgentboxError(e, "CONNECTION_FAILED"));
      assert.equal(e.status, 0);
      assert.match(e.message, /ECONNREFUSED/);
      assert.match(e.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
      return true;
    });
  });

  it("applies the client timeout to ordinary requests", async () => {
    await using server = await startFakeServer(() => ({ body: sandboxInfo(), delayMs: 500 }));
    const client = new Agentbox({ url: server.url, apiKey: "k", timeoutMs: 50 });
    await assert.rejects(client.sandboxes.get("sb-1"), (e: unknown) => isAgentboxError(e, "TIMEOUT") && e.status === 0);
  });

  it("keeps a path prefix of the base URL", async () => {
    await using server = await startFakeServer(() => ({ body: { status: "ok", version: "0.1.0" } }));
    const client = new Agentbox({ url: `${server.url}/agentbox/`, apiKey: "k" });
    assert.deepEqual(await client.health(), { status: "ok", version: "0.1.0" });
    assert.equal(server.requests[0]!.url.pathname, "/agentbox/healthz");
  });

  it("refuses an invalid URL with a typed error", () => {
    assert.throws(() => new Agentbox({ url: "not a url", apiKey: "k" }), (e: unknown) => isAgentboxError(e, "INVALID_REQUEST"));
    assert.throws(() => new Agentbox({ url: "ftp://x", apiKey: "k" }), (e: unknown) => isAgentboxError(e, "INVALID_REQUEST"));
  });

  it("honours an AbortSignal", async () => {
    await using server = await startFakeServer(() => ({ body: sandboxInfo(), delayMs: 1000 }));
    const client = new Agentbox({ url: server.url, apiKey: "k" });
    const sb = new AbortController();
    const pending = client.health({ signal: sb.signal });
    setTimeout(() => sb.abort(), 20);
    await assert.rejects(pending, (e: unknown) => e instanceof Error && e.name === "AbortError");
  });
});
