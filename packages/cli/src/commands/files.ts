/**
 * `agentbox cp`, `agentbox ls` and `agentbox watch`: files and directories between this
 * machine and a sandbox (`<sandbox>:<path>` names the sandbox side, as in `docker cp`).
 */
import { lstat, readdir, stat } from "node:fs/promises";
import path from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { Command } from "commander";
import { SANDBOX_ID_PATTERN } from "@agentbox/protocol";
import { CONNECTION_FAILED, isAgentboxError, type FileEntry, type Sandbox, type WatchEvent, type WatchHandle } from "@agentbox/sdk";
import { action, parsePositiveInt } from "../context.js";
import { CliError, printJson, printTable } from "../output.js";
import { ProgressBar, formatBytes } from "../progress.js";

interface Remote {
  sandbox: string;
  path: string;
}

/** `sb-123:/workspace/x` → remote; anything else (`./a:b`, `/tmp/x`, `-`) is local. */
export function parseRemote(arg: string): Remote | undefined {
  const colon = arg.indexOf(":");
  if (colon <= 0) return undefined;
  const sandbox = arg.slice(0, colon);
  if (!SANDBOX_ID_PATTERN.test(sandbox)) return undefined;
  return { sandbox, path: arg.slice(colon + 1) || "." };
}

async function remoteStat(sb: Sandbox, p: string): Promise<FileEntry | undefined> {
  try {
    return await sb.files.stat(p);
  } catch (error) {
    if (isAgentboxError(error, "NOT_FOUND")) return undefined;
    throw error;
  }
}

async function localSize(p: string): Promise<number> {
  const st = await lstat(p);
  if (!st.isDirectory()) return st.isFile() ? st.size : 0;
  let total = 0;
  for (const name of await readdir(p)) total += await localSize(path.join(p, name));
  return total;
}

async function localStat(p: string) {
  try {
    return await stat(p);
  } catch {
    return undefined;
  }
}

