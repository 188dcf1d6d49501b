// A web app on another origin than the API, in a real browser: headless Chromium loads a
// page from a server of this script's own and, from that origin, creates a post with
// fetch, uploads a file with tus-js-client, another straight to S3 by a presigned PUT,
// and reads the post back. Run by crates/api/tests/api/browser.rs against a service it
// started with this page's origin in server.cors_allowed_origins; exits non-zero on the
// first failed expectation. Environment:
//   POSTS_API_URL     the service, e.g. http://127.0.0.1:8080
//   PAGE_PORT         the port this script serves the page on (its origin is listed)
//   TOKEN             a bearer token for the service
//   BROWSER_MODULES   a node_modules with playwright-core and tus-js-client
//   CHROMIUM          the browser binary (Debian's /usr/bin/chromium)

import { createRequire } from "node:module";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { join } from "node:path";
import assert from "node:assert/strict";

const require = createRequire(join(process.env.BROWSER_MODULES, "/"));
const { chromium } = require("playwright-core");
const tusBundle = await readFile(require.resolve("tus-js-client/dist/tus.min.js"));

const api = process.env.POSTS_API_URL;
const page = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Another origin</title>
<script src="/tus.min.js"></script></head><body><h1>A web app on another origin</h1></body></html>`;
const server = createServer((request, response) => {
  const [type, body] =
    request.url === "/tus.min.js" ? ["text/javascript", tusBundle] : ["text/html", page];
  response.writeHead(200, { "content-type": type });
  response.end(body);
});
await new Promise((listening) => server.listen(Number(process.env.PAGE_PORT), "127.0.0.1", listening));
const origin = `http://127.0.0.1:${process.env.PAGE_PORT}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: ["--no-sandbox"],
});
const step = (what) => console.log(`cross-origin: ${what}`);
try {
  const tab = await browser.newPage();
  const problems = [];
  tab.on("pageerror", (error) => problems.push(error.message));
  await tab.goto(origin);
  step(`page loaded from ${origin}`);

  const outcome = await tab.evaluate(
    async ({ api, token }) => {
      const authorization = { Authorization: `Bearer ${token}` };
      const expect = async (response, status, what) => {
        if (response.status !== status) {
          throw new Error(`${what} answered ${response.status}: ${await response.text()}`);
        }
        return response;
      };

      const created = await expect(
        await fetch(`${api}/v1/posts`, {
          method: "POST",
          headers: { ...authorization, "Content-Type": "application/json" },
          body: JSON.stringify({ title: "From another origin" }),
        }),
        201,
        "creating a post",
      );
      const post = await created.json();
      const seen = {
        location: created.headers.get("Location"),
        etag: created.headers.get("ETag"),
        requestId: created.headers.get("X-Request-Id"),
      };

      const notes = new Blob(["Sent with tus-js-client.\n".repeat(40000)], { type: "text/plain" });
      const tusUrl = await new Promise((done, failed) => {
        const upload = new tus.Upload(notes, {
          endpoint: `${api}/v1/posts/${post.id}/attachments/tus`,
          headers: authorization,
          metadata: { filename: "notes.txt", filetype: "text/plain" },
          chunkSize: 256 * 1024,
          retryDelays: [],
          onError: failed,
          onSuccess: () => done(upload.url),
        });
        upload.start();
      });

      const text = "Put straight to S3 by a presigned URL.\n".repeat(1000);
      const ticket = await (
        await expect(
          await fetch(`${api}/v1/posts/${post.id}/attachments/uploads`, {
            method: "POST",
            headers: { ...authorization, "Content-Type": "application/json" },
            body: JSON.stringify({ filename: "direct.txt", content_type: "text/plain", size: text.length }),
          }),
          201,
          "starting a direct upload",
        )
      ).json();
      // The browser sets Content-Length (the signed size) and Host itself.
      const signed = Object.fromEntries(
        Object.entries(ticket.headers).filter(([name]) => !["content-length", "host"].includes(name.toLowerCase())),
      );
      await expect(
        await fetch(ticket.url, { method: ticket.method, headers: signed, body: text }),
        200,
        "the presigned PUT",
      );
      await expect(
        await fetch(`${api}${ticket.complete_url}`, { method: "POST", headers: authorization }),
        201,
        "completing the direct upload",
      );

      const read = await (await expect(await fetch(`${api}/v1/posts/${post.id}`), 200, "reading the post")).json();
      return { seen, tusUrl, filenames: read.attachments.map((a) => a.filename).sort() };
    },
    { api, token: process.env.TOKEN },
  );

  assert.ok(outcome.seen.location?.includes("/v1/posts/"), `Location readable: ${JSON.stringify(outcome.seen)}`);
  assert.ok(outcome.seen.etag, "ETag readable");
  assert.ok(outcome.seen.requestId, "X-Request-Id readable");
  step("post created with fetch; Location, ETag and X-Request-Id readable");
  assert.ok(outcome.tusUrl?.includes("/attachments/tus/"), `tus upload URL ${outcome.tusUrl}`);
  step("uploaded with tus-js-client");
  assert.deepEqual(outcome.filenames, ["direct.txt", "notes.txt"]);
  step("uploaded by a presigned PUT; the post lists both files");
  assert.deepEqual(problems, [], "no error on the page");
} finally {
  await browser.close();
  server.close();
}
