// Opens the playground in headless Chromium like a person would, runs the first example query, opens the docs
// explorer, and keeps a screenshot. Fails when the page asks anything of another host (no CDN allowed).
//   node playground/test/browser.mjs <server base URL> <screenshot.png> <text the result must show>
import { chromium } from "playwright-core";
import { watchPolicy } from "./common.mjs";

const [base, screenshot, expected] = process.argv.slice(2);
const origin = new URL(base).origin;

const browser = await chromium.launch({
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
const failures = [];
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
try {
  const elsewhere = [];
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(origin) || url.startsWith("data:")) return route.continue();
    elsewhere.push(url);
    return route.abort();
  });
  page.on("pageerror", (error) => failures.push(`page error: ${error.message}`));
  await watchPolicy(page, failures);

  await page.goto(`${base}/playground`);

  await page.locator(".graphiql-execute-button").waitFor({ timeout: 30000 });
  const tabs = await page.locator(".graphiql-tab").count();
  if (tabs < 4) failures.push(`expected the example operations in 4 tabs, found ${tabs}`);
  if ((await page.getByRole("button", { name: "Headers" }).count()) === 0) {
    failures.push("no headers editor");
  }

  await page.locator(".graphiql-execute-button").click();
  const result = page.locator(".result-window");
  await result.getByText(expected).first().waitFor({ timeout: 30000 });
  const text = await result.innerText();
  if (!text.includes('"totalCount"')) failures.push(`unexpected result: ${text}`);

  await page.getByLabel("Show Documentation Explorer").click();
  await page.locator(".graphiql-doc-explorer").getByText("Query").first().waitFor({ timeout: 10000 });

  // The change-feed tab: a live subscription over WebSocket shows changes made elsewhere as they commit.
  await page.locator(".graphiql-tab").nth(3).click();
  // GraphiQL picks up the new tab's operation name a moment after the switch: until then a run sends the previous
  // tab's name, which the server refuses. Run again until it is accepted.
  for (let attempt = 0; attempt < 20; attempt++) {
    await page.locator(".graphiql-execute-button").click();
    await page.waitForTimeout(300);
    if (!(await result.innerText()).includes("Unknown operation named")) break;
  }
  const deadline = Date.now() + 30000;
  for (let n = 0; ; n++) {
    // Changes keep coming until one shows: the subscription may take a moment to be set up.
    await fetch(`${base}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ query: `mutation { createService(input: {id: "feed.check.${n}"}) { id } }` }),
    });
    if ((await result.innerText()).includes("feed.check.")) break;
    if (Date.now() > deadline) {
      failures.push("the change-feed tab showed no event");
      break;
    }
    await page.waitForTimeout(500);
  }

  if (elsewhere.length > 0) failures.push(`requests to other hosts: ${elsewhere.join(", ")}`);
} catch (error) {
  failures.push(String(error));
} finally {
  // Kept whatever happened: it shows what a person would have seen.
  await page.screenshot({ path: screenshot }).catch(() => {});
  await browser.close();
}
if (failures.length > 0) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log("playground ok");
