/** `agentbox exec <id> -- cmd args…`: run a command in a sandbox, like it ran here. */
import { constants } from "node:os";
import { Command } from "commander";
import type { ExecOptions, ExecResult } from "@agentbox/sdk";
import { action, collectKeyValue, parsePositiveInt } from "../context.js";
import { CliError, printJson, writeAndWait } from "../output.js";

/** The exit code a shell would report: the code, 128+N for signal N, 124 for a timeout (as timeout(1)). */
export function exitCodeOf(result: Pick<ExecResult, "exitCode" | "signal" | "reason">): number {
  if (result.reason === "timeout") return 124;
  if (result.signal !== undefined) {
    const number = (constants.signals as Record<string, number | undefined>)[result.signal];
    return number !== undefined ? 128 + number : 1;
  }
  if (result.exitCode !== null) return result.exitCode;
  return 1;
}

/** One argument with a space in it is a shell command line; anything else is argv. */
export function toCommand(args: string[]): string | string[] {
  if (args.length === 1 && /\s/.test(args[0]!)) return args[0]!;
  return args;
}

/** Our whole stdin, as bytes (binary input such as a tar must arrive intact). */
async function readStdin(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export function execCommand(): Command {
  return new Command("exec")
    .description("Run a command in a sandbox and wait for it; its output and exit code become this command's")
    .argument("<id>", "sandbox id")
    .argument("<command...>", "the command and its arguments (put them after --)")
    .option("--cwd <dir>", "working directory inside the sandbox (default: the template's workdir, /workspace)")
    .option("-e, --env <KEY=VALUE>", "environment variable for this command (repeatable)", collectKeyValue)
    .option("--timeout <ms>", "kill the command after this many milliseconds (exit code 124)", parsePositiveInt("--timeout"))
    .option("--stdin", "send this command's own stdin to the command (read to the end first)")
    .showHelpAfterError("(put the command after -- when it has options of its own: agentbox exec <id> -- ls -la)")
    .addHelpText(
      "after",
      `
The arguments are run as argv, without a shell. A single argument that contains
a space is run by /bin/sh -c instead, so pipes, redirections and && work.
Each exec starts fresh: only the filesystem persists between calls.

Exit code: the command's own; 128+N if it was killed by signal N; 124 if it ran
past --timeout. The command's stdout and stderr are written unchanged (each is
capped by the server, 10 MiB by default). With --json the ExecResult
{stdout, stderr, exitCode, signal?, reason?, truncated, durationMs} is printed
instead, and the exit code is the same.

Examples:
  $ agentbox exec sb-1234 -- ls -la /workspace
  $ agentbox exec sb-1234 -- 'cd /tmp && echo $HOME | tr a-z A-Z'
  $ agentbox exec sb-1234 --timeout 5000 -- sleep 10; echo $?      # 124
  $ tar c src | agentbox exec sb-1234 --stdin -- sh -c 'wc -c'
  $ agentbox exec sb-1234 --json -- python3 -c 'print(1)' | jq .stdout`,
    )
    .action(
      action(async (ctx, id: string, args: string[], opts: { cwd?: string; env?: Record<string, string>; timeout?: number; stdin?: boolean }) => {
        if (args.length === 0) throw new CliError("INVALID_REQUEST", "no command given");
        const execOptions: ExecOptions = {};
        if (opts.cwd !== undefined) execOptions.cwd = opts.cwd;
        if (opts.env !== undefined) execOptions.env = opts.env;
        if (opts.timeout !== undefined) execOptions.timeoutMs = opts.timeout;
        const sandbox = await ctx.client().sandboxes.get(id);
        if (opts.stdin === true) execOptions.stdin = await readStdin();
        const result = await sandbox.exec(toCommand(args), execOptions);
        if (ctx.json) {
          printJson(result);
        } else {
          await writeAndWait(process.stdout, result.stdout);
          await writeAndWait(process.stderr, result.stderr);
        }
        process.exitCode = exitCodeOf(result);
      }),
    );
}
