/** Percentiles and timing helpers for the benchmarks. */
export interface Summary {
  n: number;
  p50: number;
  p95: number;
  mean: number;
}

export function summarize(samples: number[]): Summary {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { n: s.length, p50: at(0.5), p95: at(0.95), mean: s.reduce((a, b) => a + b, 0) / s.length };
}

export async function time(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

/** Run `a` and `b` alternately, `n` times each, so machine noise hits both alike (`between`, untimed, before each `a`). */
export async function interleave(
  n: number,
  a: () => Promise<unknown>,
  b: () => Promise<unknown>,
  between?: () => Promise<unknown>,
): Promise<[number[], number[]]> {
  const as: number[] = [];
  const bs: number[] = [];
  for (let i = 0; i < n; i++) {
    await between?.();
    as.push(await time(a));
    bs.push(await time(b));
  }
  return [as, bs];
}

export const fmt = (ms: number) => `${ms.toFixed(2)} ms`;
export const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(2)} MiB`;
