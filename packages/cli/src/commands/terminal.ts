/**
 * `agentbox shell <sandbox>`: an interactive terminal in the sandbox, in the
 * user's own terminal (raw mode, resized on SIGWINCH, Ctrl-] detaches), and
 * `agentbox terminal list|rm` for the terminals a sandbox has.
 */
import { constants } from "node:os";
import { Command } from "commander";
import type { Terminal, TerminalConnection, TerminalInfo } from "@agentbox/sdk";
import { action, collectKeyValue } from "../context.js";
import { printJson, printTable } from "../output.js";

/** Ctrl-] — the byte that detaches (as telnet's escape), never sent to the sandbox. */
export const DETACH_BYTE = 0x1d;

function size(): { cols: number; rows: number } {
  return { cols: process.stdout.columns || 80, rows: process.stdout.rows || 24 };
}

/** Relay between our terminal and the sandbox's until the program exits or the user detaches. */
async function attach(terminal: Terminal, conn: TerminalConnection, sandboxId: string): Promise<number> {
  const stdin = process.stdin;
  const raw = stdin.isTTY === true;
  let detached = false;
  const onInput = (chunk: Buffer) => {
    const at = chunk.indexOf(DETACH_BYTE);
    if (at < 0) return conn.write(chunk);
    if (at > 0) conn.write(chunk.subarray(0, at));
    detached = true;
    conn.close();
  };
  const onResize = () => {
    const { cols, rows } = size();
    conn.resize(cols, rows);
  };
  conn.onData((data) => process.stdout.write(data));
  if (raw) stdin.setRawMode(true);
  stdin.on("data", onInput);
  stdin.resume();
  process.on("SIGWINCH", onResize);
  onResize(); // the terminal may have been made (or last sized) by another client
  try {
    const exit = await conn.exited;
    if (exit.signal !== undefined) {
      const n = (constants.signals as Record<string, number | undefined>)[exit.signal];
      return n !== undefined ? 128 + n : 1;
    }
    return exit.exitCode ?? 1;
  } catch (error) {
    if (!detached) throw error;
    process.stderr.write(`\r\n[detached from terminal ${terminal.id}; reattach with: agentbox shell ${sandboxId} --attach ${terminal.id}]\r\n`);
    return 0;
  } finally {
    process.off("SIGWINCH", onResize);
    stdin.off("data", onInput);
    if (raw) stdin.setRawMode(false);
    stdin.pause();
  }
}

export function shellCommand(): Command {
  return new Command("shell")
    .description("Open an interactive terminal in a sandbox (Ctrl-] detaches; the terminal keeps running)")
    .argument("<sandbox>", "sandbox id")
    .option("--attach <terminal>", "attach to an existing terminal instead of starting one (its recent output is replayed)")
    .option("--id <terminal>", "id for the new terminal (an existing id is attached to)")
    .option("-c, --command <command>", "run this instead of a login shell")
    .option("--cwd <dir>", "starting directory (default: the template's workdir)")
    .option("-e, --env <KEY=VALUE>", "environment variable (repeatable)", collectKeyValue)
    .addHelpText(
      "after",
      `
The terminal is a PTY in the sandbox (TERM=xterm-256color, UTF-8), sized like
yours and resized with it. Press Ctrl-] to detach: the terminal and what runs
in it keep going, and \`agentbox shell <sandbox> --attach <id>\` reattaches,
replaying the recent screen. When the shell exits, so does this command, with
the shell's exit code.

Examples:
  $ agentbox shell $SB
  $ agentbox shell $SB --id build -c 'make -j2; exec bash'
  $ agentbox terminal list $SB
  $ agentbox shell $SB --attach build`,
    )
    .action(
      action(async (ctx, sandboxId: string, opts: { attach?: string; id?: string; command?: string; cwd?: string; env?: Record<string, string> }) => {
        const sb = await ctx.client().sandboxes.get(sandboxId);
        const terminal =
          opts.attach !== undefined
            ? await sb.terminals.get(opts.attach)
            : await sb.terminals.create({
                ...size(),
                ...(opts.id !== undefined ? { id: opts.id } : {}),
                ...(opts.command !== undefined ? { command: opts.command } : {}),
                ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
                ...(opts.env !== undefined ? { env: opts.env } : {}),
              });
        const conn = await terminal.connect();
        if (process.stdin.isTTY) process.stderr.write(`[terminal ${terminal.id} in ${sandboxId}; Ctrl-] detaches]\r\n`);
        process.exitCode = await attach(terminal, conn, sandboxId);
      }),
    );
}

export function terminalCommand(): Command {
  const terminal = new Command("terminal").description("List and delete a sandbox's terminals (open one with `agentbox shell`)");
  terminal
    .command("list")
    .alias("ls")
    .description("List a sandbox's terminals")
    .argument("<sandbox>", "sandbox id")
    .action(
      action(async (ctx, sandboxId: string) => {
        const list: TerminalInfo[] = await (await ctx.client().sandboxes.get(sandboxId)).terminals.list();
        if (ctx.json) return printJson(list);
        printTable(
          ["ID", "STATUS", "PID", "SIZE", "COMMAND", "CREATED"],
          list.map((t) => [
            t.id,
            t.status === "exited" ? `exited (${t.exitCode ?? t.signal})` : t.status,
            String(t.pid),
            `${t.cols}x${t.rows}`,
            t.command ?? "(login shell)",
            t.createdAt,
          ]),
        );
      }),
    );
  terminal
    .command("rm")
    .alias("delete")
    .description("Delete a terminal, killing its program and everything it started")
    .argument("<sandbox>", "sandbox id")
    .argument("<terminal>", "terminal id")
    .action(
      action(async (ctx, sandboxId: string, terminalId: string) => {
        await (await ctx.client().sandboxes.get(sandboxId)).terminals.delete(terminalId);
        if (ctx.json) printJson({ deleted: true, id: terminalId });
      }),
    );
  return terminal;
}
