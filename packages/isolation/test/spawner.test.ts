/**
 * The process spawner's listeners: a TCP listener made inside another network namespace and
 * handed to this process over Node's IPC channel. The namespace is a real one (`unshare -n`),
 * and connections are made from inside it with `nsenter`.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer, Socket, type AddressInfo, type Server, type SocketConstructorOpts } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Spawner, socketFd } from "../src/index.js";

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

describe("spawner: taking a connection from the peer of a unix socket", () => {
  const spawner = new Spawner();
  const servers: Server[] = [];
  let peer: ChildProcess;
  /** This process's end of the unix connection whose other end is `peer`. */
  let via: Socket;
  /** What `peer` reports: the descriptors of its TCP connection to us and of a file it opened. */
  let peerFds: { tcp: number; file: number };
  /** The far end (in this process) of peer's TCP connection. */
  let tcpHere: Socket;
  const dir = mkdtempSync(join(tmpdir(), "agentbox-take-"));

  before(async () => {
    spawner.start();
    const tcpServer = createServer();
    const unixServer = createServer();
    servers.push(tcpServer, unixServer);
    await new Promise<void>((r) => tcpServer.listen(0, "127.0.0.1", () => r()));
    await new Promise<void>((r) => unixServer.listen(join(dir, "s"), () => r()));
    const port = (tcpServer.address() as AddressInfo).port;
    // A peer that connects both ways and says which descriptor is which. It stops reading its
    // TCP connection, as the server does before it hands one over: else it would race the taker.
    const script = `const net = require("node:net");
const u = net.connect(${JSON.stringify(join(dir, "s"))}, () => {
  const t = net.connect(${port}, "127.0.0.1", () => {
    t.pause();
    t._handle.readStop();
    u.write(JSON.stringify({ tcp: t._handle.fd, file: require("node:fs").openSync("/dev/null", "r") }) + "\\n");
  });
});`;
    const accepted = new Promise<Socket>((r) => tcpServer.once("connection", r));
    const viaAccepted = new Promise<Socket>((r) => unixServer.once("connection", r));
    peer = spawn(process.execPath, ["-e", script], { stdio: ["pipe", "ignore", "inherit"] });
    via = await viaAccepted;
    peerFds = JSON.parse(await new Promise<string>((r) => via.once("data", (d: Buffer) => r(d.toString()))));
    tcpHere = await accepted;
  });
  after(() => {
    peer.kill("SIGKILL");
    for (const s of servers) s.close();
    spawner.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("the peer's TCP connection becomes ours: bytes both ways", { timeout: 20_000 }, async () => {
    const handle = await spawner.take(socketFd(via), peerFds.tcp);
    const taken = new Socket({ handle, readable: true, writable: true } as SocketConstructorOpts);
    const got = new Promise<string>((r) => tcpHere.once("data", (d: Buffer) => r(d.toString())));
    taken.write("from the taker");
    assert.equal(await got, "from the taker");
    const back = new Promise<string>((r) => taken.once("data", (d: Buffer) => r(d.toString())));
    tcpHere.write("to the taker");
    assert.equal(await back, "to the taker");
    taken.destroy();
  });

  test("only a stream socket is handed over; wrong descriptors get clear errors", { timeout: 20_000 }, async () => {
    await assert.rejects(spawner.take(socketFd(via), peerFds.file), /not a stream socket: Socket operation on non-socket/);
    await assert.rejects(spawner.take(socketFd(via), 999), /pidfd_getfd: Bad file descriptor/);
    // `via` must be a socket with a peer: a file is not.
    const file = openSync("/dev/null", "r");
    try {
      await assert.rejects(spawner.take(file, peerFds.tcp), /peer of the socket/);
    } finally {
      closeSync(file);
    }
  });
});
