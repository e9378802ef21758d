// /docs as a person uses it: Swagger UI lists the REST operations of /openapi.json, and "Try it out" runs one
// against this server. Fails on a request to another host or a page error.
//   node playground/test/docs.mjs <base URL> <screenshot dir>
import { check, finish, guardedPage, launch, seriousViolations } from "./common.mjs";

const [base, shots] = process.argv.slice(2);
const failures = [];
const browser = await launch();
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await guardedPage(context, base, failures);
try {
  await page.goto(`${base}/docs`);
  await page.locator(".opblock").first().waitFor({ timeout: 30000 });
  const operations = await page.locator(".opblock").count();
  check(failures, operations >= 10, `only ${operations} operations are shown`);
  check(failures, (await page.getByRole("link", { name: "GraphQL playground" }).count()) === 1, "no link to the playground");
  await page.screenshot({ path: `${shots}/docs.png` });

  // Try it out: list the services.
  const operation = page.locator(".opblock-get").filter({
    has: page.locator(".opblock-summary-path", { hasText: /^\/service$/ }),
  });
  await operation.locator(".opblock-summary-control").first().click();
  await operation.getByRole("button", { name: "Try it out" }).click();
  await operation.getByRole("button", { name: "Execute" }).click();
  const live = operation.locator(".live-responses-table");
  await live.waitFor({ timeout: 15000 });
  const status = (await live.locator("tbody .response-col_status").first().innerText()).trim();
  check(failures, status === "200", `Try it out answered ${status}`);
  const body = await live.locator(".response-col_description pre").first().innerText();
  check(failures, body.includes("edge.camera-svc"), `Try it out showed: ${body.slice(0, 300)}`);
  await page.screenshot({ path: `${shots}/docs-try-it-out.png` });

  // Two findings come from Swagger UI's own markup (a button inside the operation's clickable summary, the
  // response's scrolling code block); they are printed, not failed. Anything else serious fails.
  const known = / axe serious (nested-interactive|scrollable-region-focusable) /;
  for (const violation of await seriousViolations(page)) {
    if (known.test(violation)) console.log(`Swagger UI's own: ${violation}`);
    else failures.push(violation);
  }
} catch (error) {
  failures.push(String(error.stack || error));
  await page.screenshot({ path: `${shots}/docs-failure.png` }).catch(() => {});
} finally {
  await browser.close();
}
finish(failures, "docs");
