/**
 * A small router: method + path pattern (`/v1/sandboxes/:id`) → handler.
 * Unknown paths are 404 NOT_FOUND; known paths with another method are 405.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { AgentboxError } from "@agentbox/protocol";

export interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  params: Record<string, string>;
}

/** A handler returns a JSON value (sent with `status`, default 200) or undefined after answering itself. */
export type Handler = (ctx: RequestContext) => Promise<HandlerResult | undefined> | HandlerResult | undefined;
export interface HandlerResult {
  status?: number;
  body: unknown;
}

interface Route<H> {
  method: string;
  parts: string[];
  handler: H;
}

/** Routes of HTTP handlers by default; the WebSocket hub routes its own handler type. */
export class Router<H = Handler> {
  private readonly routes: Route<H>[] = [];

  add(method: string, pattern: string, handler: H): this {
    this.routes.push({ method, parts: pattern.split("/").filter(Boolean), handler });
    return this;
  }

  get(pattern: string, handler: H): this {
    return this.add("GET", pattern, handler);
  }
  post(pattern: string, handler: H): this {
    return this.add("POST", pattern, handler);
  }
  put(pattern: string, handler: H): this {
    return this.add("PUT", pattern, handler);
  }
  patch(pattern: string, handler: H): this {
    return this.add("PATCH", pattern, handler);
  }
  delete(pattern: string, handler: H): this {
    return this.add("DELETE", pattern, handler);
  }

  match(method: string, pathname: string): { handler: H; params: Record<string, string> } {
    const segments = pathname.split("/").filter(Boolean);
    let pathMatched = false;
    for (const route of this.routes) {
      const params = matchParts(route.parts, segments);
      if (!params) continue;
      pathMatched = true;
      if (route.method === method) return { handler: route.handler, params };
    }
    if (pathMatched) throw new AgentboxError("METHOD_NOT_ALLOWED", `${method} is not allowed on ${pathname}`);
    throw new AgentboxError("NOT_FOUND", `no such endpoint: ${method} ${pathname}`);
  }
}

function matchParts(parts: string[], segments: string[]): Record<string, string> | undefined {
  if (parts.length !== segments.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    let segment: string;
    try {
      segment = decodeURIComponent(segments[i]!);
    } catch {
      return undefined;
    }
    if (part.startsWith(":")) params[part.slice(1)] = segment;
    else if (part !== segment) return undefined;
  }
  return params;
}
