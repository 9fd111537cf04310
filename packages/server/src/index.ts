export { startServer, SERVER_VERSION, type RunningServer } from "./server.js";
export type { ServerOptions } from "./config.js";
