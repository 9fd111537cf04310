export * from "./errors.js";
export * from "./framing.js";
export * from "./units.js";
export * from "./api.js";
export * from "./validation.js";
export * from "./runtime-protocol.js";
export * from "./api-sessions.js";
export * from "./api-files.js";
