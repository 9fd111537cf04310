/**
 * `agentbox network …` (a sandbox's egress rules and log) and `agentbox port …` (ports of
 * servers inside a sandbox, reachable through the agentbox server); plus the
 * `--network/--allow/--deny` options of `sandbox create` and `template create|update`.
 */
import { Command, InvalidArgumentError, Option } from "commander";
import type { EgressLogEntry, ExposedPort, NetworkPolicy } from "@agentbox/sdk";
import { action, parsePositiveInt } from "../context.js";
import { CliError, printFields, printJson, printLine, printTable } from "../output.js";
import { formatBytes } from "../progress.js";

export const NETWORK_MODES = ["none", "allowlist", "open"] as const;

export interface NetworkOptions {
  network?: NetworkPolicy["mode"];
  allow?: string[];
  deny?: string[];
}

function collectRule(value: string, previous: string[] | undefined): string[] {
  if (value.trim() === "") throw new InvalidArgumentError("a rule must not be empty");
  return [...(previous ?? []), value];
}

/** `--network <mode>`, `--allow <rule>` and `--deny <rule>` (both repeatable). */
export function withNetworkOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option("--network <mode>", "network mode: none (no network), allowlist (only what --allow names) or open").choices(NETWORK_MODES))
    .option("--allow <rule>", 'allowlist rule, e.g. "pypi.org", "*.example.com", "api.example.com:443", "10.0.0.0/8" (repeatable; implies --network allowlist)', collectRule)
    .option("--deny <rule>", "rule refused even when an --allow rule matches (repeatable)", collectRule);
}

/** The policy the options ask for, or undefined when none was given (rules alone mean allowlist). */
export function networkOf(opts: NetworkOptions): NetworkPolicy | undefined {
  if (opts.network === undefined && opts.allow === undefined && opts.deny === undefined) return undefined;
  return {
    mode: opts.network ?? "allowlist",
    ...(opts.allow !== undefined && { allow: opts.allow }),
    ...(opts.deny !== undefined && { deny: opts.deny }),
  };
}

/** `allowlist allow=a,b deny=c` for one line of `sandbox get` / `template get`. */
export function formatNetwork(network: NetworkPolicy | undefined): string | undefined {
  if (!network) return undefined;
  return [
    network.mode,
    ...(network.allow?.length ? [`allow=${network.allow.join(",")}`] : []),
    ...(network.deny?.length ? [`deny=${network.deny.join(",")}`] : []),
  ].join(" ");
}

function parsePort(value: string): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) < 1 || Number(value) > 65535) throw new InvalidArgumentError("a port is a number from 1 to 65535");
  return Number(value);
}

function printPolicy(network: NetworkPolicy): void {
  printFields([
    ["MODE", network.mode],
    ["ALLOW", network.allow?.length ? network.allow.join(" ") : network.mode === "allowlist" ? "(nothing)" : undefined],
    ["DENY", network.deny?.length ? network.deny.join(" ") : undefined],
  ]);
}

