/**
 * The browser terminal page, driven in headless Chromium (Debian's `chromium`,
 * installed by `scripts/setup.sh --test`): the page loads xterm.js from the
 * server, creates a terminal, and what is typed runs in the sandbox.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chromium, type Browser } from "playwright-core";
import { startHarness, type Harness } from "./harness.js";

const CHROMIUM = process.env.AGENTBOX_CHROMIUM ?? "/usr/bin/chromium";

let h: Harness;
let browser: Browser;
let sb: string;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: run scripts/setup.sh --test as root`);
  h = await startHarness();
  sb = (await h.createSandbox()).id;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // As root in a VM: no setuid sandbox or GPU here. The page is our own.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"],
  });
});
after(async () => {
  await browser?.close();
  await h?.close();
});

async function screenText(page: import("playwright-core").Page): Promise<string> {
  return page.evaluate(() => {
    const buf = (globalThis as any).agentboxTerminal.buffer.active;
    const lines: string[] = [];
    for (let i = 0; i < buf.length; i++) lines.push(buf.getLine(i)?.translateToString(true) ?? "");
    return lines.join("\n");
  });
}

async function waitForScreen(page: import("playwright-core").Page, pattern: RegExp, ms = 15_000): Promise<string> {
  const deadline = Date.now() + ms;
  for (;;) {
    const text = await screenText(page).catch(() => "");
    if (pattern.test(text)) return text;
    if (Date.now() > deadline) throw new Error(`screen never matched ${pattern}:\n${text}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("browser terminal page", () => {
  test("typing a command in the page runs it in the sandbox and shows its output", async () => {
    const page = await browser.newPage();
    await page.goto(`${h.server.url}/ui/terminal/${sb}#token=${h.server.apiKey}`);
    await page.waitForFunction(() => (globalThis as any).agentboxTerminal !== undefined);
    await waitForScreen(page, /\$ $/m);
    // The key left the address bar once read.
    assert.equal(new URL(page.url()).hash, "");
    await page.keyboard.type("echo browser-$((6*7)) > /tmp/from-browser; cat /tmp/from-browser\n");
    await waitForScreen(page, /^browser-42$/m);
    const file = await h.exec(sb, { command: "cat /tmp/from-browser" });
    assert.equal(file.stdout, "browser-42\n");
    const list = await h.api("GET", `/v1/sandboxes/${sb}/terminals`);
    assert.equal(list.body.terminals.length, 1);
    await page.close();
  });

  test("?terminal=<id> attaches to an existing terminal and replays its screen", async () => {
    const t = await h.api("POST", `/v1/sandboxes/${sb}/terminals`, { id: "shared", command: "echo replayed-line; exec bash --norc" });
    assert.equal(t.status, 201);
    const page = await browser.newPage();
    await page.goto(`${h.server.url}/ui/terminal/${sb}?terminal=shared#token=${h.server.apiKey}`);
    await page.waitForFunction(() => (globalThis as any).agentboxTerminal !== undefined);
    await waitForScreen(page, /replayed-line/);
    await page.close();
  });

  test("without a key the page asks for one, and the API stays closed", async () => {
    const page = await browser.newPage();
    await page.goto(`${h.server.url}/ui/terminal/${sb}`);
    await page.waitForSelector("#keyform:not([hidden])");
    assert.match(await page.textContent("#status") ?? "", /enter the API key/);
    const res = await page.evaluate(async (id) => (await fetch(`/v1/sandboxes/${id}/terminals`)).status, sb);
    assert.equal(res, 401);
    await page.close();
  });
});
