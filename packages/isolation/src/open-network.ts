/**
 * `open` networking: user-mode networking with slirp4netns. The sandbox gets a tap device
 * with a default route; its packets become ordinary sockets of the slirp4netns process on
 * the host, so no bridge, veth or iptables rule is touched. `--disable-host-loopback` keeps
 * the host's loopback services (the agentbox API among them) out of reach.
 */
import { spawn, type ChildProcess } from "node:child_process";
import type { Readable } from "node:stream";
import { findProgram } from "./system-tools.js";

/** What slirp4netns gives the sandbox: its DNS forwarder (use it in resolv.conf) and gateway. */
export const OPEN_NETWORK_DNS = "10.0.2.3";
export const OPEN_NETWORK_RESOLV_CONF = `nameserver ${OPEN_NETWORK_DNS}\noptions edns0\n`;

export interface OpenNetwork {
  stop(): void;
}

export function slirp4netnsPath(): string | undefined {
  return findProgram("slirp4netns");
}

/** Attach user-mode networking to the network namespace of `pid`; resolves once it is configured. */
export async function startOpenNetwork(pid: number): Promise<OpenNetwork> {
  const slirp = slirp4netnsPath();
  if (!slirp) throw new Error('network mode "open" needs slirp4netns (run `bash scripts/setup.sh` as root, or `apt-get install slirp4netns`)');
  const child: ChildProcess = spawn(
    slirp,
    // By path, not pid: given a pid it would also join the sandbox's innermost user namespace,
    // which does not own the network namespace (bubblewrap nests one for --disable-userns).
    ["--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox", "--enable-seccomp", "--ready-fd=3", "--exit-fd=4", "--netns-type=path", `/proc/${pid}/ns/net`, "tap0"],
    // fd 3: it writes "1" once the tap device is up; fd 4: it exits when we close our end.
    { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"], env: {} },
  );
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const stop = () => {
    (child.stdio[4] as Readable | null)?.destroy();
    child.kill("SIGKILL");
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const ready = child.stdio[3] as Readable;
      ready.once("data", () => resolve());
      child.once("error", reject);
      child.once("exit", (code, signal) => reject(new Error(`slirp4netns exited (${signal ?? code}): ${stderr.trim() || "no message"}`)));
      setTimeout(() => reject(new Error(`slirp4netns did not configure the network within 10 s: ${stderr.trim()}`)), 10_000).unref();
    });
  } catch (err) {
    stop();
    throw err;
  }
  child.stderr!.resume();
  return { stop };
}
