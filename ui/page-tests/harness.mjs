// Page tests: the built UI (ui/dist) in headless Chromium (Debian's, driven
// by playwright-core; no browser download), with the Tauri IPC replaced by
// canned answers, so every screen and error state can be shown on demand,
// checked with axe-core and photographed.

import { createServer } from "node:http";
import { mkdirSync, readFileSync, existsSync } from "node:fs";
import { extname, join, normalize } from "node:path";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const DIST = join(import.meta.dirname, "..", "dist");
const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
export const SHOTS = process.env.MEDTEXT_PAGE_SCREENSHOTS ?? join(import.meta.dirname, "screenshots");
mkdirSync(SHOTS, { recursive: true });

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml" };

/** Serves ui/dist on a loopback port. */
export function serve() {
  return new Promise((resolve) => {
    const server = createServer((req, res) => {
      const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
      let file = join(DIST, path === "/" ? "index.html" : path);
      if (!file.startsWith(DIST) || !existsSync(file)) file = join(DIST, "index.html");
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
      res.end(readFileSync(file));
    });
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN ?? "/usr/bin/chromium",
    chromiumSandbox: false,
    args: ["--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}

/**
 * Opens the UI with `answers`: command name -> value, or a function of the
 * command's arguments. A function may throw a string (the Rust error).
 */
export async function openPage(browser, base, answers, { theme } = {}) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 }, colorScheme: theme ?? "light" });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.exposeFunction("__answer", async (cmd, args) => {
    const a = answers[cmd];
    if (a === undefined) return { err: `no mock for ${cmd}` };
    try {
      return { ok: typeof a === "function" ? await a(args ?? {}) : a };
    } catch (e) {
      return { err: String(e) };
    }
  });
  await page.addInitScript(() => {
    let next = 1;
    window.__TAURI_INTERNALS__ = {
      metadata: { currentWindow: { label: "main" }, currentWebview: { windowLabel: "main", label: "main" } },
      transformCallback: (cb) => {
        const id = next++;
        window[`_${id}`] = cb;
        return id;
      },
      unregisterCallback: (id) => delete window[`_${id}`],
      convertFileSrc: (p) => p,
      invoke: async (cmd, args) => {
        // Raw bodies (training and batch files) arrive as bytes: say how many.
        const plain = args instanceof Uint8Array ? { bytes: args.length } : args;
        const r = await window.__answer(cmd, plain);
        if ("err" in r) throw r.err;
        return r.ok;
      },
    };
  });
  await page.goto(base);
  return { page, errors };
}

/** axe-core's WCAG 2.1 A/AA violations on the page as it is now. */
export async function violations(page) {
  await page.addScriptTag({ content: AXE });
  const result = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }),
  );
  return result.violations.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
}

export async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}