export function networkCommand(): Command {
  const network = new Command("network")
    .alias("net")
    .description("A sandbox's network: change its allowlist rules, read its egress log")
    .addHelpText(
      "after",
      `
Modes (chosen when the sandbox or template is created, fixed while it runs):
  none       no network at all (the default)
  allowlist  outgoing connections only through agentbox's egress proxy, to what the rules allow
  open       outgoing connections anywhere except the host's loopback

Rules: example.com (any port), example.com:443, *.example.com (names below it),
* (any name or public address), 10.1.2.3, 10.0.0.0/8, [::1]:8080, fd00::/8.
Private, loopback and link-local addresses are refused unless an address rule names them.
Deny rules are checked before allow rules.

Examples:
  $ SB=$(agentbox sandbox create --allow pypi.org --allow files.pythonhosted.org)
  $ agentbox exec $SB -- curl -sI https://pypi.org/simple/   # through the egress proxy (HTTPS_PROXY is set)
  $ agentbox network set $SB --allow pypi.org --allow '*.pythonhosted.org' --deny evil.pythonhosted.org
  $ agentbox network log $SB
  $ agentbox network log $SB --limit 20 --json | jq '.[] | select(.allowed | not)'`,
    );

  network
    .command("get")
    .alias("show")
    .description("Show a sandbox's network mode and rules")
    .argument("<sandbox>", "sandbox id")
    .action(
      action(async (ctx, id: string) => {
        const sb = await ctx.client().sandboxes.get(id);
        if (ctx.json) printJson(sb.info.network);
        else printPolicy(sb.info.network);
      }),
    );

  network
    .command("set")
    .description("Replace the rules of a running allowlist sandbox (they apply to its next connections)")
    .argument("<sandbox>", "sandbox id")
    .addOption(new Option("--mode <mode>", "the sandbox's mode (default: its current one; it cannot change)").choices(NETWORK_MODES))
    .option("--allow <rule>", "allow rule (repeatable); the rules given replace all current ones", collectRule)
    .option("--deny <rule>", "deny rule, checked before the allow rules (repeatable)", collectRule)
    .option("--clear", "remove every rule (nothing is allowed any more)")
    .addHelpText(
      "after",
      `
The rules given replace the sandbox's rules: repeat every rule to keep. Connections
already open are not cut; new ones follow the new rules. Prints the new rules
(the sandbox with --json).

Examples:
  $ agentbox network set $SB --allow pypi.org --allow '*.pythonhosted.org'
  $ agentbox network set $SB --allow '*' --deny '*.internal.example.com'
  $ agentbox network set $SB --allow 10.0.0.0/8:5432          # a database on the private network
  $ agentbox network set $SB --clear`,
    )
    .action(
      action(async (ctx, id: string, opts: { mode?: NetworkPolicy["mode"]; allow?: string[]; deny?: string[]; clear?: boolean }) => {
        if (opts.clear && (opts.allow !== undefined || opts.deny !== undefined)) throw new CliError("INVALID_REQUEST", "--clear removes every rule: give it without --allow or --deny");
        if (!opts.clear && opts.allow === undefined && opts.deny === undefined) {
          throw new CliError("INVALID_REQUEST", "give the new rules with --allow and/or --deny (they replace the current ones), or --clear to remove them all");
        }
        const sb = await ctx.client().sandboxes.get(id);
        const info = await sb.network.update({
          ...(opts.mode !== undefined && { mode: opts.mode }),
          ...(opts.allow !== undefined && { allow: opts.allow }),
          ...(opts.deny !== undefined && { deny: opts.deny }),
        });
        if (ctx.json) printJson(info);
        else printPolicy(info.network);
      }),
    );

  network
    .command("log")
    .description("Show the connections a sandbox asked for (allowlist mode), allowed and refused, oldest first")
    .argument("<sandbox>", "sandbox id")
    .option("-n, --limit <n>", "only the most recent entries, this many at most (server default 1000)", parsePositiveInt("--limit"))
    .addHelpText(
      "after",
      `
PROTOCOL is http (a proxied request), connect (an HTTPS or other tunnel) or socks.
OUT and IN count the bytes sent and received: the bodies of a proxied HTTP request
and its response, everything that went through a tunnel. The proxy keeps the last
1000 entries of each sandbox.

Examples:
  $ agentbox network log $SB
  $ agentbox network log $SB --limit 50 --json`,
    )
    .action(
      action(async (ctx, id: string, opts: { limit?: number }) => {
        const sb = await ctx.client().sandboxes.get(id);
        const entries = await sb.network.log(opts.limit !== undefined ? { limit: opts.limit } : {});
        if (ctx.json) return printJson(entries);
        printTable(
          ["TIME", "HOST", "PORT", "ALLOWED", "PROTOCOL", "OUT", "IN", "REASON"],
          entries.map((e: EgressLogEntry) => [e.time, e.host, String(e.port), e.allowed ? "yes" : "no", e.protocol, formatBytes(e.bytesOut), formatBytes(e.bytesIn), e.reason ?? ""]),
        );
      }),
    );

  return network;
}

export function portCommand(): Command {
  const port = new Command("port")
    .description("Exposed ports: reach a server listening inside a sandbox (HTTP and WebSocket) through agentbox")
    .addHelpText(
      "after",
      `
An exposed port's url carries its own token: whoever has the url reaches the port
and nothing else (no API key needed). Closing the port revokes the token.

Examples:
  $ agentbox run $SB -d -- python3 -m http.server 8000 --bind 127.0.0.1
  $ URL=$(agentbox port expose $SB 8000)
  $ curl "$URL"                                      # the directory listing of /workspace
  $ agentbox port list $SB
  $ agentbox port close $SB 8000`,
    );

  port
    .command("expose")
    .description("Expose a port of a sandbox; prints its url (exposing it again prints the same url)")
    .argument("<sandbox>", "sandbox id")
    .argument("<port>", "port inside the sandbox (1-65535)", parsePort)
    .addHelpText(
      "after",
      `
Nothing has to listen on the port yet; until something does, requests get 502 PORT_UNREACHABLE.
The server inside the sandbox sees the path below the url (e.g. /index.html) and an
X-Forwarded-Prefix header with the url's path.

Examples:
  $ agentbox port expose $SB 8000
  $ agentbox port expose $SB 3000 --json | jq -r .url`,
    )
    .action(
      action(async (ctx, id: string, p: number) => {
        const sb = await ctx.client().sandboxes.get(id);
        const exposed = await sb.ports.expose(p);
        if (ctx.json) printJson(exposed);
        else printLine(exposed.url);
      }),
    );

  port
    .command("list")
    .alias("ls")
    .description("List a sandbox's exposed ports with their urls")
    .argument("<sandbox>", "sandbox id")
    .action(
      action(async (ctx, id: string) => {
        const sb = await ctx.client().sandboxes.get(id);
        const list = await sb.ports.list();
        if (ctx.json) return printJson(list);
        printTable(
          ["PORT", "CREATED", "URL"],
          list.map((e: ExposedPort) => [String(e.port), e.createdAt, e.url]),
        );
      }),
    );

  port
    .command("close")
    .alias("rm")
    .description("Stop exposing a port: its url stops working")
    .argument("<sandbox>", "sandbox id")
    .argument("<port>", "exposed port", parsePort)
    .addHelpText(
      "after",
      `
A port that is not exposed is an error (NOT_FOUND, exit code 1).

Examples:
  $ agentbox port close $SB 8000`,
    )
    .action(
      action(async (ctx, id: string, p: number) => {
        const sb = await ctx.client().sandboxes.get(id);
        const result = await sb.ports.close(p);
        if (!result.closed) throw new CliError("NOT_FOUND", `port ${p} of sandbox ${id} is not exposed`);
        if (ctx.json) printJson(result);
        else printLine(String(p));
      }),
    );

  return port;
}
