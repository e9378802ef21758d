// The catalogue of a deployment with tokens, in two servers tests/ui.rs started: one where reads need a token,
// one with public reads. Without a token the first asks for one; a read token (or public reads) gives the
// read-only view, with downloads that work; a write token gives the editing controls.
//   node playground/test/protected.mjs <private base URL> <public base URL> <screenshot dir> <read token>
//        <write token> <sha256 of yolo v8's file> <a file larger than the public server's upload limit>
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { check, finish, guardedPage, launch, seriousViolations } from "./common.mjs";

const [privateBase, publicBase, shots, readToken, writeToken, fileSha, tooLarge] = process.argv.slice(2);
const failures = [];
const browser = await launch();
let page;
const visible = (locator, timeout = 15000) => locator.first().waitFor({ state: "visible", timeout });

async function useToken(value) {
  await page.getByLabel("Token").fill(value);
  await page.getByRole("button", { name: "Use" }).click();
}

async function downloadsIntact(what) {
  await page.goto(`${page.url().split("#")[0]}#/model/yolo/v8`);
  await visible(page.getByRole("heading", { name: "Model yolo · v8" }));
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByText("Download yolo.pt").click(),
  ]);
  const sha = createHash("sha256").update(await readFile(await download.path())).digest("hex");
  check(failures, sha === fileSha, `${what}: the download differs (sha256 ${sha})`);
}

async function readOnly(what) {
  await visible(page.locator(".card").first());
  check(failures, (await page.getByRole("link", { name: /^New / }).count()) === 0, `${what}: a New button`);
  await page.goto(`${page.url().split("#")[0]}#/service/edge.camera-svc`);
  await visible(page.getByText("Read-only view: changes need a write token."));
  for (const control of ["Edit", "Delete…", "Upload"]) {
    check(failures, (await page.getByRole("button", { name: control, exact: true }).count()) === 0, `${what}: ${control}`);
  }
}

try {
  // Reads need a token.
  let context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  page = await guardedPage(context, privateBase, failures);
  await page.goto(`${privateBase}/ui`);
  await visible(page.getByRole("heading", { name: "Sign in with a token" }));
  await visible(page.getByRole("alert").getByText("This server needs a token"));
  await visible(page.getByText("Token needed"));
  failures.push(...(await seriousViolations(page)));
  await page.screenshot({ path: `${shots}/ui-token-needed.png` });

  await useToken("not-a-token");
  await visible(page.getByText("Token not accepted"));

  await useToken(readToken);
  await visible(page.getByText("Read-only token"));
  await readOnly("read token");
  await page.screenshot({ path: `${shots}/ui-read-only.png`, fullPage: true });
  await downloadsIntact("read token");

  await useToken(writeToken);
  await visible(page.getByText("Read and write"));
  await page.goto(`${privateBase}/ui#/service/edge.camera-svc`);
  await visible(page.getByRole("button", { name: "Edit" }));
  await downloadsIntact("write token");

  // The token is kept for this tab's session: a reload keeps it, "Forget" drops it.
  await page.reload();
  await visible(page.getByText("Read and write"));
  await page.getByRole("button", { name: "Forget" }).click();
  await visible(page.getByRole("heading", { name: "Sign in with a token" }));
  await context.close();

  // Public reads: the read-only view without a token, with plain download links.
  context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  page = await guardedPage(context, publicBase, failures);
  await page.goto(`${publicBase}/ui`);
  await visible(page.getByText("Read-only: public reads"));
  await readOnly("public reads");
  await downloadsIntact("public reads");
  await useToken(writeToken);
  await visible(page.getByText("Read and write"));

  // An upload beyond the server's limit is refused, and the page says why; the old file stays.
  await page.goto(`${publicBase}/ui#/model/yolo/v8`);
  await page.getByLabel("Replace the file").setInputFiles(tooLarge);
  await page.getByRole("button", { name: "Upload", exact: true }).click();
  await visible(page.getByRole("alert").getByText("The file is larger than this server accepts"));
  await page.reload();
  await visible(page.getByText(fileSha));
  await context.close();
} catch (error) {
  failures.push(String(error.stack || error));
  await page?.screenshot({ path: `${shots}/ui-protected-failure.png` }).catch(() => {});
} finally {
  await browser.close();
}
finish(failures, "protected catalogue");
