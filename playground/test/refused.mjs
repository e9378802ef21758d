// The playground on a server whose reads need a token (tests/playground.rs started it): a subscription sent
// without a token shows a message in the result pane, never an uncaught page error; once the Headers tab holds
// the token, the schema is fetched again (the docs explorer shows it without a manual re-fetch); a link leads
// back to the catalogue; on a 390 px phone the page says GraphiQL needs a wider screen.
//   node playground/test/refused.mjs <server base URL> <screenshot dir> <read token>
import { check, finish, guardedPage, launch } from "./common.mjs";

const [base, shots, readToken] = process.argv.slice(2);
const failures = [];
const browser = await launch();
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const page = await guardedPage(context, base, failures);
try {
  await page.goto(`${base}/playground`);
  await page.locator(".graphiql-execute-button").waitFor({ timeout: 30000 });
  check(failures, (await page.getByRole("link", { name: "← Catalogue" }).getAttribute("href")) === "/ui",
    "no link back to the catalogue");

  // The change feed without a token: refused, and said so in the result pane.
  const result = page.locator(".result-window");
  await page.locator(".graphiql-tab").nth(3).click();
  // The tab's operation in the editor first: a click before it loads runs another operation, and a second click
  // while a subscription is starting stops it midway (its refusal then reaches nobody).
  await page.waitForFunction(() => (document.querySelector(".graphiql-query-editor")?.innerText ?? "").includes("subscription"),
    null, { timeout: 30000 });
  const refusedText = /token|UNAUTHENTICATED|closed the connection/i;
  let shown = "";
  // Run, then wait for a result in the pane (not a fixed pause: under load the refusal takes longer to show).
  for (let attempt = 0; attempt < 3 && !refusedText.test(shown); attempt++) {
    await page.locator(".graphiql-execute-button").click();
    await page
      .waitForFunction(() => (document.querySelector(".result-window")?.innerText ?? "").includes("errors"), null,
        { timeout: 30000 })
      .catch(() => {});
    shown = await result.innerText();
  }
  check(failures, refusedText.test(shown), `the refused subscription showed: ${shown}`);

  // The token in the Headers tab: the schema follows without a manual re-fetch.
  await page.getByRole("button", { name: "Headers" }).click();
  const headers = page.locator(".graphiql-editor-tool .graphiql-editor").last();
  await headers.click();
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Delete");
  await page.keyboard.insertText(`{"Authorization": "Bearer ${readToken}"}`);
  await page.waitForTimeout(1500);
  await page.locator(".graphiql-execute-button").waitFor({ timeout: 30000 });
  await page.getByLabel("Show Documentation Explorer").click();
  await page.locator(".graphiql-doc-explorer").getByText("Query").first().waitFor({ timeout: 15000 });
  await page.screenshot({ path: `${shots}/playground-token.png` });

  // A phone: a clear note instead of a broken page.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByText("GraphiQL needs a wider screen").waitFor({ state: "visible", timeout: 5000 });
} catch (error) {
  failures.push(String(error.stack || error));
  await page.screenshot({ path: `${shots}/playground-refused-failure.png` }).catch(() => {});
} finally {
  await browser.close();
}
finish(failures, "playground with tokens");
