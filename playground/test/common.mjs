// What the browser tests of the catalogue and /docs share: a headless Debian Chromium, a guard that fails on any
// request to another host (nothing may come from a CDN), and an axe-core accessibility check.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** Opens a page that records page errors and requests to other hosts (and aborts those) in `failures`. */
export async function guardedPage(context, base, failures) {
  const origin = new URL(base).origin;
  const page = await context.newPage();
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(origin) || url.startsWith("data:") || url.startsWith("blob:")) return route.continue();
    failures.push(`request to another host: ${url}`);
    return route.abort();
  });
  page.on("pageerror", (error) => failures.push(`page error on ${page.url()}: ${error.message}`));
  await watchPolicy(page, failures);
  return page;
}

/** Records in `failures` whatever the page's Content-Security-Policy blocks: every page must work under it. */
export async function watchPolicy(page, failures) {
  page.on("console", (message) => {
    if (message.type() === "error" && /Content Security Policy/i.test(message.text())) {
      failures.push(`CSP violation on ${page.url()}: ${message.text()}`);
    }
  });
  // The event names what was blocked even where the browser logs nothing (such as report-only cases).
  await page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      console.error(`Content Security Policy violation: ${e.violatedDirective} blocked ${e.blockedURI} (${e.sourceFile}:${e.lineNumber})`);
    });
  });
}

/** Runs axe-core in the page; returns its serious and critical violations as lines. */
export async function seriousViolations(page, options = {}) {
  // Evaluated over the DevTools protocol, not added as an inline <script>, which the page's CSP rightly refuses.
  await page.evaluate(readFileSync(require.resolve("axe-core/axe.min.js"), "utf8"));
  const result = await page.evaluate(async (options) => {
    // eslint-disable-next-line no-undef
    const { violations } = await axe.run(options.include ? { include: options.include } : document, {
      resultTypes: ["violations"],
    });
    return violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      targets: v.nodes.slice(0, 10).map((node) => node.target.join(" ")),
    }));
  }, options);
  return result
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${page.url()}: axe ${v.impact} ${v.id} (${v.help}) at ${v.targets.join(", ")}`);
}

/** Fails `failures` with `message` unless `condition` holds. */
export function check(failures, condition, message) {
  if (!condition) failures.push(message);
}

export function finish(failures, what) {
  if (failures.length > 0) {
    console.error(failures.join("\n"));
    process.exit(1);
  }
  console.log(`${what} ok`);
}
