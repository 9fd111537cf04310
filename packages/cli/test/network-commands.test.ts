/**
 * `agentbox network` and `agentbox port` (and the --network/--allow/--deny options of
 * `sandbox create` and `template create`) as child processes against a real server, with
 * real sandboxes reaching a loopback HTTP server this test starts on the host.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { startServer, type RunningServer } from "@agentbox/server";
import { cliEnv, runCli, type CliRun } from "./run-cli.js";

let server: RunningServer;
let dataDir: string;
let work: string;
let host: Server;
let hostPort: number;
let otherPort: number;
let other: Server;

const cli = (args: string[]): Promise<CliRun> => runCli(args, { env: cliEnv(server), cwd: work });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function listen(name: string): Promise<{ server: Server; port: number }> {
  const s = createServer((req, res) => res.end(`${name} ${req.url}`));
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  return { server: s, port: (s.address() as AddressInfo).port };
}

/** Run the CLI, expect exit code 0, and return its stdout. */
async function ok(args: string[]): Promise<string> {
  const r = await cli(args);
  assert.equal(r.code, 0, `agentbox ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "agentbox-net-cli-"));
  work = mkdtempSync(join(tmpdir(), "agentbox-net-cli-work-"));
  server = await startServer({ port: 0, dataDir, keepRuntime: false });
  ({ server: host, port: hostPort } = await listen("H"));
  ({ server: other, port: otherPort } = await listen("O"));
});
after(async () => {
  host.close();
  other.close();
  await server.close();
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
});

describe("agentbox network", () => {
  test("sandbox create --allow, network set, network get, network log", async () => {
    const created = JSON.parse(await ok(["sandbox", "create", "--allow", `127.0.0.1:${hostPort}`, "--json"]));
    const sb: string = created.id;
    assert.deepEqual(created.network, { mode: "allowlist", allow: [`127.0.0.1:${hostPort}`] });
    assert.equal(await ok(["network", "get", sb]), `MODE   allowlist\nALLOW  127.0.0.1:${hostPort}\n`);
    assert.match(await ok(["sandbox", "get", sb]), new RegExp(`\\nNETWORK +allowlist allow=127\\.0\\.0\\.1:${hostPort}\\n`));
    const curl = async (port: number, path: string) => ok(["exec", sb, "--", "curl", "-s", "--noproxy", "", "-w", " %{http_code}", `http://127.0.0.1:${port}${path}`]);
    assert.equal(await curl(hostPort, "/a"), "H /a 200");
    assert.equal(await curl(otherPort, "/b"), `127.0.0.1:${otherPort} is not in the sandbox's allowlist\n 403`);

    // New rules (the mode stays the sandbox's own); the next request follows them.
    const set = await ok(["network", "set", sb, "--allow", "127.0.0.0/8", "--deny", `127.0.0.1:${hostPort}`]);
    assert.equal(set, `MODE   allowlist\nALLOW  127.0.0.0/8\nDENY   127.0.0.1:${hostPort}\n`);
    assert.equal(await curl(otherPort, "/c"), "O /c 200");
    assert.equal(await curl(hostPort, "/d"), `127.0.0.1:${hostPort} matches a deny rule\n 403`);
    const setJson = JSON.parse(await ok(["network", "set", sb, "--allow", `127.0.0.1:${hostPort}`, "--allow", `127.0.0.1:${otherPort}`, "--json"]));
    assert.equal(setJson.id, sb);
    assert.deepEqual(setJson.network, { mode: "allowlist", allow: [`127.0.0.1:${hostPort}`, `127.0.0.1:${otherPort}`] });
    assert.deepEqual(JSON.parse(await ok(["network", "get", sb, "--json"])), setJson.network);
    assert.equal(await curl(hostPort, "/e"), "H /e 200");

    // Refusals: no rules given, a mode change, a bad rule.
    const none = await cli(["network", "set", sb]);
    assert.equal(none.code, 1);
    assert.equal(none.stderr, "error: INVALID_REQUEST: give the new rules with --allow and/or --deny (they replace the current ones), or --clear to remove them all\n");
    const mode = await cli(["network", "set", sb, "--mode", "open", "--allow", "*"]);
    assert.equal(mode.code, 1);
    assert.match(mode.stderr, /^error: CONFLICT: sandbox \S+ runs with network mode "allowlist", which cannot change/);
    const bad = await cli(["network", "set", sb, "--allow", "bad host", "--json"]);
    assert.equal(bad.code, 1);
    const badBody = JSON.parse(bad.stdout);
    assert.equal(badBody.error.code, "INVALID_REQUEST");
    assert.match(badBody.error.message, /network\.allow\.0/);

    // The log, as JSON (exact entries) and as a table.
    const entries = JSON.parse(await ok(["network", "log", sb, "--json"])) as Array<Record<string, unknown>>;
    for (const e of entries) assert.ok(Math.abs(Date.now() - Date.parse(String(e["time"]))) < 120_000);
    const allowed = (port: number, body: string) => ({ host: "127.0.0.1", port, allowed: true, address: "127.0.0.1", protocol: "http", bytesOut: 0, bytesIn: body.length });
    const refused = (port: number, reason: string) => ({ host: "127.0.0.1", port, allowed: false, reason, protocol: "http", bytesOut: 0, bytesIn: 0 });
    assert.deepEqual(
      entries.map(({ time: _time, ...rest }) => rest),
      [
        allowed(hostPort, "H /a"),
        refused(otherPort, `127.0.0.1:${otherPort} is not in the sandbox's allowlist`),
        allowed(otherPort, "O /c"),
        refused(hostPort, `127.0.0.1:${hostPort} matches a deny rule`),
        allowed(hostPort, "H /e"),
      ],
    );
    assert.deepEqual(JSON.parse(await ok(["network", "log", sb, "--limit", "1", "--json"])), entries.slice(-1));
    const table = (await ok(["network", "log", sb])).split("\n");
    assert.match(table[0]!, /^TIME +HOST +PORT +ALLOWED +PROTOCOL +OUT +IN +REASON$/);
    assert.equal(table.length, 7, "a header, five entries and the final newline");
    assert.match(table[1]!, new RegExp(`^${String(entries[0]!["time"]).replace(/\./g, "\\.")} +127\\.0\\.0\\.1 +${hostPort} +yes +http +0 B +4 B$`));
    assert.match(table[2]!, new RegExp(`^\\S+ +127\\.0\\.0\\.1 +${otherPort} +no +http +0 B +0 B +127\\.0\\.0\\.1:${otherPort} is not in the sandbox's allowlist$`));
    assert.match(table[4]!, new RegExp(`  no +http +0 B +0 B +127\\.0\\.0\\.1:${hostPort} matches a deny rule$`));
    const limitBad = await cli(["network", "log", sb, "--limit", "0"]);
    assert.equal(limitBad.code, 1);
    assert.match(limitBad.stderr, /--limit must be a positive integer/);
  });

  test("template create --network/--allow/--deny, and --network none", async () => {
    const t = JSON.parse(await ok(["template", "create", "egress", "--allow", "pypi.org", "--allow", "*.pythonhosted.org", "--deny", "evil.pythonhosted.org", "--json"]));
    assert.deepEqual(t.network, { mode: "allowlist", allow: ["pypi.org", "*.pythonhosted.org"], deny: ["evil.pythonhosted.org"] });
    assert.match(await ok(["template", "get", "egress"]), /\nNETWORK +allowlist allow=pypi\.org,\*\.pythonhosted\.org deny=evil\.pythonhosted\.org\n/);
    const sb = JSON.parse(await ok(["sandbox", "create", "--template", "egress", "--json"]));
    assert.deepEqual(sb.network, t.network);
    // A create option replaces the template's policy.
    const closed = JSON.parse(await ok(["sandbox", "create", "--template", "egress", "--network", "none", "--json"]));
    assert.deepEqual(closed.network, { mode: "none" });
    const bad = await cli(["sandbox", "create", "--network", "wide"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /argument 'wide' is invalid\. Allowed choices are none, allowlist, open/);
    await ok(["sandbox", "rm", sb.id, closed.id]);
  });
});

