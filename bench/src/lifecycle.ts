/**
 * Templates, pools and pause/resume, measured at the API through the SDK:
 *   - claiming a sandbox from a warm pool, against a `GET /healthz` round trip;
 *   - creating a sandbox from a 3-layer OCI template (no pool), against creating one from `host`;
 *   - pausing and resuming a sandbox that runs 50 processes, against two `GET /healthz` round trips.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Agentbox, Sandbox } from "@agentbox/sdk";
import { buildTestImages } from "@agentbox/isolation/test-images";
import { interleave, time } from "./stats.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Claims from a pool of 4; before each claim the pool is let (untimed) refill completely, so a
 * claim is measured on its own rather than against the refill's sandbox creation.
 */
export async function poolClaims(client: Agentbox, n: number): Promise<{ claim: number[]; health: number[] }> {
  await client.pools.create({ name: "bench-pool", template: "default", replicas: 4 });
  const claimed: Sandbox[] = [];
  const waitReady = async () => {
    for (;;) {
      const p = await client.pools.get("bench-pool");
      if (p.ready === p.replicas && p.provisioning === 0) return;
      await sleep(20);
    }
  };
  try {
    const [claim, health] = await interleave(
      n,
      async () => claimed.push(await client.sandboxes.create({ pool: "bench-pool" })),
      () => client.health(),
      waitReady,
    );
    return { claim, health };
  } finally {
    await client.pools.delete("bench-pool");
    await Promise.all(claimed.map((s) => s.delete()));
  }
}

/** Creates (each followed by an untimed delete) from a 3-layer OCI template and from `host`. */
export async function ociCreates(client: Agentbox, n: number): Promise<{ oci: number[]; host: number[]; importMs: number }> {
  const work = mkdtempSync(join(tmpdir(), "agentbox-bench-oci-"));
  try {
    const images = buildTestImages(work);
    const importMs = await time(async () => {
      const t = await client.templates.create({ name: "bench-oci", image: `oci:${images.layout}` });
      if (t.status !== "ready") throw new Error(`bench image failed: ${t.statusMessage}`);
    });
    const create = async (template: string) => {
      const sb = await client.sandboxes.create({ template });
      if (sb.status !== "ready") throw new Error(`create failed: ${sb.info.statusMessage}`);
      return sb;
    };
    const oci: number[] = [];
    const host: number[] = [];
    for (let i = 0; i < n; i++) {
      // Alternate which goes first, and let the runtime prepare its spare disks again between
      // rounds, so that neither pays for the other's clean-up.
      for (const [template, samples] of (i % 2 === 0 ? [["bench-oci", oci], ["default", host]] : [["default", host], ["bench-oci", oci]]) as Array<[string, number[]]>) {
        let sb!: Sandbox;
        samples.push(await time(async () => (sb = await create(template))));
        await sb.delete();
        await sleep(300);
      }
    }
    await client.templates.delete("bench-oci");
    return { oci, host, importMs };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Pause + resume of a sandbox running 50 processes, one of them a busy loop held to half a CPU:
 * a throttled process freezes only once it runs again, unless the freeze lifts the limit.
 */
export async function pauseResume(client: Agentbox, n: number): Promise<{ pauseResume: number[]; health: number[] }> {
  await client.templates.create({ name: "bench-half-cpu", resources: { cpu: "500m" } });
  const sb = await client.sandboxes.create({ template: "bench-half-cpu" });
  try {
    await sb.startProcess("for i in $(seq 49); do sleep 100000 & done; while :; do :; done", { keepOutput: false });
    for (let i = 0; i < 100 && (await sb.refresh()).usage!.processes < 3 + 50; i++) await sleep(50);
    const [pauseResume, health] = await interleave(
      n,
      async () => {
        await sb.pause();
        await sb.resume();
      },
      async () => {
        await client.health();
        await client.health();
      },
    );
    return { pauseResume, health };
  } finally {
    await sb.delete();
    await client.templates.delete("bench-half-cpu");
  }
}
