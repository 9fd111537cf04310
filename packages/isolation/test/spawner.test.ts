/**
 * The process spawner's listeners: a TCP listener made inside another network namespace and
 * handed to this process over Node's IPC channel. The namespace is a real one (`unshare -n`),
 * and connections are made from inside it with `nsenter`.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer, type AddressInfo, type Server } from "node:net";
import { after, before, describe, test } from "node:test";
import { Spawner } from "../src/index.js";

/** Connect to 127.0.0.1:port inside pid's network namespace; what the server said, or the error. */
async function fromInside(pid: number, port: number): Promise<string> {
  const script = `import socket\ntry:\n  s = socket.create_connection(("127.0.0.1", ${port}), timeout=3); print(s.recv(100).decode(), end="")\nexcept OSError as e: print(e.strerror, end="")`;
  // Not spawnSync: the server answering is in this process.
  const child = spawn("nsenter", ["-t", String(pid), "-n", "python3", "-c", script], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  await new Promise((r) => child.once("close", r));
  return out;
}

describe("spawner: listeners in a sandbox's network namespace", () => {
  const spawner = new Spawner();
  let holder: ChildProcess;
  const servers: Server[] = [];
  before(() => {
    spawner.start();
    // A namespace like a sandbox's: nothing but its own loopback, which is up.
    holder = spawn("unshare", ["-n", "sh", "-c", "ip link set lo up && exec sleep 300"], { stdio: "ignore" });
  });
  after(() => {
    for (const s of servers) s.close();
    holder.kill("SIGKILL");
    spawner.stop();
  });

  test("the listener is on the namespace's loopback and this process accepts on it", async () => {
    // Its loopback is up once the shell has become sleep.
    for (let i = 0; i < 300 && readFileSync(`/proc/${holder.pid}/comm`, "utf8") !== "sleep\n"; i++) await new Promise((r) => setTimeout(r, 10));
    const handle = await spawner.listenIn(holder.pid!, 3128);
    const server = createServer((s) => s.end(`hello from ${process.pid}`));
    servers.push(server);
    await new Promise<void>((r) => server.listen(handle, () => r()));
    assert.deepEqual(server.address() as AddressInfo, { address: "127.0.0.1", family: "IPv4", port: 3128 });
    assert.equal(await fromInside(holder.pid!, 3128), `hello from ${process.pid}`);
    // The port is taken inside the namespace: a second listener there is refused, with the reason.
    await assert.rejects(spawner.listenIn(holder.pid!, 3128), /listen in the sandbox: Address already in use/);
  });

  test("a process that does not exist gets a clear error, and the spawner goes on", async () => {
    await assert.rejects(spawner.listenIn(2 ** 22 + 7, 3128), /open the sandbox's network namespace: No such file or directory/);
    const handle = await spawner.listenIn(holder.pid!, 3129);
    const server = createServer((s) => s.end("second"));
    servers.push(server);
    await new Promise<void>((r) => server.listen(handle, () => r()));
    assert.equal(await fromInside(holder.pid!, 3129), "second");
    // Nothing of it is on the host's loopback (unless some other program happens to use the port).
    assert.equal((await fromInside(process.pid, 3129)).includes("second"), false);
  });
});
