/**
 * A sandbox's egress rules, compiled for matching: which (host, port) the proxy may
 * connect to, and which resolved addresses it may use. Deny rules are checked first.
 */
import { BlockList, isIP } from "node:net";
import { parseNetworkRule, type NetworkPolicy, type NetworkRule } from "@agentbox/protocol";

export type Verdict = { allowed: true } | { allowed: false; reason: string };

/** Address ranges a sandbox reaches only when a rule names them: the host's own services, LANs, metadata. */
const SPECIAL = new BlockList();
for (const [net, prefix] of [
  ["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12],
  ["192.0.0.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["224.0.0.0", 3],
] as const) SPECIAL.addSubnet(net, prefix, "ipv4");
for (const [net, prefix] of [["::", 128], ["::1", 128], ["fc00::", 7], ["fe80::", 10], ["ff00::", 8], ["64:ff9b::", 96]] as const) {
  SPECIAL.addSubnet(net, prefix, "ipv6");
}

/** Why an address is off limits by default (loopback, private, …), or undefined for a public one. */
export function specialAddress(address: string): string | undefined {
  // An IPv4-mapped IPv6 address is that IPv4 address (node's BlockList also matches them so).
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return specialAddress(mapped[1]!);
  const family = isIP(address);
  if (family === 0) return "not an address";
  if (!SPECIAL.check(address, family === 4 ? "ipv4" : "ipv6")) return undefined;
  if (family === 4) {
    if (address.startsWith("127.")) return "a loopback address";
    if (address.startsWith("169.254.")) return "a link-local address";
    return "a private or reserved address";
  }
  if (address === "::1") return "a loopback address";
  if (address.startsWith("fe8") || address.startsWith("fe9") || address.startsWith("fea") || address.startsWith("feb")) return "a link-local address";
  return "a private or reserved address";
}

function normalizeHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  if (h.endsWith(".")) h = h.slice(0, -1);
  return h;
}

interface Compiled {
  rules: NetworkRule[];
  blocks: Array<BlockList | undefined>;
}

function compile(texts: string[] | undefined): Compiled {
  const rules: NetworkRule[] = [];
  const blocks: Array<BlockList | undefined> = [];
  for (const text of texts ?? []) {
    const rule = parseNetworkRule(text);
    if (typeof rule === "string") continue; // the API refused it already
    rules.push(rule);
    if (rule.kind === "address") {
      const list = new BlockList();
      list.addSubnet(rule.address, rule.prefix, rule.family === 4 ? "ipv4" : "ipv6");
      blocks.push(list);
    } else blocks.push(undefined);
  }
  return { rules, blocks };
}

function portMatches(rule: NetworkRule, port: number): boolean {
  return rule.port === undefined || rule.port === port;
}

export class EgressPolicy {
  private readonly allow: Compiled;
  private readonly deny: Compiled;
  /** Verdicts by "host port": rules never change within one policy (a new policy is a new object). */
  private readonly hostCache = new Map<string, Verdict>();
  private readonly addressCache = new Map<string, { address: string } | { reason: string }>();

  constructor(readonly policy: NetworkPolicy) {
    this.allow = compile(policy.allow);
    this.deny = compile(policy.deny);
  }

  /** Does a rule of `list` name this host (a name, or an address literal)? */
  private static matchesHost(list: Compiled, host: string, port: number): NetworkRule | undefined {
    const family = isIP(host);
    for (let i = 0; i < list.rules.length; i++) {
      const rule = list.rules[i]!;
      if (!portMatches(rule, port)) continue;
      if (family !== 0) {
        if (rule.kind === "any" && !specialAddress(host)) return rule;
        if (rule.kind === "address" && list.blocks[i]!.check(host, family === 4 ? "ipv4" : "ipv6")) return rule;
        continue;
      }
      if (rule.kind === "any") return rule;
      if (rule.kind === "name" && rule.name === host) return rule;
      if (rule.kind === "suffix" && host.endsWith(rule.suffix)) return rule;
    }
    return undefined;
  }

  /** Does an address rule of `list` name this address? */
  private static matchesAddress(list: Compiled, address: string, port: number): boolean {
    const family = isIP(address);
    return list.rules.some(
      (rule, i) => rule.kind === "address" && portMatches(rule, port) && list.blocks[i]!.check(address, family === 4 ? "ipv4" : "ipv6"),
    );
  }

  /** May the sandbox ask for host:port at all (before resolving)? */
  checkHost(rawHost: string, port: number): Verdict {
    const key = `${rawHost} ${port}`;
    const cached = this.hostCache.get(key);
    if (cached) return cached;
    const verdict = this.checkHostUncached(rawHost, port);
    if (this.hostCache.size >= 4096) this.hostCache.clear();
    this.hostCache.set(key, verdict);
    return verdict;
  }

  private checkHostUncached(rawHost: string, port: number): Verdict {
    if (this.policy.mode !== "allowlist") return { allowed: false, reason: `network mode is ${this.policy.mode}` };
    const host = normalizeHost(rawHost);
    if (EgressPolicy.matchesHost(this.deny, host, port)) return { allowed: false, reason: `${host}:${port} matches a deny rule` };
    if (!EgressPolicy.matchesHost(this.allow, host, port)) return { allowed: false, reason: `${host}:${port} is not in the sandbox's allowlist` };
    return { allowed: true };
  }

  /**
   * Of the addresses a name resolved to, the first one the sandbox may connect to: not denied,
   * and public unless an address rule names it (so an allowed name pointing at the host's
   * loopback or a metadata service is still refused).
   */
  pickAddress(host: string, addresses: string[], port: number): { address: string } | { reason: string } {
    const key = `${host} ${port} ${addresses.join(",")}`;
    const cached = this.addressCache.get(key);
    if (cached) return cached;
    const picked = this.pickAddressUncached(host, addresses, port);
    if (this.addressCache.size >= 4096) this.addressCache.clear();
    this.addressCache.set(key, picked);
    return picked;
  }

  private pickAddressUncached(host: string, addresses: string[], port: number): { address: string } | { reason: string } {
    let reason = `${host} did not resolve to any address`;
    for (const address of addresses) {
      if (EgressPolicy.matchesAddress(this.deny, address, port)) {
        reason = `${host} resolves to ${address}, which matches a deny rule`;
        continue;
      }
      const special = specialAddress(address);
      if (special && !EgressPolicy.matchesAddress(this.allow, address, port)) {
        reason = `${host} resolves to ${address}, ${special}; allow it explicitly (e.g. "${address.includes(":") ? `[${address}]` : address}:${port}") to reach it`;
        continue;
      }
      return { address };
    }
    return { reason };
  }
}
