/** `agentbox sandbox …`: create, list, inspect, delete sandboxes and change their timeout. */
import { Command, Option } from "commander";
import type { Sandbox, SandboxInfo, VolumeMount } from "@agentbox/sdk";
import { action, collectKeyValue, parsePositiveInt } from "../context.js";
import { CliError, describeError, printFields, printJson, printLine, printTable } from "../output.js";
import { formatBytes } from "../progress.js";
import { collectVolume } from "./template.js";
import { formatNetwork, networkOf, withNetworkOptions, type NetworkOptions } from "./network.js";

const STATUSES = ["provisioning", "ready", "paused", "failed", "deleted"] as const;

function formatMap(map: Record<string, string> | undefined): string | undefined {
  const entries = Object.entries(map ?? {});
  return entries.length === 0 ? undefined : entries.map(([k, v]) => `${k}=${v}`).join(", ");
}

function printSandbox(info: SandboxInfo): void {
  printFields([
    ["ID", info.id],
    ["STATUS", info.status],
    ["MESSAGE", info.statusMessage],
    ["TEMPLATE", info.template],
    ["POOL", info.pool],
    ["CREATED", info.createdAt],
    ["EXPIRES", info.expiresAt],
    [
      "RESOURCES",
      info.resources
        ? `cpu=${info.resources.cpu} memory=${info.resources.memory} storage=${info.resources.storage} pids=${info.resources.pids}`
        : undefined,
    ],
    ["NETWORK", formatNetwork(info.network)],
    ["METADATA", formatMap(info.metadata)],
    ["LIMITS OFF", info.limitsOff && info.limitsOff.length > 0 ? info.limitsOff.join(", ") : undefined],
    ["VOLUMES", info.volumeMounts?.length ? info.volumeMounts.map((m) => `${m.volume}:${m.path}${m.readOnly ? ":ro" : ""}`).join(", ") : undefined],
    ["PAUSED AT", info.pausedAt],
    [
      "USAGE",
      info.usage
        ? `memory=${formatBytes(info.usage.memoryBytes)} cpu=${info.usage.cpuSeconds.toFixed(2)}s disk=${formatBytes(info.usage.diskBytes)} processes=${info.usage.processes}`
        : undefined,
    ],
  ]);
}

function failedError(sb: Sandbox): CliError {
  return new CliError("SANDBOX_NOT_READY", `sandbox ${sb.id} failed: ${sb.info.statusMessage ?? "no reason given"}`);
}

