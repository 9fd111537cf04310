/**
 * @agentbox/interpreter — code workers and their pool: the worker protocol's
 * parent side (Worker), transports (subprocess, WebSocket), WorkerPool, the
 * workers' launch recipes, and the remote worker host.
 */
export { Worker, WorkerFailure, type HostFunction, type TurnOptions, type CallAnswer } from "./worker.js";
export { WorkerPool, type WorkerPoolOptions } from "./pool.js";
export { SubprocessTransport, WebSocketTransport, type WorkerTransport, type WorkerProcess } from "./transports.js";
export { workerLaunch, CODE_LANGUAGES, type CodeLanguage, type WorkerLaunch } from "./languages.js";
export { startWorkerServer, type WorkerServerOptions, type RunningWorkerServer } from "./worker-server.js";
export { startLocalWorker, type LocalWorkerOptions } from "./local-worker.js";
export * from "./wasm/index.js";
