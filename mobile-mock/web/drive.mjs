// Drives the browser shopper page in headless Chromium: node drive.mjs <page URL>.
// Prints one JSON line when the order is checked out and the page's WatchOrder stream has
// delivered its first message ({"event":"watching",...}), and one when the page is done
// ({"event":"done",...}); exits 1 with {"event":"error"} on failure. Chromium is
// the Debian package's (CHROMIUM overrides the path); each run gets a fresh profile.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const url = process.argv[2];
if (!url) {
  console.error("usage: node drive.mjs <page URL>");
  process.exit(2);
}
const timeoutMs = Number(process.env.DRIVE_TIMEOUT_MS ?? 60000);
const emit = (event, data) => console.log(JSON.stringify({ event, ...data }));

const profile = mkdtempSync(join(tmpdir(), "handoff-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-quic",
      "--no-first-run",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => console.error(`[page ${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => console.error(`[page error] ${e.message}`));
  page.on("requestfailed", (r) => console.error(`[request failed] ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  await page.goto(url);

  await page.waitForFunction(() => window.results && (window.results.updates.length > 0 || window.results.done), null, { timeout: timeoutMs });
  emit("watching", { results: await page.evaluate(() => window.results) });

  await page.waitForFunction(() => window.results.done, null, { timeout: timeoutMs });
  const results = await page.evaluate(() => window.results);
  const dom = await page.evaluate(() => ({
    order: document.getElementById("order")?.textContent ?? "",
    products: document.querySelectorAll("#products li").length,
    log: [...document.querySelectorAll("#log li")].map((li) => li.textContent),
  }));
  emit("done", { results, dom });
} catch (err) {
  emit("error", { message: String(err?.stack ?? err) });
  process.exitCode = 1;
} finally {
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
