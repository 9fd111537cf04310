/**
 * `agentbox run <sandbox> -- cmd…`: start a background process and stay
 * attached to it: its output streams to this terminal, this terminal's input
 * goes to it, Ctrl-C interrupts it, and its exit code becomes ours.
 */
import { StringDecoder } from "node:string_decoder";
import { Command, InvalidArgumentError } from "commander";
import type { ProcessHandle, ProcessSignal, StartProcessOptions } from "@agentbox/sdk";
import { action, collectKeyValue, parsePositiveInt } from "../context.js";
import { CliError, describeError, printJson, printLine } from "../output.js";
import { exitCodeOf, toCommand } from "./exec.js";
import { BROKEN_PIPE_EXIT, follow, writeJsonLine } from "./process.js";

const PROCESS_ID = /^[A-Za-z0-9._-]{1,64}$/;

function parseProcessId(value: string): string {
  if (!PROCESS_ID.test(value)) throw new InvalidArgumentError("a process id is 1-64 characters of A-Z a-z 0-9 . _ -");
  return value;
}

/**
 * Pass our stdin to the process as it comes (a line at a time from a
 * terminal), then close the process's stdin at end of input (Ctrl-D on a
 * terminal). Input is text: bytes are decoded as UTF-8. Returns a function
 * that stops reading.
 */
function forwardStdin(handle: ProcessHandle): () => void {
  const stdin = process.stdin;
  const decoder = new StringDecoder("utf8");
  let stopped = false;
  const pump = async (): Promise<void> => {
    for await (const chunk of stdin) {
      if (stopped) return;
      const text = decoder.write(chunk as Buffer);
      if (text !== "") await handle.sendInput(text);
    }
    if (stopped) return;
    const rest = decoder.end();
    if (rest !== "") await handle.sendInput(rest);
    await handle.closeStdin();
  };
  pump().catch((error: unknown) => {
    // Input for a process that has ended is nobody's loss.
    if (stopped || handle.exited) return;
    const info = describeError(error);
    process.stderr.write(`agentbox: warning: could not pass stdin to the process: ${info.code}: ${info.message}\n`);
  });
  return () => {
    stopped = true;
    stdin.destroy();
  };
}

