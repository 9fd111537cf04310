/**
 * The grammar of a sandbox's network rules (`network.allow` / `network.deny`), parsed
 * once here so the server refuses a bad rule with a message and the proxy matches the
 * same thing the server accepted.
 *
 *   example.com            that name, any port
 *   example.com:443        that name, that port
 *   *.example.com          any name below example.com (not example.com itself)
 *   *                      any name or public address
 *   10.1.2.3, 10.0.0.0/8   an address or network (may name private addresses)
 *   [::1]:8080, fd00::/8   IPv6, in brackets when a port follows
 */

export type NetworkRule =
  | { kind: "any"; port?: number }
  | { kind: "name"; name: string; port?: number }
  | { kind: "suffix"; suffix: string; port?: number }
  | { kind: "address"; address: string; family: 4 | 6; prefix: number; port?: number };

const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

export function isIPv4(text: string): boolean {
  const parts = text.split(".");
  return parts.length === 4 && parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255);
}

export function isIPv6(text: string): boolean {
  if (!/^[0-9a-fA-F:.]+$/.test(text) || !text.includes(":")) return false;
  let body = text;
  let groups = 8;
  const lastColon = body.lastIndexOf(":");
  const tail = body.slice(lastColon + 1);
  if (tail.includes(".")) {
    if (!isIPv4(tail)) return false;
    body = body.slice(0, lastColon + 1) + "0";
    groups = 7;
  }
  const halves = body.split("::");
  if (halves.length > 2) return false;
  const count = (s: string) => (s === "" ? [] : s.split(":"));
  const head = count(halves[0]!);
  const rest = halves.length === 2 ? count(halves[1]!) : [];
  if (![...head, ...rest].every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return false;
  return halves.length === 2 ? head.length + rest.length < groups : head.length === groups;
}

function parsePort(text: string): number | string {
  if (!/^[0-9]{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) return `"${text}" is not a port (1-65535)`;
  return Number(text);
}

function parseAddress(text: string, port: number | undefined): NetworkRule | string {
  const [address, prefixText, ...extra] = text.split("/");
  if (extra.length > 0 || address === undefined) return `"${text}" is not an address`;
  const family = isIPv4(address) ? 4 : isIPv6(address) ? 6 : 0;
  if (family === 0) return `"${address}" is not an IP address`;
  const max = family === 4 ? 32 : 128;
  let prefix = max;
  if (prefixText !== undefined) {
    if (!/^[0-9]{1,3}$/.test(prefixText) || Number(prefixText) > max) return `"/${prefixText}" is not a prefix length (0-${max})`;
    prefix = Number(prefixText);
  }
  return { kind: "address", address: address.toLowerCase(), family, prefix, ...(port !== undefined ? { port } : {}) };
}

/** A rule, or the reason the text is not one. */
export function parseNetworkRule(input: string): NetworkRule | string {
  const text = input.trim().toLowerCase();
  if (text === "") return "a rule must not be empty";
  if (text.length > 300) return "a rule must be at most 300 characters";
  let host = text;
  let port: number | undefined;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0) return `"${input}": missing "]"`;
    host = text.slice(1, close);
    const after = text.slice(close + 1);
    if (after !== "") {
      if (!after.startsWith(":")) return `"${input}": expected ":port" after "]"`;
      const p = parsePort(after.slice(1));
      if (typeof p === "string") return p;
      port = p;
    }
    return parseAddress(host, port);
  }
  const colons = text.split(":").length - 1;
  if (colons > 1) return parseAddress(text, undefined); // bare IPv6 (no port without brackets)
  if (colons === 1) {
    const at = text.lastIndexOf(":");
    const p = parsePort(text.slice(at + 1));
    if (typeof p === "string") return p;
    port = p;
    host = text.slice(0, at);
  }
  const withPort = port !== undefined ? { port } : {};
  if (host === "*") return { kind: "any", ...withPort };
  if (/^[0-9./]+$/.test(host)) return parseAddress(host, port);
  let wildcard = false;
  if (host.startsWith("*.")) {
    wildcard = true;
    host = host.slice(2);
  }
  if (host.endsWith(".")) host = host.slice(0, -1);
  const labels = host.split(".");
  if (host.length > 253 || !labels.every((l) => LABEL.test(l))) return `"${input}" is not a host name, "*.name", an address or a network`;
  return wildcard ? { kind: "suffix", suffix: `.${host}`, ...withPort } : { kind: "name", name: host, ...withPort };
}
