/**
 * The runtime process: `node main.js --data-dir DIR --socket PATH`.
 * It holds every sandbox of one data directory; the server talks to it over
 * the socket. SIGTERM or a `runtime.shutdown` request stops it and, with it,
 * all its sandboxes.
 */
import { parseArgs } from "node:util";
import { SandboxManager } from "./sandbox-manager.js";
import { RuntimeServer } from "./runtime-server.js";

const { values } = parseArgs({
  options: { "data-dir": { type: "string" }, socket: { type: "string" } },
});
const dataDir = values["data-dir"];
const socketPath = values.socket;
if (!dataDir || !socketPath) {
  process.stderr.write("usage: runtime --data-dir DIR --socket PATH\n");
  process.exit(2);
}

const manager = new SandboxManager(dataDir);
let stopping: Promise<void> | undefined;
/** Remove every sandbox, then exit. A shutdown request is answered once the sandboxes are gone. */
const stop = (why: string): Promise<void> => {
  stopping ??= (async () => {
    log(`stopping (${why}); removing ${manager.size} sandbox(es)`);
    await manager.destroyAll();
    // Let the answer to a shutdown request go out before the connections drop.
    setTimeout(() => void server.close().finally(() => process.exit(0)), 20);
  })();
  return stopping;
};
const server = new RuntimeServer({ socketPath, manager, onShutdown: () => stop("shutdown request") });

function log(message: string): void {
  process.stdout.write(`${new Date().toISOString()} runtime[${process.pid}] ${message}\n`);
}

process.on("SIGTERM", () => void stop("SIGTERM"));
process.on("SIGINT", () => void stop("SIGINT"));
process.on("SIGHUP", () => undefined);

// Leftovers of a runtime that died must not stop this one from serving.
await manager.start().catch((err: Error) => log(`clean-up of an earlier runtime's sandboxes failed: ${err.message}`));
await server.listen();
log(`listening on ${socketPath} (cgroups: ${manager.cgroupKind})`);
