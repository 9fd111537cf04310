/** Keystroke echo latency: through agentbox's terminal WebSocket, and through a raw local PTY (the baseline). */
import pty from "node-pty";
import type { Sandbox } from "@agentbox/sdk";
import { summarize, type Summary } from "./stats.js";

const KEYS = "abcdefghijklmnopqrstuvwxyz";

/** Type one key at a time into bash's readline and time until its echo comes back. */
async function measure(write: (s: string) => void, onData: (fn: (d: string) => void) => void, n: number): Promise<Summary> {
  let buffer = "";
  let waiter: (() => void) | undefined;
  onData((d) => {
    buffer += d;
    waiter?.();
  });
  const until = (pred: () => boolean) =>
    new Promise<void>((resolve) => {
      if (pred()) return resolve();
      waiter = () => {
        if (pred()) {
          waiter = undefined;
          resolve();
        }
      };
    });
  await until(() => /\$ $/.test(buffer));
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    if (i % 40 === 0 && i > 0) {
      // Clear the line (Ctrl-U) so readline's line stays short, then settle.
      buffer = "";
      write("\x15");
      await new Promise((r) => setTimeout(r, 20));
    }
    const key = KEYS[i % KEYS.length]!;
    buffer = "";
    const t = performance.now();
    write(key);
    await until(() => buffer.includes(key));
    samples.push(performance.now() - t);
  }
  return summarize(samples);
}

export async function agentboxKeystrokes(sb: Sandbox, n: number): Promise<Summary> {
  const term = await sb.terminals.create({ command: "exec bash --norc --noprofile -i", env: { PS1: "$ " } });
  const conn = await term.connect();
  try {
    return await measure((s) => conn.write(s), (fn) => conn.onData((d) => fn(d.toString("utf8"))), n);
  } finally {
    await term.delete();
  }
}

export async function rawPtyKeystrokes(n: number): Promise<Summary> {
  const p = pty.spawn("bash", ["--norc", "--noprofile", "-i"], { cols: 80, rows: 24, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", PS1: "$ ", TERM: "xterm-256color" } });
  try {
    return await measure((s) => p.write(s), (fn) => p.onData(fn), n);
  } finally {
    p.kill("SIGKILL");
  }
}
