/** `agentbox template …`: create, import, build, list, inspect, change and delete templates. */
import { existsSync, statSync } from "node:fs";
import path from "node:path";
import { Command, InvalidArgumentError } from "commander";
import type { Agentbox, CreateTemplateRequest, Template, VolumeMount } from "@agentbox/sdk";
import { action, collectKeyValue, parsePositiveInt } from "../context.js";
import { CliError, printFields, printJson, printLine, printTable, writeAndWait } from "../output.js";
import { ProgressBar, formatBytes } from "../progress.js";
import { formatNetwork, networkOf, withNetworkOptions, type NetworkOptions } from "./network.js";

/** `name:/path` or `name:/path:ro`, repeatable. */
export function collectVolume(value: string, previous: VolumeMount[] | undefined): VolumeMount[] {
  const m = /^([^:]+):(\/[^:]*)(?::(ro|rw))?$/.exec(value);
  if (!m) throw new InvalidArgumentError(`expected VOLUME:/path[:ro], got "${value}"`);
  return [...(previous ?? []), { volume: m[1]!, path: m[2]!, ...(m[3] === "ro" ? { readOnly: true } : {}) }];
}

interface SpecOptions extends NetworkOptions {
  image?: string;
  cpu?: string;
  memory?: string;
  storage?: string;
  pids?: number;
  env?: Record<string, string>;
  volume?: VolumeMount[];
  user?: string;
  workdir?: string;
}

function withSpecOptions(cmd: Command, withImage: boolean): Command {
  if (withImage) cmd.option("--image <ref>", 'image: "host" (default), "dir:<rootfs dir>" or "oci:<OCI layout dir or tar, or docker save archive>"');
  cmd
    .option("--cpu <quantity>", 'CPU limit, e.g. "500m" or "2"')
    .option("--memory <size>", 'memory limit, e.g. "512Mi"')
    .option("--storage <size>", 'disk size of each sandbox, e.g. "1Gi"')
    .option("--pids <n>", "process limit", parsePositiveInt("--pids"))
    .option("-e, --env <KEY=VALUE>", "environment variable (repeatable)", collectKeyValue)
    .option("-v, --volume <VOLUME:/path[:ro]>", "mount a volume in every sandbox (repeatable)", collectVolume)
    .option("--user <name|uid>", "user commands run as (never root)")
    .option("--workdir <path>", "default working directory");
  return withNetworkOptions(cmd);
}

function specOf(opts: SpecOptions): Omit<CreateTemplateRequest, "name"> {
  const resources = {
    ...(opts.cpu !== undefined && { cpu: opts.cpu }),
    ...(opts.memory !== undefined && { memory: opts.memory }),
    ...(opts.storage !== undefined && { storage: opts.storage }),
    ...(opts.pids !== undefined && { pids: opts.pids }),
  };
  const network = networkOf(opts);
  return {
    ...(opts.image !== undefined && { image: opts.image }),
    ...(Object.keys(resources).length > 0 && { resources }),
    ...(opts.env !== undefined && { env: opts.env }),
    ...(opts.volume !== undefined && { volumeMounts: opts.volume }),
    ...(network !== undefined && { network }),
    ...(opts.user !== undefined && { user: opts.user }),
    ...(opts.workdir !== undefined && { workdir: opts.workdir }),
  };
}

function printTemplate(t: Template): void {
  printFields([
    ["NAME", t.name],
    ["STATUS", t.status],
    ["MESSAGE", t.statusMessage],
    ["IMAGE", t.image],
    ["PARENT", t.parent],
    ["LAYERS", String(t.layers)],
    ["RESOURCES", `cpu=${t.resources.cpu} memory=${t.resources.memory} storage=${t.resources.storage} pids=${t.resources.pids}`],
    ["USER", t.user],
    ["WORKDIR", t.workdir],
    ["ENV", Object.keys(t.env).length > 0 ? Object.entries(t.env).map(([k, v]) => `${k}=${v}`).join(", ") : undefined],
    ["VOLUMES", t.volumeMounts.length > 0 ? t.volumeMounts.map((m) => `${m.volume}:${m.path}${m.readOnly ? ":ro" : ""}`).join(", ") : undefined],
    ["NETWORK", formatNetwork(t.network)],
    ["CREATED", t.createdAt],
  ]);
}

/** Print the template, or fail (exit 1) if it failed. */
function report(t: Template, json: boolean): void {
  if (json) {
    printJson(t);
    if (t.status === "failed") process.exitCode = 1;
    return;
  }
  if (t.status === "failed") throw new CliError("INVALID_REQUEST", `template ${t.name} failed: ${t.statusMessage ?? "no reason given"}`);
  printLine(t.name);
}

