/**
 * Connections to ports inside a sandbox (exposed ports). The sandbox has its own network
 * namespace, so the host cannot connect there itself: the connector helper is started inside
 * for each connection and relays it over its stdin/stdout.
 */
import { AgentboxError } from "@agentbox/protocol";
import { NET_HELPER, type LocalSandbox, type SpawnedProcess } from "@agentbox/isolation";

const CONNECT_TIMEOUT_MS = 10_000;

/** Resolves once the connector is connected to `port`; NOT_FOUND when nothing listens there. */
export async function connectToPort(sandbox: LocalSandbox, port: number): Promise<SpawnedProcess> {
  const proc = await sandbox.spawnHelper(NET_HELPER, ["agentbox-net", "connect", String(port)]);
  let stderr = "";
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new AgentboxError("TIMEOUT", `connecting to port ${port} inside the sandbox timed out`)), CONNECT_TIMEOUT_MS);
      const onData = (d: Buffer) => {
        stderr += d.toString();
        if (stderr.startsWith("connected\n")) {
          clearTimeout(timer);
          proc.stderr.off("data", onData);
          resolve();
        }
      };
      proc.stderr.on("data", onData);
      void proc.exited.then(() => {
        clearTimeout(timer);
        reject(new AgentboxError("NOT_FOUND", stderr.trim() || `nothing listens on port ${port} inside the sandbox`, { port }));
      });
    });
  } catch (err) {
    proc.kill("SIGKILL");
    throw err;
  }
  proc.stderr.resume();
  return proc;
}
