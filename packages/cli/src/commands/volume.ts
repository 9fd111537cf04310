/** `agentbox volume …`: persistent, size-limited directories that outlive sandboxes. */
import { Command } from "commander";
import type { Volume } from "@agentbox/sdk";
import { action } from "../context.js";
import { printFields, printJson, printLine, printTable } from "../output.js";
import { formatBytes } from "../progress.js";

function printVolume(v: Volume): void {
  printFields([
    ["NAME", v.name],
    ["STATUS", v.status],
    ["MESSAGE", v.statusMessage],
    ["SIZE", v.size],
    ["USED", formatBytes(v.usedBytes)],
    ["MOUNTED BY", v.mountedBy.length > 0 ? v.mountedBy.join(", ") : undefined],
    ["CREATED", v.createdAt],
  ]);
}

export function volumeCommand(): Command {
  const volume = new Command("volume")
    .alias("vol")
    .description("Volumes: persistent directories with a size limit, mounted into sandboxes")
    .addHelpText(
      "after",
      `
A volume has one read-write user at a time (any number of sandboxes may mount
it readOnly); its data survives sandboxes and server restarts.

Examples:
  $ agentbox volume create cache --size 2Gi
  $ agentbox sandbox create --volume cache:/cache
  $ agentbox template create builder --volume cache:/cache --volume refs:/refs:ro
  $ agentbox volume list`,
    );

  volume
    .command("create")
    .description("Create a volume")
    .argument("<name>", "volume name")
    .option("--size <size>", 'size limit, e.g. "512Mi" or "10Gi" (default 1Gi)')
    .action(
      action(async (ctx, name: string, opts: { size?: string }) => {
        const v = await ctx.client().volumes.create({ name, ...(opts.size !== undefined && { size: opts.size }) });
        if (ctx.json) printJson(v);
        else printLine(v.name);
      }),
    );

  volume
    .command("list")
    .alias("ls")
    .description("List volumes with their use")
    .action(
      action(async (ctx) => {
        const list = await ctx.client().volumes.list();
        if (ctx.json) return printJson(list);
        printTable(
          ["NAME", "STATUS", "SIZE", "USED", "MOUNTED BY"],
          list.map((v) => [v.name, v.status, v.size, formatBytes(v.usedBytes), v.mountedBy.join(",")]),
        );
      }),
    );

  volume
    .command("get")
    .alias("show")
    .description("Show one volume")
    .argument("<name>", "volume name")
    .action(
      action(async (ctx, name: string) => {
        const v = await ctx.client().volumes.get(name);
        if (ctx.json) printJson(v);
        else printVolume(v);
      }),
    );

  volume
    .command("rm")
    .alias("delete")
    .description("Delete a volume and its data (refused while a sandbox mounts it)")
    .argument("<name>", "volume name")
    .action(
      action(async (ctx, name: string) => {
        await ctx.client().volumes.delete(name);
        if (ctx.json) printJson({ deleted: name });
        else printLine(name);
      }),
    );
  return volume;
}
