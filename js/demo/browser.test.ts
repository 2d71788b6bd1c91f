/**
 * The shopping-list web app in real headless Chromium (Debian's, through
 * playwright-core's executablePath; no browser download) with two browser
 * contexts (two devices with separate storage) and a third for the second
 * use of the link, against real relay processes. Playwright gives the browser
 * a fresh temporary user-data directory. Prints the time from Bob
 * opening the link to the data channel being open on both sides.
 */
import { strict as assert } from "node:assert";
import { ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { Browser, chromium, Page } from "playwright-core";
import { cleanup, Relay } from "../test/procs.js";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
let relays: Relay[] = [];
let server: ChildProcess;
let origin = "";
let browser: Browser;
const pages: Page[] = [];

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: apt-get install -y chromium, or set CHROMIUM`);
  relays = await Promise.all([Relay.start(), Relay.start()]);
  server = spawn(process.execPath, [new URL("../../demo/serve.mjs", import.meta.url).pathname, "0"], { stdio: ["ignore", "pipe", "inherit"] });
  origin = await new Promise<string>((ok) => {
    createInterface({ input: server.stdout! }).on("line", (line) => {
      const m = /^listening http=(\S+)/.exec(line);
      if (m) ok(`http://${m[1]}`);
    });
  });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      "--disable-features=WebRtcHideLocalIpsWithMdns",
    ],
  });
});

after(async () => {
  await browser?.close();
  server?.kill();
  await Promise.all(relays.map((r) => r.kill()));
  cleanup();
});

async function device(): Promise<Page> {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  pages.push(page);
  return page;
}

const items = (page: Page) => page.locator("#items li").evaluateAll((lis) => lis.map((li) => li.firstChild?.textContent ?? ""));
/** The page's test hooks (`demo` in app.ts). */
interface Demo {
  channelOpens: number[];
  log: string[];
}
const demo = <T>(page: Page, pick: (d: Demo) => T): Promise<T> => page.evaluate(`(${pick.toString()})(window.demo)`) as Promise<T>;
const opens = (page: Page) => demo(page, (d) => d.channelOpens.length);

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  // What each page did, to tell a lost message from a stuck connection.
  for (const [i, page] of pages.entries()) {
    const log = await demo(page, (d) => d.log).catch((): string[] => []);
    console.error(`page ${i} log:\n  ${log.join("\n  ")}`);
  }
  assert.fail(`timed out waiting for ${what}`);
}

test("two Chromium devices share a shopping list over WebRTC signalled through Connectoid", async () => {
  const alice = await device();
  const bob = await device();
  await alice.goto(`${origin}/?relays=${relays.map((r) => r.url).join(",")}`);
  await alice.locator("#status", { hasText: "ready" }).waitFor();
  await alice.fill("#item", "milk");
  await alice.click("#add button");
  await alice.click("#share");
  await alice.locator("#shared").waitFor();
  const link = (await alice.textContent("#link"))!;
  assert.match(link, /^http:\/\/127\.0\.0\.1:\d+\/\?connectoid=/);

  const started = performance.now();
  await bob.goto(link);
  await until("the data channel open on both sides", async () => (await opens(alice)) >= 1 && (await opens(bob)) >= 1);
  const [a, b] = await Promise.all([alice, bob].map((p) => demo(p, (d) => d.channelOpens[0]!)));
  const elapsed = performance.now() - started;
  console.log(`time from Bob opening the link to the data channel open on both sides: ${elapsed.toFixed(0)} ms (channel open at ${a!.toFixed(0)} / ${b!.toFixed(0)} ms page time)`);

  await until("milk on Bob's list", async () => (await items(bob)).includes("milk"));

  // Items added on each side appear on the other; the channel reopens per change.
  await bob.fill("#item", "eggs");
  await bob.click("#add button");
  await until("eggs on Alice's list", async () => (await items(alice)).includes("eggs"));
  await alice.fill("#item", "bread");
  await alice.click("#add button");
  await until("bread on Bob's list", async () => (await items(bob)).includes("bread"));
  assert.ok((await opens(alice)) >= 3, "the channel closed after each sync and reopened for the next change");

  // Both pages show the same safety code.
  await alice.click("#safety");
  await bob.click("#safety");
  const codeA = await alice.textContent("#code");
  const codeB = await bob.textContent("#code");
  assert.ok(codeA && codeA.length > 20);
  assert.equal(codeA, codeB);

  // A second use of the link is refused.
  const eve = await device();
  await eve.goto(link);
  await until("the second use refused on Eve's page", async () => ((await eve.textContent("#error")) ?? "").includes("this link was already used (intercepted?)"));
  assert.deepEqual((await items(bob)).sort(), ["bread", "eggs", "milk"]);

  // Unshare removes the peer on both sides.
  await alice.click("#unshare");
  await alice.locator("#peer", { hasText: "no peer" }).waitFor();
  await until("the peer removed on Bob's page", async () => ((await bob.textContent("#peer")) ?? "") === "no peer");
  await bob.locator("#status", { hasText: "the peer unshared" }).waitFor();
});
