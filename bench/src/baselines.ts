/** The floors the benchmarks compare against, measured in the same run. */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { connect } from "node:net";

function run(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: "ignore" });
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`${file} exited with ${code}`))));
  });
}

/** A raw spawn of /bin/true from Node. */
export const rawSpawn = () => run("/bin/true", []);

/** A raw bubblewrap sandbox with the same namespaces as an agentbox sandbox, running /bin/true. */
export const rawBwrap = () =>
  run("bwrap", [
    "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup",
    "--disable-userns", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
    "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
    "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
    "/bin/true",
  ]);

/** A plain CPython start that evaluates 1+1 (the cost a code context's warm pool avoids). */
export const rawPython = () => run("/usr/bin/python3", ["-c", "1+1"]);

const ECHO = `const s = require("net").createServer((c) => { c.setNoDelay(true); c.on("data", (d) => c.write(d)); });
s.listen(0, "127.0.0.1", () => console.log(s.address().port));`;

/**
 * A bare Node echo process over loopback TCP. `roundTripUs(n)` is the microseconds per round trip
 * of a 64-byte message: the floor of one hop between two processes on this machine (a host call
 * crosses three: SDK and server, server and runtime, runtime and worker).
 */
export async function echoPeer(): Promise<{ roundTripUs(n: number): Promise<number>; close(): void }> {
  const child = spawn(process.execPath, ["-e", ECHO], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once("data", (d: Buffer) => resolve(Number(d.toString().trim())));
    child.once("exit", (code) => reject(new Error(`echo process exited with ${code}`)));
  });
  const socket = connect(port, "127.0.0.1");
  socket.setNoDelay(true);
  await once(socket, "connect");
  const message = Buffer.alloc(64, 1);
  const pingPong = (count: number) =>
    new Promise<void>((resolve) => {
      let got = 0;
      let left = count;
      const onData = (d: Buffer) => {
        got += d.length;
        if (got < message.length) return;
        got = 0;
        if (--left === 0) {
          socket.off("data", onData);
          resolve();
        } else socket.write(message);
      };
      socket.on("data", onData);
      socket.write(message);
    });
  await pingPong(2000); // the JIT of both sides
  return {
    roundTripUs: async (n) => {
      const t = performance.now();
      await pingPong(n);
      return ((performance.now() - t) * 1000) / n;
    },
    close: () => {
      socket.destroy();
      child.kill();
    },
  };
}
