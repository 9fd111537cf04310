/**
 * How the CLI talks back: tables and plain lines for people, JSON with `--json`.
 * Errors go to stderr as `error: CODE: message` (or, with `--json`, as the API's
 * error body on stdout) and make the process exit with 1.
 */
import { isAgentboxError } from "@agentbox/sdk";

/** An error raised by the CLI itself, with a registry-style code. */
export class CliError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "CliError";
  }
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Write and wait until the stream took it (a slow reader slows us, not memory). */
export function writeAndWait(stream: NodeJS.WriteStream, text: string): Promise<void> {
  if (text === "") return Promise.resolve();
  return new Promise((resolve) => {
    stream.write(text, () => resolve());
  });
}

export function printLine(text = ""): void {
  process.stdout.write(`${text}\n`);
}

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function printTable(headers: string[], rows: string[][]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const format = (cells: string[]): string =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  for (const line of [headers, ...rows]) printLine(format(line));
}

/** `KEY  value` lines for one record. */
export function printFields(fields: Array<[string, string | undefined]>): void {
  const present = fields.filter((f): f is [string, string] => f[1] !== undefined);
  const width = Math.max(0, ...present.map(([k]) => k.length));
  for (const [key, value] of present) printLine(`${key.padEnd(width)}  ${value}`);
}

export interface ErrorInfo {
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

export function describeError(error: unknown): ErrorInfo {
  if (isAgentboxError(error)) {
    return error.details === undefined
      ? { code: error.code, message: error.message }
      : { code: error.code, message: error.message, details: error.details };
  }
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return { code: typeof code === "string" ? code : "INTERNAL", message: error.message };
  }
  return { code: "INTERNAL", message: String(error) };
}

/** Print an error the way the output mode wants and set exit code 1. */
export function reportError(error: unknown, json: boolean): void {
  const info = describeError(error);
  if (json) {
    printJson({ error: info });
  } else {
    process.stderr.write(`error: ${info.code}: ${info.message}\n`);
  }
  process.exitCode = 1;
}