/** Wait for an import, drawing a progress bar of the bytes read. */
async function waitWithProgress(client: Agentbox, name: string, json: boolean): Promise<Template> {
  const bar = new ProgressBar(`import ${name}`, undefined, !json && process.stderr.isTTY === true);
  let last: Template["progress"];
  const t = await client.templates.waitUntilSettled(name, {
    intervalMs: 100,
    onProgress: (t) => {
      if (!t.progress) return;
      last = t.progress;
      bar.update(t.progress.bytesDone, t.progress.bytesTotal || undefined);
    },
  });
  // The last poll may have come before the end: a finished import is all of its bytes.
  if (t.status === "ready" && last) bar.update(last.bytesTotal, last.bytesTotal);
  if (last) bar.done();
  return t;
}

export function templateCommand(): Command {
  const template = new Command("template")
    .alias("tpl")
    .description("Templates: the image, resources, env, user, workdir and volumes sandboxes are made from")
    .addHelpText(
      "after",
      `
Examples:
  $ agentbox template create small --memory 256Mi --cpu 500m --pids 128
  $ agentbox template import busybox ./busybox-oci.tar       # OCI layout (dir or tar) or docker save archive
  $ agentbox template build py-deps --from default --run "pip install --user requests"
  $ agentbox template list
  $ agentbox sandbox create --template small`,
    );

  withSpecOptions(template.command("create").description("Create a template (waits until its image is imported)").argument("<name>", "template name"), true)
    .option("--no-wait", "return at once while the image is imported")
    .addHelpText(
      "after",
      `
Examples:
  $ agentbox template create small --memory 256Mi --cpu 500m
  $ agentbox template create data --volume cache:/cache --volume refs:/refs:ro
  $ agentbox template create pip --allow pypi.org --allow files.pythonhosted.org   # egress allowlist
  $ agentbox template create alpine --image oci:/srv/images/alpine.tar --json`,
    )
    .action(
      action(async (ctx, name: string, opts: SpecOptions & { wait: boolean }) => {
        const client = ctx.client();
        const t = await client.templates.create({ name, ...specOf(opts), wait: false });
        if (!opts.wait) return report(t, ctx.json);
        report(await waitWithProgress(client, name, ctx.json), ctx.json);
      }),
    );

  withSpecOptions(
    template
      .command("import")
      .description("Create a template from a local image: an OCI layout (directory or tar) or a docker save archive, uploaded to the server")
      .argument("<name>", "template name")
      .argument("<path>", "the image on this machine")
      .option("--server-path", "do not upload: the server reads <path> itself (it must be under one of the server's --image-root directories; a plain root filesystem directory is imported this way)"),
    false,
  )
    .addHelpText(
      "after",
      `
Shows progress bars for the upload and for the import on the server. Layers are
stored once, by digest: templates of images that share layers share them on disk.

Examples:
  $ skopeo copy docker-archive:app.tar oci:app-oci:latest && agentbox template import app ./app-oci
  $ agentbox template import app ./app-docker-save.tar --memory 1Gi
  $ agentbox template import base /srv/images/rootfs --server-path   # a root filesystem directory under an --image-root`,
    )
    .action(
      action(async (ctx, name: string, imagePath: string, opts: SpecOptions & { serverPath?: boolean }) => {
        const abs = path.resolve(imagePath);
        const client = ctx.client();
        let image: string;
        if (opts.serverPath) {
          const isRootfsDir = existsSync(abs) && statSync(abs).isDirectory() && !existsSync(path.join(abs, "oci-layout")) && !existsSync(path.join(abs, "manifest.json"));
          image = `${isRootfsDir ? "dir" : "oci"}:${abs}`;
        } else {
          if (!existsSync(abs)) throw new CliError("NOT_FOUND", `${imagePath}: no such file or directory`);
          const bar = new ProgressBar(`upload ${name}`, undefined, !ctx.json && process.stderr.isTTY === true);
          ({ image } = await client.templates.uploadImage(abs, { onProgress: (n, total) => bar.update(n, total) }));
          bar.done();
        }
        await client.templates.create({ name, ...specOf(opts), image, wait: false });
        report(await waitWithProgress(client, name, ctx.json), ctx.json);
      }),
    );

  template
    .command("build")
    .description("Build a template by running commands in a temporary sandbox of another template, then snapshotting it")
    .argument("<name>", "new template name")
    .requiredOption("--from <template>", "template to start from")
    .option("--run <command>", "command run by /bin/sh -c (repeatable, in order)", (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .option("--timeout <ms>", "time limit of each command", parsePositiveInt("--timeout"))
    .addHelpText(
      "after",
      `
Each command's output is shown on stderr as it runs. A command that exits
non-zero stops the build (exit code 1) and no template is made.

Examples:
  $ agentbox template build tools --from default --run "mkdir -p ~/bin" --run "cp /usr/bin/jq ~/bin/"
  $ agentbox template build data --from default --run "echo 42 > /workspace/answer" --json`,
    )
    .action(
      action(async (ctx, name: string, opts: { from: string; run?: string[]; timeout?: number }) => {
        const client = ctx.client();
        const sb = await client.sandboxes.create({ template: opts.from, timeoutSeconds: 3600 });
        try {
          if (sb.status !== "ready") throw new CliError("SANDBOX_NOT_READY", `build sandbox failed: ${sb.info.statusMessage ?? sb.status}`);
          const steps = opts.run ?? [];
          for (const [i, command] of steps.entries()) {
            if (!ctx.json) await writeAndWait(process.stderr, `step ${i + 1}/${steps.length}: ${command}\n`);
            // The callbacks go in with the start: output that comes before any later line could register them is not lost.
            const proc = await sb.startProcess(command, {
              ...(opts.timeout !== undefined && { timeoutMs: opts.timeout }),
              keepOutput: false,
              onStdout: (text) => void (!ctx.json && process.stderr.write(text)),
              onStderr: (text) => void (!ctx.json && process.stderr.write(text)),
            });
            await proc.closeStdin().catch(() => undefined);
            const result = await proc.wait();
            if (result.exitCode !== 0) {
              throw new CliError("INVALID_REQUEST", `step ${i + 1} (${command}) failed with ${result.exitCode === null ? `signal ${result.signal ?? "?"}` : `exit code ${result.exitCode}`}`);
            }
          }
          const t = await sb.snapshot(name);
          if (ctx.json) printJson(t);
          else printLine(t.name);
        } finally {
          await sb.delete().catch(() => undefined);
        }
      }),
    );

  template
    .command("list")
    .alias("ls")
    .description("List templates")
    .action(
      action(async (ctx) => {
        const list = await ctx.client().templates.list();
        if (ctx.json) return printJson(list);
        printTable(
          ["NAME", "STATUS", "IMAGE", "LAYERS", "CPU", "MEMORY", "STORAGE", "PIDS"],
          list.map((t) => [t.name, t.status, t.parent ? `snapshot of ${t.parent}` : t.image, String(t.layers), t.resources.cpu, t.resources.memory, t.resources.storage, String(t.resources.pids)]),
        );
      }),
    );

  template
    .command("get")
    .alias("show")
    .description("Show one template (with import progress while it is provisioning)")
    .argument("<name>", "template name")
    .action(
      action(async (ctx, name: string) => {
        const t = await ctx.client().templates.get(name);
        if (ctx.json) return printJson(t);
        printTemplate(t);
        if (t.progress) printLine(`PROGRESS  layer ${t.progress.layersDone}/${t.progress.layersTotal}, ${formatBytes(t.progress.bytesDone)} of ${formatBytes(t.progress.bytesTotal)}`);
      }),
    );

  withSpecOptions(template.command("update").description("Change a template; sandboxes created afterwards get the change").argument("<name>", "template name"), true)
    .addHelpText(
      "after",
      `
Examples:
  $ agentbox template update small --memory 1Gi
  $ agentbox template update default --env HTTP_TIMEOUT=30
  $ agentbox template update pip --allow pypi.org --allow '*.pythonhosted.org'    # replaces its network policy`,
    )
    .action(
      action(async (ctx, name: string, opts: SpecOptions) => {
        const client = ctx.client();
        let t = await client.templates.update(name, { ...specOf(opts), wait: false });
        if (t.status === "provisioning") t = await waitWithProgress(client, name, ctx.json);
        report(t, ctx.json);
      }),
    );

  template
    .command("rm")
    .alias("delete")
    .description("Delete a template (its layers are removed once nothing uses them)")
    .argument("<name>", "template name")
    .action(
      action(async (ctx, name: string) => {
        await ctx.client().templates.delete(name);
        if (ctx.json) printJson({ deleted: name });
        else printLine(name);
      }),
    );

  return template;
}
