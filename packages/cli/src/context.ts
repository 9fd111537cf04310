/**
 * Global options (`--url`, `--api-key`, `--json`) and the SDK client built
 * from them. A local user needs no setup: with no key given and a server on
 * this machine, the key is read from the data directory `agentbox serve` uses.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { InvalidArgumentError, type Command } from "commander";
import { Agentbox, DEFAULT_URL } from "@agentbox/sdk";
import { CliError, reportError } from "./output.js";

export interface GlobalOptions {
  url?: string;
  apiKey?: string;
  json?: boolean;
}

export interface Context {
  json: boolean;
  client(): Agentbox;
}

export function dataDir(): string {
  return process.env["AGENTBOX_DATA_DIR"] || path.resolve(".agentbox");
}

export function apiKeyFile(dir = dataDir()): string {
  return path.join(dir, "api-key");
}

function isLoopback(url: string): boolean {
  try {
    const host = new URL(url).hostname;
    return host === "localhost" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);
  } catch {
    return false;
  }
}

function readLocalKey(): string | undefined {
  try {
    const key = readFileSync(apiKeyFile(), "utf8").trim();
    return key === "" ? undefined : key;
  } catch {
    return undefined;
  }
}

export function resolveConnection(options: GlobalOptions): { url: string; apiKey: string } {
  const url = options.url || process.env["AGENTBOX_URL"] || DEFAULT_URL;
  const apiKey = options.apiKey || process.env["AGENTBOX_API_KEY"] || (isLoopback(url) ? readLocalKey() : undefined);
  if (apiKey === undefined) {
    throw new CliError(
      "UNAUTHORIZED",
      isLoopback(url)
        ? `no API key: pass --api-key, set AGENTBOX_API_KEY, or start the server with \`agentbox serve\` so that ${apiKeyFile()} exists (set AGENTBOX_DATA_DIR if it uses another data directory)`
        : "no API key: pass --api-key or set AGENTBOX_API_KEY",
    );
  }
  return { url, apiKey };
}

export function context(command: Command): Context {
  const options = command.optsWithGlobals<GlobalOptions>();
  let client: Agentbox | undefined;
  return {
    json: options.json === true,
    client() {
      client ??= new Agentbox(resolveConnection(options));
      return client;
    },
  };
}

/**
 * Wrap a command's action: give it its context, and turn any error into the
 * CLI's error output and exit code 1.
 */
export function action<A extends unknown[]>(
  fn: (ctx: Context, ...args: A) => Promise<void>,
): (...args: [...A, Command]) => Promise<void> {
  return async (...args) => {
    const command = args[args.length - 1] as Command;
    const rest = args.slice(0, -1) as unknown as A;
    const ctx = context(command);
    try {
      await fn(ctx, ...rest);
    } catch (error) {
      reportError(error, ctx.json);
    }
  };
}

/** Commander argument parser for repeatable `K=V` options. */
export function collectKeyValue(value: string, previous: Record<string, string> | undefined): Record<string, string> {
  const eq = value.indexOf("=");
  if (eq <= 0) throw new InvalidArgumentError(`expected KEY=VALUE, got "${value}"`);
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
}

export function parsePositiveInt(what: string): (value: string) => number {
  return (value: string) => {
    if (!/^\d+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) {
      throw new InvalidArgumentError(`${what} must be a positive integer`);
    }
    return Number(value);
  };
}
