/** `agentbox serve`: run the agentbox server in the foreground. */
import { Command, InvalidArgumentError } from "commander";
import { action } from "../context.js";
import { printLine, reportError } from "../output.js";

function parsePort(value: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value) || port > 65535) throw new InvalidArgumentError("must be a port number (0-65535)");
  return port;
}

interface ServeOptions {
  host?: string;
  port?: number;
  dataDir?: string;
  keepRuntime: boolean;
  imageRoot?: string[];
}

export function serveCommand(): Command {
  const command = new Command("serve")
    .description("Run the agentbox server (HTTP API) in the foreground")
    .option("--host <host>", "address to listen on (env AGENTBOX_HOST, default 127.0.0.1)")
    .option("--port <port>", "port to listen on; 0 picks a free one (env AGENTBOX_PORT, default 7878)", parsePort)
    .option("--data-dir <dir>", "where the server keeps its state and API key (env AGENTBOX_DATA_DIR, default ./.agentbox)")
    .option("--no-keep-runtime", "stop the runtime, and with it every sandbox, when the server stops")
    .option(
      "--image-root <dir>",
      "a host directory whose images templates may import by path, dir:… or oci:… (repeatable; env AGENTBOX_IMAGE_ROOTS, colon-separated; default none: images are uploaded)",
      (v: string, prev: string[] | undefined) => [...(prev ?? []), v],
    )
    .addHelpText(
      "after",
      `
The sandboxes live in a separate runtime process, not in the server. By default
the runtime keeps running when the server stops (Ctrl-C, SIGTERM, a crash), so
sandboxes and their processes survive and a server restarted with the same
--data-dir finds them again. With --no-keep-runtime, stopping the server also
stops the runtime and ends every sandbox.

On first start the server creates an API key, stores it in <data dir>/api-key
(mode 0600) and prints it; AGENTBOX_API_KEY, if set, is used instead. The CLI on
the same machine reads that file by itself (set AGENTBOX_DATA_DIR to match).
Several servers can run at once with different --data-dir and --port.

Templates get OCI images uploaded through the API (\`agentbox template import\`
does that). A template may name a path on this machine (image "dir:/path" or
"oci:/path") only under an --image-root: the runtime reads it as root.

Output: "agentbox listening on <url>" and "API key: <key>" (with --json, one
line {"url","apiKey"}).

Examples:
  $ agentbox serve
  $ agentbox serve --port 8080 --data-dir /var/lib/agentbox
  $ agentbox serve --host 0.0.0.0 --no-keep-runtime
  $ agentbox serve --image-root /srv/images       # templates may use oci:/srv/images/…
  $ AGENTBOX_API_KEY=secret agentbox serve --json`,
    )
    .action(
      action(async (ctx, opts: ServeOptions) => {
        const options: { host?: string; port?: number; dataDir?: string; keepRuntime?: boolean; imageRoots?: string[] } = {};
        if (opts.imageRoot !== undefined) options.imageRoots = opts.imageRoot;
        if (opts.host !== undefined) options.host = opts.host;
        if (opts.port !== undefined) options.port = opts.port;
        if (opts.dataDir !== undefined) options.dataDir = opts.dataDir;
        if (command.getOptionValueSource("keepRuntime") === "cli") options.keepRuntime = opts.keepRuntime;

        // Loaded here so the client commands never load the server and its native modules.
        const { startServer } = await import("@agentbox/server");
        let server: Awaited<ReturnType<typeof startServer>>;
        try {
          server = await startServer(options);
        } catch (error) {
          // Exit even if the failed start left handles open (a runtime link, a timer).
          reportError(error, ctx.json);
          process.exit(1);
        }
        if (ctx.json) printLine(JSON.stringify({ url: server.url, apiKey: server.apiKey }));
        else {
          printLine(`agentbox listening on ${server.url}`);
          printLine(`API key: ${server.apiKey}`);
        }

        let closing = false;
        const stop = (signal: NodeJS.Signals): void => {
          if (closing) {
            process.stderr.write(`received ${signal} again, exiting without waiting\n`);
            process.exit(1);
          }
          closing = true;
          server.close().then(
            () => process.exit(0),
            (error: unknown) => {
              reportError(error, ctx.json);
              process.exit(1);
            },
          );
        };
        process.on("SIGTERM", stop);
        process.on("SIGINT", stop);
      }),
    );
  return command;
}
