// The web page in a real browser: headless Chromium driven by playwright-core.
// Run by crates/api/tests/api/browser.rs against a service it started; exits non-zero on
// the first failed expectation. Environment:
//   POSTS_API_URL     the service, e.g. http://127.0.0.1:8080
//   BROWSER_MODULES   a node_modules with playwright-core and axe-core (scripts/test)
//   CHROMIUM          the browser binary (Debian's /usr/bin/chromium)
//   ARTEFACTS         where to save screenshots

import { createRequire } from "node:module";
import { readFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import assert from "node:assert/strict";

const require = createRequire(join(process.env.BROWSER_MODULES, "/"));
const { chromium } = require("playwright-core");
const axePath = require.resolve("axe-core/axe.min.js");

const url = process.env.POSTS_API_URL;
const artefacts = process.env.ARTEFACTS;
await mkdir(artefacts, { recursive: true });

// A 1×1 PNG, previewed as an image, and a text file, downloaded and compared.
const png = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
  "base64",
);
// Over 8 MiB, so that the page sends it straight to S3 by a presigned PUT.
const notes = Buffer.from("Notes from the browser test.\n".repeat(320000));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: ["--no-sandbox"],
});
const step = (what) => console.log(`browser: ${what}`);
try {
  // bypassCSP only so that axe-core can be injected at the end; the page's own policy is
  // checked by the Rust tests and by the console listener below.
  const context = await browser.newContext({ acceptDownloads: true, bypassCSP: true });
  const page = await context.newPage();
  const problems = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(message.text());
  });
  page.on("pageerror", (error) => problems.push(error.message));
  const requested = [];
  page.on("request", (request) => requested.push(new URL(request.url()).pathname));

  await page.goto(url);
  step("page loaded");

  await page.getByRole("button", { name: "Get a development token" }).click();
  await page.getByText("Signed in as developer.").waitFor();
  step("signed in with a development token");

  await page.locator("#new-title").fill("A post from the browser");
  await page.locator("#new-body").fill("Written by the browser test.");
  await page.getByRole("button", { name: "Publish" }).click();
  const post = page.locator("#posts > li").filter({ hasText: "A post from the browser" });
  await post.waitFor();
  step("post created");

  await post.getByLabel("Add files to “A post from the browser”").setInputFiles([
    { name: "pixel.png", mimeType: "image/png", buffer: png },
    { name: "notes.txt", mimeType: "text/plain", buffer: notes },
  ]);
  await post.locator(".uploads li.done").nth(1).waitFor();
  const bars = await post.locator(".uploads progress").evaluateAll((all) => all.map((bar) => bar.value));
  assert.deepEqual(bars, [100, 100], "each progress bar reaches 100%");
  await post.locator(".uploads li").filter({ hasText: "notes.txt (straight to storage)" }).waitFor();
  await post.locator(".attachment").nth(1).waitFor();
  assert.equal(await post.locator(".attachment").count(), 2, "both files are listed");
  await post.getByAltText("Preview of pixel.png").waitFor();
  assert.ok(requested.some((path) => path.endsWith("/variants/thumb")), "the preview is the image's thumb size");
  step("two files uploaded (one through the API, one straight to S3), progress at 100%, both listed, the image previewed by its thumb after its blurhash");

  const [download] = await Promise.all([
    page.waitForEvent("download"),
    post.getByRole("button", { name: "Download notes.txt" }).click(),
  ]);
  assert.equal(download.suggestedFilename(), "notes.txt");
  const downloaded = await readFile(await download.path());
  assert.ok(downloaded.equals(notes), "the downloaded bytes are the uploaded ones");
  step("downloaded notes.txt: same bytes");

  await post.getByRole("button", { name: "Delete notes.txt" }).click();
  await page.getByText("Deleted notes.txt.").waitFor();
  assert.equal(await post.locator(".attachment").count(), 1, "the deleted file is gone");
  await page.reload();
  await page.locator("#posts > li").first().waitFor();
  const reloaded = page.locator("#posts > li").filter({ hasText: "A post from the browser" });
  assert.equal(await reloaded.locator(".attachment").count(), 1, "and stays gone");
  step("deleted notes.txt");

  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "token", "Tab reaches the token field first");

  await page.addScriptTag({ path: axePath });
  const results = await page.evaluate(() => window.axe.run(document));
  const serious = results.violations.filter((v) => ["serious", "critical"].includes(v.impact));
  for (const violation of results.violations) {
    console.log(`browser: axe ${violation.impact}: ${violation.id} (${violation.nodes.length} nodes): ${violation.help}`);
  }
  assert.deepEqual(serious.map((v) => v.id), [], "no serious or critical axe-core violations");
  step(`axe-core: ${results.passes.length} rules pass, ${results.violations.length} minor findings`);

  await page.screenshot({ path: join(artefacts, "page.png"), fullPage: true });
  await page.setViewportSize({ width: 375, height: 800 });
  await page.screenshot({ path: join(artefacts, "page-narrow.png"), fullPage: true });
  const wide = await page.evaluate(() =>
    [...document.querySelectorAll("body *")]
      .filter((element) => element.getBoundingClientRect().right > window.innerWidth)
      .map((element) => `${element.tagName.toLowerCase()}.${element.className}`));
  assert.deepEqual(wide, [], "no sideways scrolling on a narrow screen");
  step(`screenshots in ${artefacts}`);

  assert.deepEqual(problems, [], "no errors in the console");
} finally {
  await browser.close();
}
