export { RuntimeClient } from "./runtime-client.js";
export { RuntimeServer, RUNTIME_VERSION } from "./runtime-server.js";
export { SandboxManager } from "./sandbox-manager.js";
export { connectOrStartRuntime, runtimeSocketPath, spawnRuntime, RUNTIME_MAIN } from "./runtime-launcher.js";
export { FramedConnection } from "./connection.js";
// The server hands its clients' sockets to file relays (fs.relay) with these.
export { socketFd, startReading, stopReading } from "@agentbox/isolation";
export { serveCodeSession, type CodeSessionBackend, type CodeEvents } from "./code-session.js";
