/** `agentbox pool …`: warm pools of idle, ready sandboxes handed over at once. */
import { Command } from "commander";
import type { Pool } from "@agentbox/sdk";
import { action, parsePositiveInt } from "../context.js";
import { printFields, printJson, printLine, printTable } from "../output.js";

const parseReplicas = (value: string): number => (value === "0" ? 0 : parsePositiveInt("--replicas")(value));

function printPool(p: Pool): void {
  printFields([
    ["NAME", p.name],
    ["TEMPLATE", p.template],
    ["STATUS", p.status],
    ["MESSAGE", p.statusMessage],
    ["REPLICAS", String(p.replicas)],
    ["READY", String(p.ready)],
    ["PROVISIONING", String(p.provisioning)],
    ["FAILED", String(p.failed)],
    ["RETRY AT", p.retryAt],
    ["CREATED", p.createdAt],
  ]);
}

export function poolCommand(): Command {
  const pool = new Command("pool")
    .description("Warm pools: idle, ready sandboxes of a template, claimed in milliseconds")
    .addHelpText(
      "after",
      `
Examples:
  $ agentbox pool create warm --template default --replicas 3
  $ SB=$(agentbox sandbox create --pool warm)        # ready at once; the pool refills
  $ agentbox pool scale warm 5
  $ agentbox pool list`,
    );

  pool
    .command("create")
    .description("Create a pool")
    .argument("<name>", "pool name")
    .requiredOption("-t, --template <name>", "template of its sandboxes")
    .requiredOption("-r, --replicas <n>", "idle sandboxes to keep ready", parseReplicas)
    .action(
      action(async (ctx, name: string, opts: { template: string; replicas: number }) => {
        const p = await ctx.client().pools.create({ name, template: opts.template, replicas: opts.replicas });
        if (ctx.json) printJson(p);
        else printLine(p.name);
      }),
    );

  pool
    .command("scale")
    .description("Change how many idle sandboxes a pool keeps")
    .argument("<name>", "pool name")
    .argument("<replicas>", "idle sandboxes to keep", parseReplicas)
    .action(
      action(async (ctx, name: string, replicas: number) => {
        const p = await ctx.client().pools.update(name, { replicas });
        if (ctx.json) printJson(p);
        else printLine(`${p.name}: ${p.replicas} replicas (${p.ready} ready)`);
      }),
    );

  pool
    .command("list")
    .alias("ls")
    .description("List pools")
    .action(
      action(async (ctx) => {
        const list = await ctx.client().pools.list();
        if (ctx.json) return printJson(list);
        printTable(
          ["NAME", "TEMPLATE", "STATUS", "REPLICAS", "READY", "PROVISIONING", "FAILED"],
          list.map((p) => [p.name, p.template, p.status, String(p.replicas), String(p.ready), String(p.provisioning), String(p.failed)]),
        );
      }),
    );

  pool
    .command("get")
    .alias("show")
    .description("Show one pool (with why it backs off, if it does)")
    .argument("<name>", "pool name")
    .action(
      action(async (ctx, name: string) => {
        const p = await ctx.client().pools.get(name);
        if (ctx.json) printJson(p);
        else printPool(p);
      }),
    );

  pool
    .command("rm")
    .alias("delete")
    .description("Delete a pool and its idle sandboxes (claimed ones stay)")
    .argument("<name>", "pool name")
    .action(
      action(async (ctx, name: string) => {
        await ctx.client().pools.delete(name);
        if (ctx.json) printJson({ deleted: name });
        else printLine(name);
      }),
    );
  return pool;
}
