/** `agentbox session …`: persistent shell sessions (state carries between exec calls). */
import { Command } from "commander";
import type { SessionInfo } from "@agentbox/sdk";
import { action, collectKeyValue, parsePositiveInt } from "../context.js";
import { CliError, printJson, printLine, printTable, writeAndWait } from "../output.js";
import { exitCodeOf } from "./exec.js";

export function sessionCommand(): Command {
  const session = new Command("session")
    .description("Persistent shell sessions: cd, export, functions and aliases carry between exec calls")
    .addHelpText(
      "after",
      `
Top-level \`agentbox exec\` is stateless; a session is one long-lived shell that
runs each command in turn. A command that overruns its timeout is killed with
the session's shell; the session then ends (later calls fail with
SESSION_TERMINATED, exit code 1). \`exit N\` inside a session ends it with N.

Examples:
  $ S=$(agentbox session create $SB --cwd /tmp)
  $ agentbox session exec $SB $S -- 'cd project && export MODE=dev'
  $ agentbox session exec $SB $S -- 'echo $PWD $MODE'        # /tmp/project dev
  $ agentbox session list $SB
  $ agentbox session rm $SB $S`,
    );

  session
    .command("create")
    .description("Start a session; prints its id (the whole record with --json)")
    .argument("<sandbox>", "sandbox id")
    .option("--id <id>", "your own id for the session (creating an existing id returns it)")
    .option("--cwd <dir>", "starting directory (default: the template's workdir)")
    .option("-e, --env <KEY=VALUE>", "environment variable of the shell (repeatable)", collectKeyValue)
    .option("--timeout <ms>", "default timeout of each command in the session", parsePositiveInt("--timeout"))
    .action(
      action(async (ctx, sandboxId: string, opts: { id?: string; cwd?: string; env?: Record<string, string>; timeout?: number }) => {
        const sb = await ctx.client().sandboxes.get(sandboxId);
        const s = await sb.createSession({
          ...(opts.id !== undefined ? { id: opts.id } : {}),
          ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
          ...(opts.env !== undefined ? { env: opts.env } : {}),
          ...(opts.timeout !== undefined ? { timeoutMs: opts.timeout } : {}),
        });
        if (ctx.json) printJson(s.info);
        else printLine(s.id);
      }),
    );

  session
    .command("list")
    .alias("ls")
    .description("List a sandbox's sessions")
    .argument("<sandbox>", "sandbox id")
    .action(
      action(async (ctx, sandboxId: string) => {
        const sessions: SessionInfo[] = await (await ctx.client().sandboxes.get(sandboxId)).sessions();
        if (ctx.json) return printJson(sessions);
        printTable(
          ["ID", "STATUS", "CWD", "CREATED"],
          sessions.map((s) => [s.id, s.status + (s.terminatedReason ? ` (${s.terminatedReason})` : ""), s.cwd, s.createdAt]),
        );
      }),
    );

  session
    .command("exec")
    .description("Run a command in a session; its output and exit code become this command's")
    .argument("<sandbox>", "sandbox id")
    .argument("<session>", "session id")
    .argument("<command...>", "shell source (one argument), or argv to quote (several); put it after --")
    .option("--timeout <ms>", "kill the command (and end the session) after this many milliseconds (exit code 124)", parsePositiveInt("--timeout"))
    .action(
      action(async (ctx, sandboxId: string, sessionId: string, args: string[], opts: { timeout?: number }) => {
        if (args.length === 0) throw new CliError("INVALID_REQUEST", "no command given");
        const sb = await ctx.client().sandboxes.get(sandboxId);
        const s = await sb.session(sessionId);
        const result = await s.exec(args.length === 1 ? args[0]! : args, opts.timeout !== undefined ? { timeoutMs: opts.timeout } : {});
        if (ctx.json) printJson(result);
        else {
          await writeAndWait(process.stdout, result.stdout);
          await writeAndWait(process.stderr, result.stderr);
        }
        process.exitCode = exitCodeOf(result);
      }),
    );

  session
    .command("rm")
    .alias("delete")
    .description("End a session, killing its shell and everything it started")
    .argument("<sandbox>", "sandbox id")
    .argument("<session>", "session id")
    .action(
      action(async (ctx, sandboxId: string, sessionId: string) => {
        const sb = await ctx.client().sandboxes.get(sandboxId);
        await (await sb.session(sessionId)).delete();
        if (ctx.json) printJson({ deleted: true, id: sessionId });
      }),
    );
  return session;
}
