/**
 * Values crossing between the host and the Python interpreter: a tagged JSON form
 * (every JSON object is a one-key tag: $dict, $map, $tuple, $set, $bytes, $int, $float, $repr).
 */

/** A Python tuple as the host sees it (an array that crosses back to Python as a tuple). */
export class PyTuple extends Array<unknown> {
  static fromItems(items: unknown[]): PyTuple {
    const t = new PyTuple();
    for (const x of items) t.push(x);
    return t;
  }
}

/** Keyword arguments of a Python call to a host function (passed as the last argument when present). */
export class PyKwargs {
  constructor(readonly values: Record<string, unknown>) {}
}

/** A Python value with no JS counterpart: its type name and repr. */
export interface PyOpaque {
  type: string;
  repr: string;
}

const MAX_DEPTH = 200;

/** JS value → tagged JSON value. */
export function toWire(v: unknown, depth = 0): unknown {
  if (depth > MAX_DEPTH) throw new TypeError("value is nested too deeply (or cyclic)");
  if (v === null || v === undefined) return null;
  switch (typeof v) {
    case "boolean":
    case "string":
      return v;
    case "number":
      if (Number.isNaN(v)) return { $float: "nan" };
      if (v === Infinity) return { $float: "inf" };
      if (v === -Infinity) return { $float: "-inf" };
      return v;
    case "bigint":
      return { $int: v.toString() };
    case "object":
      break;
    default:
      throw new TypeError(`a ${typeof v} cannot be sent to Python`);
  }
  if (v instanceof Uint8Array) return { $bytes: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64") };
  if (v instanceof PyTuple) return { $tuple: [...v].map((x) => toWire(x, depth + 1)) };
  if (Array.isArray(v)) return v.map((x) => toWire(x, depth + 1));
  if (v instanceof Set) return { $set: [...v].map((x) => toWire(x, depth + 1)) };
  if (v instanceof Map) return { $map: [...v].map(([k, x]) => [toWire(k, depth + 1), toWire(x, depth + 1)]) };
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) throw new TypeError(`a ${proto?.constructor?.name ?? "object"} cannot be sent to Python`);
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) out[k] = toWire(x, depth + 1);
  return { $dict: out };
}

/** Tagged JSON value → JS value. */
export function fromWire(v: unknown): unknown {
  if (v === null || typeof v !== "object") return v;
  if (Array.isArray(v)) return v.map(fromWire);
  const [tag, x] = Object.entries(v as Record<string, unknown>)[0] ?? [];
  switch (tag) {
    case "$dict": {
      const out: Record<string, unknown> = {};
      for (const [k, y] of Object.entries(x as Record<string, unknown>)) {
        Object.defineProperty(out, k, { value: fromWire(y), enumerable: true, writable: true, configurable: true });
      }
      return out;
    }
    case "$map":
      return new Map((x as [unknown, unknown][]).map(([k, y]) => [fromWire(k), fromWire(y)]));
    case "$tuple":
      return PyTuple.fromItems((x as unknown[]).map(fromWire));
    case "$set":
      return new Set((x as unknown[]).map(fromWire));
    case "$bytes":
      return new Uint8Array(Buffer.from(x as string, "base64"));
    case "$int":
      return BigInt(x as string);
    case "$float":
      return x === "nan" ? NaN : x === "inf" ? Infinity : -Infinity;
    case "$repr": {
      const [type, repr] = x as [string, string];
      return { type, repr } satisfies PyOpaque;
    }
    default:
      throw new TypeError(`unknown value tag ${String(tag)}`);
  }
}