describe("agentbox port", () => {
  test("expose, list, close a port served inside the sandbox", async () => {
    const sb = (await ok(["sandbox", "create"])).trim();
    await ok(["exec", sb, "--", "sh", "-c", "echo 'served from the sandbox' > /workspace/index.txt"]);
    assert.equal(await ok(["run", sb, "--id", "web", "-d", "--", "python3", "-m", "http.server", "8000", "--bind", "127.0.0.1", "--directory", "/workspace"]), "web\n");

    const url = (await ok(["port", "expose", sb, "8000"])).trim();
    const parsed = new URL(url);
    assert.equal(parsed.origin, server.url);
    assert.equal(parsed.pathname, `/v1/sandboxes/${sb}/ports/8000/`);
    assert.match(parsed.searchParams.get("token") ?? "", /^[A-Za-z0-9_-]{32}$/);
    const exposed = JSON.parse(await ok(["port", "expose", sb, "8000", "--json"]));
    assert.equal(exposed.port, 8000);
    assert.equal(exposed.url, url, "exposing again gives the same url");

    // The url alone reaches the server once it listens.
    const file = url.replace("/?", "/index.txt?");
    let res = await fetch(file);
    for (let i = 0; i < 200 && res.status === 502; i++) {
      await res.body?.cancel();
      await sleep(50);
      res = await fetch(file);
    }
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "served from the sandbox\n");

    const nothing = JSON.parse(await ok(["port", "expose", sb, "9000", "--json"]));
    const listed = JSON.parse(await ok(["port", "list", sb, "--json"]));
    assert.deepEqual(listed, [exposed, nothing]);
    const table = (await ok(["port", "list", sb])).split("\n");
    assert.match(table[0]!, /^PORT +CREATED +URL$/);
    assert.equal(table[1], `8000  ${exposed.createdAt}  ${exposed.url}`);
    assert.equal(table[2], `9000  ${nothing.createdAt}  ${nothing.url}`);
    assert.equal((await fetch(nothing.url)).status, 502);

    assert.equal(await ok(["port", "close", sb, "8000"]), "8000\n");
    assert.equal((await fetch(file)).status, 404);
    assert.deepEqual(JSON.parse(await ok(["port", "close", sb, "9000", "--json"])), { port: 9000, closed: true });
    assert.deepEqual(JSON.parse(await ok(["port", "list", sb, "--json"])), []);
    const again = await cli(["port", "close", sb, "8000"]);
    assert.equal(again.code, 1);
    assert.equal(again.stderr, `error: NOT_FOUND: port 8000 of sandbox ${sb} is not exposed\n`);
    const badPort = await cli(["port", "expose", sb, "70000"]);
    assert.equal(badPort.code, 1);
    assert.match(badPort.stderr, /a port is a number from 1 to 65535/);
    await ok(["sandbox", "rm", sb]);
  });
});
