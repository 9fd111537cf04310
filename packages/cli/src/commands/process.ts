/**
 * `agentbox ps`, `agentbox logs`, `agentbox kill`: background processes of a
 * sandbox (started with `agentbox run` or the SDK's `startProcess`), and the
 * helpers `run` shares for printing a process's output as it streams.
 */
import { constants } from "node:os";
import { Command, InvalidArgumentError } from "commander";
import {
  PROCESS_SIGNALS,
  isAgentboxError,
  type ProcessHandle,
  type ProcessInfo,
  type ProcessResult,
  type ProcessSignal,
  type ProcessStream,
  type Sandbox,
  type Truncation,
} from "@agentbox/sdk";
import { action } from "../context.js";
import { CliError, printJson, printLine, printTable, writeAndWait } from "../output.js";
import { exitCodeOf } from "./exec.js";

/** `TERM`, `sigterm`, `SIGTERM` and `15` are all SIGTERM; only the signals the server accepts pass. */
export function parseSignal(value: string): ProcessSignal {
  let name = value.trim().toUpperCase();
  if (/^\d+$/.test(name)) {
    const entry = Object.entries(constants.signals as Record<string, number>).find(([, number]) => number === Number(name));
    if (entry !== undefined) name = entry[0];
  }
  if (!name.startsWith("SIG")) name = `SIG${name}`;
  if (!(PROCESS_SIGNALS as readonly string[]).includes(name)) {
    throw new InvalidArgumentError(`unknown signal "${value}" (one of ${PROCESS_SIGNALS.map((s) => s.slice(3)).join(", ")})`);
  }
  return name as ProcessSignal;
}

/** The command line of a process, as a shell would take it. */
export function formatCommand(info: Pick<ProcessInfo, "command" | "argv">): string {
  if (info.command !== undefined) return info.command;
  return (info.argv ?? []).map(shellQuote).join(" ");
}

function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** The EXIT column: `-` while running, else the code or the signal, with the reason. */
export function formatExit(info: Pick<ProcessInfo, "status" | "exitCode" | "signal" | "reason">): string {
  if (info.status !== "exited") return "-";
  const base = info.signal ?? (typeof info.exitCode === "number" ? String(info.exitCode) : "?");
  return info.reason !== undefined ? `${base} (${info.reason})` : base;
}

/** One JSON line (the `--json` form of `run` and `logs`). */
export function writeJsonLine(value: unknown): Promise<void> {
  return writeAndWait(process.stdout, `${JSON.stringify(value)}\n`);
}

function warnTruncated(stream: ProcessStream, gap: Truncation): void {
  process.stderr.write(
    `agentbox: warning: ${stream} bytes ${gap.requestedOffset}-${gap.availableOffset} were evicted from the process's log before they could be read\n`,
  );
}

/** Print one piece of output: raw to our stdout/stderr, or as JSON lines. */
async function printChunk(stream: ProcessStream, data: string, offset: number, gap: Truncation | undefined, json: boolean): Promise<void> {
  if (json) {
    if (gap !== undefined) await writeJsonLine({ type: "truncated", stream, ...gap });
    if (data !== "") await writeJsonLine({ type: stream, data, offset });
    return;
  }
  if (gap !== undefined) warnTruncated(stream, gap);
  await writeAndWait(stream === "stdout" ? process.stdout : process.stderr, data);
}

export function exitLine(result: Pick<ProcessResult, "exitCode" | "signal" | "reason">): Record<string, unknown> {
  return {
    type: "exit",
    exitCode: result.exitCode,
    ...(result.signal !== undefined && { signal: result.signal }),
    ...(result.reason !== undefined && { reason: result.reason }),
  };
}

export type FollowOutcome = { kind: "exited"; result: ProcessResult } | { kind: "broken-pipe" };

/**
 * Print a process's output as it arrives, until it exits. Connection trouble
 * is the handle's to fix (it reconnects from its offsets); on a terminal the
 * outage is mentioned on stderr. If our stdout goes away (`| head`), stop
 * following and say so.
 */
export async function follow(handle: ProcessHandle, sandboxId: string, json: boolean): Promise<FollowOutcome> {
  let brokenPipe = false;
  const onStdoutError = (error: NodeJS.ErrnoException): void => {
    if (error.code !== "EPIPE") throw error;
    brokenPipe = true;
    handle.disconnect();
  };
  process.stdout.on("error", onStdoutError);
  let outage = false;
  const onReconnecting = (info: { reason: string }): void => {
    if (!outage && !json && process.stderr.isTTY) process.stderr.write(`agentbox: connection lost (${info.reason}); reconnecting…\n`);
    outage = true;
  };
  const onStarted = (): void => {
    if (outage && !json && process.stderr.isTTY) process.stderr.write("agentbox: reconnected\n");
    outage = false;
  };
  handle.on("reconnecting", onReconnecting);
  handle.on("started", onStarted);
  try {
    for await (const chunk of handle) {
      if (brokenPipe) break;
      await printChunk(chunk.stream, chunk.data, chunk.offset, chunk.truncated, json);
    }
    if (brokenPipe || !handle.exited) return { kind: "broken-pipe" };
    const result = await handle.wait();
    if (json) await writeJsonLine(exitLine(result));
    return { kind: "exited", result };
  } catch (error) {
    if (isAgentboxError(error, "CONNECTION_FAILED")) {
      throw new CliError(error.code, `${error.message}; follow it with: agentbox logs -f ${sandboxId} ${handle.id}`);
    }
    throw error;
  } finally {
    handle.off("reconnecting", onReconnecting);
    handle.off("started", onStarted);
    process.stdout.off("error", onStdoutError);
  }
}