export function sandboxCommand(): Command {
  const sandbox = new Command("sandbox")
    .alias("sb")
    .description("Create, list, inspect and delete sandboxes")
    .addHelpText(
      "after",
      `
Examples:
  $ agentbox sandbox create --template default --timeout 600
  $ agentbox sandbox list --status ready
  $ agentbox sandbox rm sb-1234`,
    );

  withNetworkOptions(
    sandbox
      .command("create")
      .description("Create a sandbox and wait until it is ready; prints its id (the whole record with --json)")
      .option("-t, --template <name>", "template to create it from", undefined)
      .option("--timeout <seconds>", "delete the sandbox automatically after this many seconds (server default: 3600)", parsePositiveInt("--timeout"))
      .option("-e, --env <KEY=VALUE>", "environment variable for every command in the sandbox (repeatable)", collectKeyValue)
      .option("-m, --metadata <KEY=VALUE>", "metadata label, usable as a filter in `sandbox list` (repeatable)", collectKeyValue)
      .option("--pool <name>", "claim an idle sandbox from this pool instead")
      .option("-v, --volume <VOLUME:/path[:ro]>", "mount a volume (repeatable; add :ro for read-only)", collectVolume),
  )
    .option("--no-wait", "return at once while the sandbox is still provisioning")
    .addHelpText(
      "after",
      `
A sandbox whose creation failed is reported as an error (exit code 1).

Examples:
  $ agentbox sandbox create
  $ SB=$(agentbox sandbox create --timeout 600 --metadata owner=alice)
  $ agentbox sandbox create --template py --env PIP_INDEX_URL=http://mirror/simple --json
  $ agentbox sandbox create --pool warm                  # an idle sandbox of the pool, at once
  $ agentbox sandbox create --volume cache:/cache --volume refs:/refs:ro
  $ agentbox sandbox create --allow pypi.org --allow '*.pythonhosted.org'   # egress allowlist
  $ agentbox sandbox create --network open --timeout 600

--network, --allow and --deny replace the template's network policy (see agentbox network --help).`,
    )
    .action(
      action(async (ctx, opts: NetworkOptions & { template?: string; timeout?: number; env?: Record<string, string>; metadata?: Record<string, string>; pool?: string; volume?: VolumeMount[]; wait: boolean }) => {
        const network = networkOf(opts);
        const sb = await ctx.client().sandboxes.create({
          ...(opts.template !== undefined && { template: opts.template }),
          ...(opts.timeout !== undefined && { timeoutSeconds: opts.timeout }),
          ...(opts.env !== undefined && { env: opts.env }),
          ...(opts.metadata !== undefined && { metadata: opts.metadata }),
          ...(opts.pool !== undefined && { pool: opts.pool }),
          ...(opts.volume !== undefined && { volumeMounts: opts.volume }),
          ...(network !== undefined && { network }),
          ...(!opts.wait && { wait: false }),
        });
        if (ctx.json) {
          printJson(sb.info);
          if (sb.status === "failed") process.exitCode = 1;
          return;
        }
        if (sb.status === "failed") throw failedError(sb);
        printLine(sb.id);
      }),
    );

  sandbox
    .command("list")
    .alias("ls")
    .description("List sandboxes")
    .addOption(new Option("-s, --status <status>", "only sandboxes with this status").choices(STATUSES))
    .option("-t, --template <name>", "only sandboxes of this template")
    .option("-m, --metadata <KEY=VALUE>", "only sandboxes with this metadata label (repeatable; all must match)", collectKeyValue)
    .addHelpText(
      "after",
      `
Examples:
  $ agentbox sandbox list
  $ agentbox sandbox list --status ready --metadata owner=alice
  $ agentbox sandbox list --json | jq -r '.[].id'`,
    )
    .action(
      action(async (ctx, opts: { status?: (typeof STATUSES)[number]; template?: string; metadata?: Record<string, string> }) => {
        const list = await ctx.client().sandboxes.list({ status: opts.status, template: opts.template, metadata: opts.metadata });
        if (ctx.json) {
          printJson(list.map((sb) => sb.info));
          return;
        }
        printTable(
          ["ID", "STATUS", "TEMPLATE", "EXPIRES"],
          list.map((sb) => [sb.id, sb.status, sb.info.template, sb.info.expiresAt]),
        );
      }),
    );

  sandbox
    .command("get")
    .alias("show")
    .description("Show one sandbox")
    .argument("<id>", "sandbox id")
    .addHelpText(
      "after",
      `
Examples:
  $ agentbox sandbox get sb-1234
  $ agentbox sandbox get sb-1234 --json | jq -r .expiresAt`,
    )
    .action(
      action(async (ctx, id: string) => {
        const sb = await ctx.client().sandboxes.get(id);
        if (ctx.json) printJson(sb.info);
        else printSandbox(sb.info);
      }),
    );

  sandbox
    .command("rm")
    .alias("delete")
    .description("Delete sandboxes (their processes are killed and their files removed)")
    .argument("<id...>", "sandbox ids")
    .addHelpText(
      "after",
      `
Every id is tried; if any fails the exit code is 1.

Examples:
  $ agentbox sandbox rm sb-1234
  $ agentbox sandbox rm $(agentbox sandbox list --json | jq -r '.[].id')`,
    )
    .action(
      action(async (ctx, ids: string[]) => {
        const client = ctx.client();
        const deleted: string[] = [];
        const failed: Array<{ id: string; code: string; message: string }> = [];
        for (const id of ids) {
          try {
            // DELETE needs only the id; no need to fetch the sandbox first.
            await client.sandboxes.delete(id);
            deleted.push(id);
            if (!ctx.json) printLine(id);
          } catch (error) {
            const info = describeError(error);
            failed.push({ id, code: info.code, message: info.message });
            if (!ctx.json) process.stderr.write(`error: ${info.code}: ${id}: ${info.message}\n`);
          }
        }
        if (failed.length > 0) process.exitCode = 1;
        if (!ctx.json) return;
        if (failed.length === 0) printJson({ deleted });
        else {
          const first = failed[0]!;
          printJson({ error: { code: first.code, message: `${first.id}: ${first.message}`, details: { deleted, failed } } });
        }
      }),
    );

  sandbox
    .command("timeout")
    .description("Make a sandbox expire the given number of seconds from now")
    .argument("<id>", "sandbox id")
    .argument("<seconds>", "seconds from now", parsePositiveInt("<seconds>"))
    .addHelpText(
      "after",
      `
Examples:
  $ agentbox sandbox timeout sb-1234 3600     # keep it one more hour
  $ agentbox sandbox timeout sb-1234 60 --json`,
    )
    .action(
      action(async (ctx, id: string, seconds: number) => {
        const info = await ctx.client().sandboxes.setTimeout(id, seconds);
        if (ctx.json) printJson(info);
        else printLine(`${info.id} expires at ${info.expiresAt}`);
      }),
    );

  sandbox
    .command("pause")
    .description("Freeze every process of a sandbox (commands are refused until resume; its timeout keeps running)")
    .argument("<id>", "sandbox id")
    .action(
      action(async (ctx, id: string) => {
        const info = await (await ctx.client().sandboxes.get(id)).pause();
        if (ctx.json) printJson(info);
        else printLine(`${info.id} ${info.status}`);
      }),
    );

  sandbox
    .command("resume")
    .description("Thaw a paused sandbox: its processes continue where they stopped")
    .argument("<id>", "sandbox id")
    .action(
      action(async (ctx, id: string) => {
        const info = await (await ctx.client().sandboxes.get(id)).resume();
        if (ctx.json) printJson(info);
        else printLine(`${info.id} ${info.status}`);
      }),
    );

  sandbox
    .command("snapshot")
    .description("Save a sandbox's filesystem as a new template, layered on the sandbox's own template")
    .argument("<id>", "sandbox id")
    .argument("<template>", "name of the new template")
    .addHelpText(
      "after",
      `
The sandbox is frozen while its files are copied, then continues.

Examples:
  $ agentbox sandbox snapshot sb-1234 my-env && agentbox sandbox create --template my-env`,
    )
    .action(
      action(async (ctx, id: string, template: string) => {
        const t = await (await ctx.client().sandboxes.get(id)).snapshot(template);
        if (ctx.json) printJson(t);
        else printLine(t.name);
      }),
    );

  return sandbox;
}
