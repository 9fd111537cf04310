/** `agentbox run-code` (code in a context of a sandbox) and `agentbox worker` (a remote worker host). */
import { readFileSync } from "node:fs";
import { Command, Option } from "commander";
import { action, parsePositiveInt } from "../context.js";
import { CliError, printJson, writeAndWait } from "../output.js";

export function runCodeCommand(): Command {
  return new Command("run-code")
    .description("Run code in a stateful code context of a sandbox (a new one unless --context is given)")
    .argument("<sandbox>", "sandbox id")
    .argument("[file]", "file with the code; - or nothing: read it from stdin")
    .addOption(new Option("-l, --language <language>", "language of a new context").choices(["python", "javascript", "python-wasm"]).default("python"))
    .option("--context <id>", "run in this existing context (its state carries over)")
    .option("-c, --code <code>", "the code itself, instead of a file")
    .option("--timeout <ms>", "interrupt the run after this long", parsePositiveInt("--timeout"))
    .addHelpText(
      "after",
      `
Output is printed as it happens (stdout to stdout, stderr to stderr), then the
value of the last expression. An error in the code prints its traceback and
exits with 1. With --json, the Execution record is printed instead
({results, stdout, stderr, error?, executionCount}, plus the context id).

Examples:
  $ agentbox run-code sb-1234 --language python analysis.py
  $ echo '1 + 1' | agentbox run-code sb-1234
  $ CTX=$(agentbox run-code sb-1234 -c 'x = 41' --json | jq -r .context)
  $ agentbox run-code sb-1234 --context $CTX -c 'x + 1'`,
    )
    .action(
      action(async (ctx, sandboxId: string, file: string | undefined, opts: { language: "python" | "javascript" | "python-wasm"; context?: string; code?: string; timeout?: number }) => {
        const code = opts.code ?? readFileSync(file === undefined || file === "-" ? 0 : file, "utf8");
        const sb = await ctx.client().sandboxes.get(sandboxId);
        const context = opts.context ? await sb.code.getContext(opts.context) : await sb.code.createContext({ language: opts.language });
        const ex = await context.run(code, {
          ...(opts.timeout !== undefined ? { timeoutMs: opts.timeout } : {}),
          ...(ctx.json ? {} : { onStdout: (t: string) => void process.stdout.write(t), onStderr: (t: string) => void process.stderr.write(t) }),
        });
        if (ctx.json) {
          printJson({ context: context.id, ...ex });
        } else {
          const main = ex.results.find((r) => r.isMain);
          if (main?.text !== undefined) await writeAndWait(process.stdout, `${main.text}\n`);
          if (ex.error) await writeAndWait(process.stderr, ex.error.traceback || `${ex.error.name}: ${ex.error.value}\n`);
        }
        if (ex.error) process.exitCode = 1;
      }),
    );
}

export function workerCommand(): Command {
  return new Command("worker")
    .description("Host code workers for remote pools: each WebSocket connection is one Python or JavaScript worker")
    .requiredOption("--listen <addr>", "host:port to listen on (e.g. 127.0.0.1:7879)")
    .option("--token <token>", "the token clients must send (env AGENTBOX_WORKER_TOKEN)")
    .addHelpText(
      "after",
      `
Clients connect to ws://<addr>/?language=python|javascript with the header
"Authorization: Bearer <token>" and speak the worker protocol (one frame per
binary message; the text message "interrupt" interrupts the running code).
The workers run as this process's user with no sandbox of their own: run it
where that is what you want (inside a sandbox or a container).

Examples:
  $ AGENTBOX_WORKER_TOKEN=secret agentbox worker --listen 127.0.0.1:7879`,
    )
    .action(
      action(async (ctx, opts: { listen: string; token?: string }) => {
        const token = opts.token ?? process.env["AGENTBOX_WORKER_TOKEN"];
        if (!token) throw new CliError("INVALID_REQUEST", "a token is required: --token or AGENTBOX_WORKER_TOKEN");
        const m = /^(.*):(\d+)$/.exec(opts.listen);
        if (!m) throw new CliError("INVALID_REQUEST", `--listen must be host:port, got ${opts.listen}`);
        const { startWorkerServer } = await import("@agentbox/interpreter");
        const server = await startWorkerServer({ host: m[1]!.replace(/^\[|\]$/g, ""), port: Number(m[2]), token });
        if (ctx.json) printJson({ url: server.url });
        else process.stdout.write(`agentbox worker listening on ${server.url}\n`);
        const stop = () => void server.close().then(() => process.exit(0));
        process.on("SIGTERM", stop);
        process.on("SIGINT", stop);
      }),
    );
}