/** First Ctrl-C (or SIGTERM) passes the signal on, the next one kills. Returns a function that restores the defaults. */
function forwardSignals(handle: ProcessHandle, json: boolean): () => void {
  let received = 0;
  const handler = (signal: NodeJS.Signals): void => {
    received++;
    const send: ProcessSignal = received === 1 ? (signal === "SIGTERM" ? "SIGTERM" : "SIGINT") : "SIGKILL";
    if (!json && process.stderr.isTTY) {
      process.stderr.write(
        received === 1
          ? `\nagentbox: sent ${send} to process ${handle.id} (again to kill it)\n`
          : `\nagentbox: sent SIGKILL to process ${handle.id}\n`,
      );
    }
    handle.kill(send).catch((error: unknown) => {
      if (handle.exited) return;
      const info = describeError(error);
      process.stderr.write(`agentbox: could not send ${send}: ${info.code}: ${info.message}\n`);
    });
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  return () => {
    process.off("SIGINT", handler);
    process.off("SIGTERM", handler);
  };
}

interface RunOptions {
  id?: string;
  cwd?: string;
  env?: Record<string, string>;
  timeout?: number;
  stdin: boolean;
  detach?: boolean;
}

export function runCommand(): Command {
  return new Command("run")
    .description("Start a background process in a sandbox and stay attached: live output, stdin, Ctrl-C, exit code")
    .argument("<sandbox>", "sandbox id")
    .argument("<command...>", "the command and its arguments (put them after --)")
    .option("--id <id>", "your own process id (1-64 of A-Z a-z 0-9 . _ -); if it exists, attach to that process instead", parseProcessId)
    .option("--cwd <dir>", "working directory inside the sandbox (default: the template's workdir, /workspace)")
    .option("-e, --env <KEY=VALUE>", "environment variable for the process (repeatable)", collectKeyValue)
    .option("--timeout <ms>", "kill the process after this many milliseconds (exit code 124)", parsePositiveInt("--timeout"))
    .option("--no-stdin", "do not pass this command's stdin on; the process's stdin is closed at once")
    .option("-d, --detach", "start the process and print its id without attaching (follow it later with agentbox logs -f); its stdin stays open unless --no-stdin")
    .showHelpAfterError("(put the command after -- when it has options of its own: agentbox run <sandbox> -- ls -la)")
    .addHelpText(
      "after",
      `
Unlike exec, the process is not tied to this command: it runs in the sandbox
until it exits, and its output is kept there (see agentbox ps, logs, kill).
run prints the output as it is produced and ends when the process does, with
its exit code: 128+N if it was killed by signal N, 124 if it ran past
--timeout. If the connection drops, or the server restarts, run reconnects and
resumes the output exactly where it was.

The arguments are run as argv, without a shell; a single argument that
contains a space is run by /bin/sh -c.

stdin: what this command reads is passed on as it arrives (from a terminal, a
line at a time) and the process's stdin is closed at end of input (Ctrl-D on a
terminal). Input is sent as UTF-8 text; for binary input use exec --stdin.
Ctrl-C sends SIGINT to the process, a second Ctrl-C sends SIGKILL. SIGTERM to
this command is passed on the same way.

With --json each event is one JSON line: first {"type":"started","id","pid"},
then {"type":"stdout"|"stderr","data","offset"} for the output (and
{"type":"truncated",…} if some was lost), last {"type":"exit","exitCode",
"signal"?,"reason"?}. The exit code is the process's, as without --json.

Examples:
  $ agentbox run sb-1234 -- python3 -u train.py
  $ agentbox run sb-1234 --id web -d -- python3 -m http.server 8000
  $ agentbox run sb-1234 --timeout 60000 -- 'make -j4 && make test'; echo $?
  $ printf '1 + 1\\n' | agentbox run sb-1234 -- bc
  $ agentbox run sb-1234 --json -- ls -la | jq -r 'select(.type == "stdout") | .data'`,
    )
    .action(
      action(async (ctx, sandboxId: string, args: string[], opts: RunOptions) => {
        if (args.length === 0) throw new CliError("INVALID_REQUEST", "no command given");
        const options: StartProcessOptions = { keepOutput: false };
        if (opts.id !== undefined) options.id = opts.id;
        if (opts.cwd !== undefined) options.cwd = opts.cwd;
        if (opts.env !== undefined) options.env = opts.env;
        if (opts.timeout !== undefined) options.timeoutMs = opts.timeout;
        const sandbox = await ctx.client().sandboxes.get(sandboxId);
        const handle = await sandbox.startProcess(toCommand(args), options);
        if (opts.detach === true) {
          handle.disconnect();
          if (!opts.stdin) await handle.closeStdin();
          if (ctx.json) printJson(handle.info);
          else printLine(handle.id);
          return;
        }
        if (ctx.json) await writeJsonLine({ type: "started", id: handle.id, pid: handle.pid });
        const stopStdin = opts.stdin ? forwardStdin(handle) : undefined;
        if (!opts.stdin) handle.closeStdin().catch(() => undefined);
        const restoreSignals = forwardSignals(handle, ctx.json);
        try {
          const outcome = await follow(handle, sandboxId, ctx.json);
          if (outcome.kind === "exited") {
            process.exitCode = exitCodeOf(outcome.result);
          } else {
            // Nobody reads our output any more: end the process as a closed pipe would have.
            await handle.kill("SIGTERM").catch(() => undefined);
            process.exitCode = BROKEN_PIPE_EXIT;
          }
        } finally {
          restoreSignals();
          stopStdin?.();
        }
      }),
    );
}
