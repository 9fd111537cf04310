/** Templates known to the server. Only the built-in `default` exists until template CRUD lands. */
import type { NetworkPolicy, Resources } from "@agentbox/protocol";

export interface Template {
  name: string;
  image: string;
  resources: Resources;
  network: NetworkPolicy;
  env: Record<string, string>;
  workdir: string;
  user: string;
}

export const DEFAULT_TEMPLATE: Template = {
  name: "default",
  image: "host",
  resources: { cpu: "1", memory: "512Mi", storage: "1Gi", pids: 256 },
  network: { mode: "none" },
  env: {},
  workdir: "/workspace",
  user: "user",
};

export function findTemplate(name: string): Template | undefined {
  return name === DEFAULT_TEMPLATE.name ? DEFAULT_TEMPLATE : undefined;
}
