export * from "./cgroups.js";
export * from "./host-image.js";
export * from "./overlay-rootfs.js";
export * from "./local-sandbox.js";
export * from "./system-tools.js";
export * from "./spawner.js";
