/** The network rule grammar: what parses to what, and the message for what does not. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { NetworkPolicy, isIPv6, parseNetworkRule } from "../src/index.js";

test("names, wildcards, ports and addresses parse to their kinds", () => {
  assert.deepEqual(parseNetworkRule("PyPI.org"), { kind: "name", name: "pypi.org" });
  assert.deepEqual(parseNetworkRule("pypi.org."), { kind: "name", name: "pypi.org" });
  assert.deepEqual(parseNetworkRule("api.example.com:443"), { kind: "name", name: "api.example.com", port: 443 });
  assert.deepEqual(parseNetworkRule("*.example.com"), { kind: "suffix", suffix: ".example.com" });
  assert.deepEqual(parseNetworkRule("*"), { kind: "any" });
  assert.deepEqual(parseNetworkRule("*:443"), { kind: "any", port: 443 });
  assert.deepEqual(parseNetworkRule("127.0.0.1:8080"), { kind: "address", address: "127.0.0.1", family: 4, prefix: 32, port: 8080 });
  assert.deepEqual(parseNetworkRule("10.0.0.0/8"), { kind: "address", address: "10.0.0.0", family: 4, prefix: 8 });
  assert.deepEqual(parseNetworkRule("[::1]:8080"), { kind: "address", address: "::1", family: 6, prefix: 128, port: 8080 });
  assert.deepEqual(parseNetworkRule("fd00::/8"), { kind: "address", address: "fd00::", family: 6, prefix: 8 });
  assert.deepEqual(parseNetworkRule("::ffff:10.0.0.1"), { kind: "address", address: "::ffff:10.0.0.1", family: 6, prefix: 128 });
});

test("bad rules say what is wrong", () => {
  assert.equal(parseNetworkRule(""), "a rule must not be empty");
  assert.equal(parseNetworkRule("example.com:0"), '"0" is not a port (1-65535)');
  assert.equal(parseNetworkRule("example.com:70000"), '"70000" is not a port (1-65535)');
  assert.equal(parseNetworkRule("bad host"), '"bad host" is not a host name, "*.name", an address or a network');
  assert.equal(parseNetworkRule("*.*.example.com"), '"*.*.example.com" is not a host name, "*.name", an address or a network');
  assert.equal(parseNetworkRule("-x.example.com"), '"-x.example.com" is not a host name, "*.name", an address or a network');
  assert.equal(parseNetworkRule("300.1.1.1"), '"300.1.1.1" is not an IP address');
  assert.equal(parseNetworkRule("10.0.0.0/33"), '"/33" is not a prefix length (0-32)');
  assert.equal(parseNetworkRule("[::1"), '"[::1": missing "]"');
  assert.equal(parseNetworkRule("a".repeat(301)), "a rule must be at most 300 characters");
  assert.equal(isIPv6("1::2::3"), false);
  assert.equal(isIPv6("1:2:3:4:5:6:7:8"), true);
  assert.equal(isIPv6("1:2:3:4:5:6:7:8:9"), false);
});

test("the policy schema names the rule that is wrong", () => {
  const bad = NetworkPolicy.safeParse({ mode: "allowlist", allow: ["ok.example"], deny: ["x y"] });
  assert.equal(bad.success, false);
  assert.deepEqual(bad.error!.issues[0]!.path, ["deny", 0]);
  assert.equal(NetworkPolicy.safeParse({ mode: "allowlist", allow: ["a.example", "*.b.example:443"] }).success, true);
  assert.equal(NetworkPolicy.safeParse({ mode: "closed" }).success, false);
  assert.equal(NetworkPolicy.safeParse({ mode: "none", extra: 1 }).success, false);
});
