/** Strict parsing of Kubernetes-style quantities used by template resources. */

const BINARY: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };
const DECIMAL: Record<string, number> = { "": 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };

/** "512Mi" → 536870912. Returns undefined when the text is not a quantity. */
export function parseBytes(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(text);
  if (!m) return undefined;
  const unit = m[2] ?? "";
  const factor = BINARY[unit] ?? DECIMAL[unit];
  if (factor === undefined) return undefined;
  const value = Math.floor(Number(m[1]) * factor);
  return value > 0 ? value : undefined;
}

/** "500m" → 0.5 CPUs, "2" → 2. Returns undefined when the text is not a CPU quantity. */
export function parseCpu(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(m)?$/.exec(text);
  if (!m) return undefined;
  const value = m[2] ? Number(m[1]) / 1000 : Number(m[1]);
  return value > 0 ? value : undefined;
}