export function cpCommand(): Command {
  return new Command("cp")
    .description("Copy files or directories between this machine and a sandbox (SANDBOX:PATH names the sandbox side)")
    .argument("<source>", "local path, SANDBOX:PATH, or - (stdin, to a file)")
    .argument("<destination>", "local path, SANDBOX:PATH, or - (stdout, from a file)")
    .option("--mode <octal>", "permission bits of a file written in the sandbox (default: the local file's own; 644 from stdin)")
    .option("--no-progress", "no progress bar (it is shown only on a terminal anyway)")
    .addHelpText(
      "after",
      `
Like docker cp: copying a directory to a path that does not exist creates it
with the directory's content; to a directory that exists, puts it inside. A
file copied to an existing directory (or a path ending in /) keeps its name.
Relative sandbox paths are relative to /workspace. Directories travel as one
tar stream; what comes back from a sandbox is checked so that nothing lands
outside the destination. Large transfers show a progress bar on stderr.

Examples:
  $ agentbox cp ./data.csv $SB:/workspace/data.csv
  $ agentbox cp ./project $SB:/workspace/project
  $ agentbox cp $SB:/workspace/out/report.pdf .
  $ agentbox cp $SB:/workspace/results ./results
  $ agentbox cp $SB:/workspace/log.txt - | tail
  $ tar c . | agentbox exec $SB --stdin -- tar x -C /workspace   # the same, by hand`,
    )
    .action(
      action(async (ctx, source: string, destination: string, opts: { mode?: string; progress: boolean }) => {
        const from = parseRemote(source);
        const to = parseRemote(destination);
        if (from && to) throw new CliError("INVALID_REQUEST", "copy between two sandboxes is not supported: copy through this machine");
        if (!from && !to) throw new CliError("INVALID_REQUEST", "one side must be a sandbox path: SANDBOX:PATH");
        if (opts.mode !== undefined && !/^0?[0-7]{3,4}$/.test(opts.mode)) throw new CliError("INVALID_REQUEST", "--mode must be octal permission bits like 644");
        const client = ctx.client();
        const started = performance.now();
        let bytes = 0;
        const showProgress = opts.progress && !ctx.json;

        if (to) {
          const sb = await client.sandboxes.get(to.sandbox);
          const target = await remoteStat(sb, to.path);
          if (source === "-") {
            const bar = new ProgressBar("upload", undefined, showProgress && process.stderr.isTTY === true);
            const r = await sb.files.write(to.path, process.stdin, { ...(opts.mode ? { mode: parseInt(opts.mode, 8) } : {}), onProgress: (n) => bar.update(n) });
            bar.done();
            bytes = r.size;
          } else {
            const st = await localStat(source);
            if (!st) throw new CliError("NOT_FOUND", `${source}: no such file or directory`);
            const total = await localSize(source);
            const bar = new ProgressBar(`${path.basename(source)}`, total, showProgress && process.stderr.isTTY === true && total > 1 << 20);
            const onProgress = (n: number) => {
              bytes = n;
              bar.update(n);
            };
            if (st.isDirectory()) {
              const dest = target?.type === "dir" ? path.posix.join(to.path, path.basename(path.resolve(source))) : to.path;
              await sb.files.uploadDir(source, dest, { onProgress });
              bytes = total;
            } else {
              const dest = target?.type === "dir" || to.path.endsWith("/") ? path.posix.join(to.path, path.basename(source)) : to.path;
              const mode = opts.mode ? parseInt(opts.mode, 8) : st.mode & 0o777;
              const r = await sb.files.uploadFile(source, dest, { mode, onProgress });
              bytes = r.size;
            }
            bar.done();
          }
        } else if (from) {
          const sb = await client.sandboxes.get(from.sandbox);
          const entry = await remoteStat(sb, from.path);
          if (!entry) throw new CliError("NOT_FOUND", `${source}: no such file or directory in the sandbox`);
          if (entry.type === "dir") {
            if (destination === "-") throw new CliError("INVALID_REQUEST", "a directory cannot go to stdout (use agentbox exec … tar c)");
            const local = await localStat(destination);
            const dest = local?.isDirectory() ? path.join(destination, path.posix.basename(entry.path)) : destination;
            const bar = new ProgressBar(path.posix.basename(entry.path), undefined, showProgress && process.stderr.isTTY === true);
            await sb.files.downloadDir(from.path, dest, { onProgress: (n) => ((bytes = n), bar.update(n)) });
            bar.done();
          } else {
            // Where it goes is settled before the bytes start to flow.
            let dest: string | undefined;
            if (destination !== "-") {
              const local = await localStat(destination);
              dest = local?.isDirectory() || destination.endsWith("/") ? path.join(destination, path.posix.basename(entry.path)) : destination;
            }
            const bar = new ProgressBar(path.posix.basename(entry.path), entry.size, showProgress && process.stderr.isTTY === true && entry.size > 1 << 20 && destination !== "-");
            if (dest !== undefined) {
              const r = await sb.files.downloadFile(from.path, dest, { mode: entry.mode & 0o777, onProgress: (n) => bar.update(n) });
              bytes = r.size;
            } else {
              const stream = await sb.files.read(from.path, { format: "stream" });
              const total = Number((stream as import("node:http").IncomingMessage).headers["content-length"]);
              const count = new Transform({
                transform(chunk: Buffer, _enc, cb) {
                  bytes += chunk.length;
                  bar.update(bytes);
                  cb(null, chunk);
                },
              });
              await pipeline(stream, count, process.stdout, { end: false });
              if (Number.isFinite(total) && bytes !== total) throw new CliError("CONNECTION_FAILED", `the transfer ended after ${bytes} of ${total} bytes`);
            }
            bar.done();
          }
        }
        if (ctx.json) printJson({ source, destination, bytes, durationMs: Math.round(performance.now() - started) });
      }),
    );
}

function modeString(e: FileEntry): string {
  const t = e.type === "dir" ? "d" : e.type === "symlink" ? "l" : e.type === "file" ? "-" : "?";
  const bits = "rwxrwxrwx";
  return t + [...bits].map((c, i) => (e.mode & (1 << (8 - i)) ? c : "-")).join("");
}

