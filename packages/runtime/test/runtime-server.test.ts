import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { FrameDecoder, RUNTIME_PROTOCOL_VERSION, encodeFrame } from "@agentbox/protocol";
import { RuntimeClient } from "../src/runtime-client.js";
import { RuntimeServer } from "../src/runtime-server.js";
import { SandboxManager } from "../src/sandbox-manager.js";

/** Raw socket conversation, to send what a well-behaved client never would. */
async function rawExchange(socketPath: string, payloads: Buffer[]): Promise<{ messages: unknown[]; closed: boolean }> {
  const socket = connect(socketPath);
  const decoder = new FrameDecoder();
  const messages: unknown[] = [];
  let closed = false;
  socket.on("data", (d) => messages.push(...decoder.push(d)));
  await new Promise((r) => socket.once("connect", r));
  for (const p of payloads) socket.write(p);
  await new Promise<void>((resolve) => {
    socket.once("close", () => {
      closed = true;
      resolve();
    });
    setTimeout(resolve, 300);
  });
  socket.destroy();
  return { messages, closed };
}

describe("runtime protocol", () => {
  let dir: string;
  let socketPath: string;
  let server: RuntimeServer;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "agentbox-rt-"));
    socketPath = join(dir, "rt.sock");
    server = new RuntimeServer({ socketPath, manager: new SandboxManager(dir), onShutdown: () => undefined });
    await server.listen();
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("handshake and a typed request", async () => {
    const client = await RuntimeClient.connect(socketPath);
    assert.equal(client.runtimePid, process.pid);
    const info = await client.request("runtime.info", {});
    assert.equal(info.version, "0.1.0");
    assert.equal(info.sandboxes, 0);
    client.close();
  });

  test("a client of another protocol version is refused with VERSION_MISMATCH", async () => {
    await assert.rejects(RuntimeClient.connect(socketPath, RUNTIME_PROTOCOL_VERSION + 1), (err: any) => {
      assert.equal(err.code, "VERSION_MISMATCH");
      assert.equal(err.message, `runtime speaks protocol version ${RUNTIME_PROTOCOL_VERSION}, peer sent ${RUNTIME_PROTOCOL_VERSION + 1}`);
      return true;
    });
  });

  test("requests before hello are refused and the connection closed", async () => {
    const r = await rawExchange(socketPath, [encodeFrame({ type: "request", id: 1, method: "runtime.info", params: {} })]);
    assert.equal(r.closed, true);
    assert.equal((r.messages[0] as any).error.code, "VERSION_MISMATCH");
  });

  test("unknown method and invalid params are errors; the connection lives on", async () => {
    const client = await RuntimeClient.connect(socketPath);
    await assert.rejects(client.request("no.such" as any, {} as any), (e: any) => e.code === "INVALID_REQUEST");
    await assert.rejects(client.request("sandbox.delete", { id: "../../etc" }), (e: any) => e.code === "INVALID_REQUEST");
    await assert.rejects(client.request("sandbox.exec", { sandboxId: "nope", env: {}, defaultCwd: "/", request: { command: "true" } }), (e: any) => e.code === "SANDBOX_NOT_FOUND");
    assert.equal((await client.request("runtime.info", {})).sandboxes, 0);
    client.close();
  });

  test("a broken or oversize frame closes only that connection", async () => {
    const good = await RuntimeClient.connect(socketPath);
    const hello = encodeFrame({ type: "hello", protocolVersion: RUNTIME_PROTOCOL_VERSION });
    const notJson = Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from("{{{")]);
    const oversize = Buffer.from([0xff, 0xff, 0xff, 0xff]);
    for (const bad of [notJson, oversize]) {
      const r = await rawExchange(socketPath, [hello, bad]);
      assert.equal(r.closed, true);
    }
    assert.equal((await good.request("runtime.info", {})).version, "0.1.0");
    good.close();
  });
});