/** The exit code for 'our stdout was closed' (128 + SIGPIPE), as a shell reports a writer killed by SIGPIPE. */
export const BROKEN_PIPE_EXIT = 141;

/** Print the logs the server holds now (`GET …/logs`), from the start. */
async function printLogs(sandbox: Sandbox, id: string, json: boolean): Promise<void> {
  const offsets = { stdout: 0, stderr: 0 };
  // One request normally returns everything; ask again while it keeps returning data, in case the server caps a response.
  for (let round = 0; round < 16; round++) {
    const logs = await sandbox.processLogs(id, offsets);
    let advanced = false;
    for (const stream of ["stdout", "stderr"] as const) {
      const gap = logs.truncated?.[stream];
      const data = logs[stream];
      const end = stream === "stdout" ? logs.stdoutOffset : logs.stderrOffset;
      await printChunk(stream, data, gap?.availableOffset ?? offsets[stream], gap, json);
      if (end > offsets[stream]) advanced = true;
      offsets[stream] = Math.max(offsets[stream], end);
    }
    if (!advanced) {
      if (json && logs.status === "exited") await writeJsonLine(exitLine({ exitCode: logs.exitCode ?? null, signal: logs.signal, reason: logs.reason }));
      return;
    }
  }
}

export function psCommand(): Command {
  return new Command("ps")
    .description("List the background processes of a sandbox (running and exited)")
    .argument("<sandbox>", "sandbox id")
    .addHelpText(
      "after",
      `
EXIT is "-" while the process runs, then its exit code, or the signal that
ended it; "(timeout)", "(killed)" or "(oom)" says why when it did not end on
its own. --json prints the list of processes as the API returns them.

Examples:
  $ agentbox ps sb-1234
  $ agentbox ps sb-1234 --json | jq -r '.[] | select(.status == "running") | .id'`,
    )
    .action(
      action(async (ctx, sandboxId: string) => {
        const sandbox = await ctx.client().sandboxes.get(sandboxId);
        const processes = await sandbox.processes();
        if (ctx.json) {
          printJson(processes);
          return;
        }
        printTable(
          ["ID", "PID", "STATUS", "EXIT", "COMMAND"],
          processes.map((p) => [p.id, String(p.pid), p.status, formatExit(p), formatCommand(p)]),
        );
      }),
    );
}

export function logsCommand(): Command {
  return new Command("logs")
    .description("Print a background process's output; with -f, follow it until the process exits")
    .argument("<sandbox>", "sandbox id")
    .argument("<process>", "process id (see agentbox ps)")
    .option("-f, --follow", "stream the output as it is produced and exit with the process's exit code")
    .addHelpText(
      "after",
      `
The process's stdout is written to stdout and its stderr to stderr. The server
keeps the last part of each stream (16 MiB by default): output evicted before
it was read is reported on stderr.

With -f the output is streamed from the start and the command ends when the
process does, with its exit code (128+N for signal N, 124 for a timeout).
Ctrl-C stops following; the process keeps running. A server restart does not
interrupt -f: it reconnects and resumes exactly where it was.

With --json each piece of output is one JSON line,
  {"type":"stdout"|"stderr","data":"…","offset":<byte offset>},
preceded by {"type":"truncated","stream","requestedOffset","availableOffset"}
when output was lost, and followed by {"type":"exit","exitCode","signal"?,"reason"?}
once the process has exited.

Examples:
  $ agentbox logs sb-1234 web
  $ agentbox logs -f sb-1234 build; echo "build exited with $?"
  $ agentbox logs sb-1234 web 2>/dev/null | grep ERROR
  $ agentbox logs -f --json sb-1234 build | jq -r 'select(.type == "stderr") | .data'`,
    )
    .action(
      action(async (ctx, sandboxId: string, processId: string, opts: { follow?: boolean }) => {
        const sandbox = await ctx.client().sandboxes.get(sandboxId);
        if (opts.follow !== true) {
          await printLogs(sandbox, processId, ctx.json);
          return;
        }
        const handle = await sandbox.getProcess(processId, { keepOutput: false });
        const outcome = await follow(handle, sandboxId, ctx.json);
        process.exitCode = outcome.kind === "exited" ? exitCodeOf(outcome.result) : BROKEN_PIPE_EXIT;
      }),
    );
}

export function killCommand(): Command {
  return new Command("kill")
    .description("Send a signal to a background process and its children (default SIGKILL)")
    .argument("<sandbox>", "sandbox id")
    .argument("<process>", "process id (see agentbox ps)")
    .option("-s, --signal <signal>", `signal to send: ${PROCESS_SIGNALS.map((s) => s.slice(3)).join(", ")} (with or without SIG, or its number)`, parseSignal)
    .addHelpText(
      "after",
      `
Prints the process id; with --json, the process's state as the server reports
it right after the signal (it may still be "running" while it shuts down).

Examples:
  $ agentbox kill sb-1234 web
  $ agentbox kill sb-1234 web --signal TERM
  $ agentbox kill sb-1234 web -s SIGINT --json`,
    )
    .action(
      action(async (ctx, sandboxId: string, processId: string, opts: { signal?: ProcessSignal }) => {
        const sandbox = await ctx.client().sandboxes.get(sandboxId);
        const info = await sandbox.killProcess(processId, opts.signal);
        if (ctx.json) printJson(info);
        else printLine(info.id);
      }),
    );
}