export function lsCommand(): Command {
  return new Command("ls")
    .description("List a directory in a sandbox")
    .argument("<sandbox>", "sandbox id (or SANDBOX:PATH)")
    .argument("[path]", "directory (default /workspace; relative paths are relative to it)")
    .option("-l, --long", "mode, size, modification time and symlink targets")
    .option("-d, --depth <n>", "descend this many levels (1: the directory's own entries)", parsePositiveInt("--depth"), 1)
    .addHelpText(
      "after",
      `
Examples:
  $ agentbox ls $SB
  $ agentbox ls $SB /etc -l
  $ agentbox ls $SB:src --depth 3 --json | jq -r '.[].path'`,
    )
    .action(
      action(async (ctx, sandboxArg: string, dir: string | undefined, opts: { long?: boolean; depth: number }) => {
        const remote = parseRemote(sandboxArg);
        const sandboxId = remote?.sandbox ?? sandboxArg;
        const target = dir ?? remote?.path ?? ".";
        const sb = await ctx.client().sandboxes.get(sandboxId);
        const entries = await sb.files.list(target, { depth: opts.depth });
        if (ctx.json) return printJson(entries);
        entries.sort((a, b) => a.path.localeCompare(b.path));
        const shown = (e: FileEntry) => (opts.depth > 1 ? e.path : e.name) + (e.type === "dir" ? "/" : "") + (e.symlinkTarget !== undefined && opts.long ? ` -> ${e.symlinkTarget}` : "");
        if (!opts.long) {
          for (const e of entries) process.stdout.write(`${shown(e)}\n`);
          return;
        }
        printTable(
          ["MODE", "SIZE", "MODIFIED", "NAME"],
          entries.map((e) => [modeString(e), e.type === "dir" ? "-" : formatBytes(e.size), e.mtime.slice(0, 19).replace("T", " "), shown(e)]),
        );
      }),
    );
}

/** One event as a line: `create  /workspace/a.txt`, or the event's JSON with --json. */
function watchLine(e: WatchEvent, json: boolean): string {
  if (json) return JSON.stringify(e);
  if (e.type === "overflow") return "overflow  events were lost: list the directory again";
  return `${e.type.padEnd(8)}  ${e.path}${e.entry?.type === "dir" ? "/" : ""}`;
}

export function watchCommand(): Command {
  return new Command("watch")
    .description("Print changes under a directory in a sandbox as they happen, until Ctrl-C")
    .argument("<sandbox>", "sandbox id (or SANDBOX:PATH)")
    .argument("[path]", "directory (default /workspace; relative paths are relative to it)")
    .option("--no-recursive", "only the directory's own entries, not its subdirectories")
    .option("-n, --count <n>", "exit after this many events", parsePositiveInt("--count"))
    .addHelpText(
      "after",
      `
Each change is a line: create, modify, rename (once for the old path, once for the new) or
delete, then the path; directories end in "/". With --json each line is the event's JSON:
{"type","path","entry"?} as in the API. "Watching …" goes to stderr once the watcher runs, so
any change made after it appears is reported. Exits 0 on Ctrl-C or after --count events, 1 if
the watch ends otherwise (the directory or sandbox went away, the server stopped).

Examples:
  $ agentbox watch $SB src
  $ agentbox watch $SB:/tmp --no-recursive
  $ agentbox watch $SB --json | jq -r 'select(.type == "create") | .path'
  $ agentbox watch $SB out -n 1      # wait for the first change under out/`,
    )
    .action(
      action(async (ctx, sandboxArg: string, dir: string | undefined, opts: { recursive: boolean; count?: number }) => {
        const remote = parseRemote(sandboxArg);
        const sb = await ctx.client().sandboxes.get(remote?.sandbox ?? sandboxArg);
        const target = dir ?? remote?.path ?? ".";
        let seen = 0;
        let stopped = false;
        let handle: WatchHandle | undefined;
        const stop = () => {
          stopped = true;
          handle?.close();
        };
        handle = await sb.files.watch(
          target,
          (e) => {
            if (stopped) return;
            process.stdout.write(`${watchLine(e, ctx.json)}\n`);
            if (opts.count !== undefined && ++seen >= opts.count) stop();
          },
          { recursive: opts.recursive },
        );
        process.stderr.write(`Watching ${target}${opts.recursive ? "" : " (not its subdirectories)"}; Ctrl-C stops\n`);
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
        const end = await handle.closed;
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
        if (!stopped) {
          const why = end.code === 1001 ? "the server is stopping" : "the directory or its sandbox went away";
          throw new CliError(CONNECTION_FAILED, `the watch ended: ${why}`);
        }
      }),
    );
}
