// The catalogue's round-2 flows on a server whose reads and writes need a token (tests/ui.rs seeded it): the token
// remembered on this device and shared by a second tab; two people editing one service (the second save shows
// the conflict with both values, loses nothing typed, and saving over it keeps the other's change); a page that
// follows changes made elsewhere; aliases set, moved and deleted with their history; a lock; a per-platform
// upload downloaded under its own name; "Use this" lines copied and run with the real curl and Python requests;
// a model's own page (PEP 440 order, alias badges, a Markdown card whose <script>, <img onerror> and javascript:
// link stay inert); search across kinds; the device check's platform fields, kept JSON, plurals and "why not"; the favicon,
// /ui/, and a header of one row at 1280 px and at most 10 % of a phone screen.
//   node playground/test/editing.mjs <base URL> <screenshot dir> <write token> <file to upload as a variant>
//        <sha256 of model card 1.10's file> <python with requests>
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { check, finish, guardedPage, launch, seriousViolations } from "./common.mjs";

const run = promisify(execFile);
const [base, shots, writeToken, variantPath, cardSha, python] = process.argv.slice(2);
const failures = [];
const browser = await launch();
const visible = (locator, timeout = 15000) => locator.first().waitFor({ state: "visible", timeout });
const contextOptions = {
  viewport: { width: 1280, height: 900 },
  acceptDownloads: true,
  permissions: ["clipboard-read", "clipboard-write"],
};

/** A GraphQL operation from another client than the page (this script), with the write token. */
async function graphql(query, variables = {}) {
  const response = await fetch(`${base}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${writeToken}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(`${query}: ${JSON.stringify(body.errors)}`);
  return body.data;
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
const clipboard = (page) => page.evaluate(() => navigator.clipboard.readText());

const first = await browser.newContext(contextOptions);
const second = await browser.newContext(contextOptions);
let page = await guardedPage(first, base, failures);
const notFound = [];
first.on("response", (response) => {
  if (response.status() === 404) notFound.push(response.url());
});
const shot = (name, target = page) => target.screenshot({ path: `${shots}/${name}`, fullPage: true });

try {
  // /ui/ with its slash is the catalogue; signing in with "Remember on this device".
  await page.goto(`${base}/ui/`);
  await visible(page.getByRole("heading", { name: "Sign in with a token" }));
  const signIn = await page.locator("header.top").boundingBox();
  check(failures, signIn.height <= 60, `the header is ${signIn.height}px high at 1280 px before signing in`);
  await page.getByLabel("Token", { exact: true }).fill(writeToken);
  await page.getByLabel("Remember on this device").check();
  await page.getByRole("button", { name: "Use", exact: true }).click();
  await visible(page.getByText("Read and write"));
  // Another tab of this browser (a Ctrl+click, say) is signed in too.
  const tab = await guardedPage(first, base, failures);
  await tab.goto(`${base}/ui#/services`);
  await visible(tab.getByText("Read and write"));
  // One row at 1280 px, with the token in use.
  const header = await tab.locator("header.top").boundingBox();
  check(failures, header.height <= 60, `the header is ${header.height}px high at 1280 px`);
  await tab.close();
  check(failures, notFound.every((url) => !url.endsWith("/favicon.ico")), `favicon: ${notFound}`);
  const icon = (await fetch(`${base}/favicon.ico`)).status;
  check(failures, icon === 200, `/favicon.ico answered ${icon}`);

  // Two people edit one service. Both open the form; the other saves more RAM first.
  const other = await guardedPage(second, base, failures);
  await other.goto(`${base}/ui#/service/edge.camera-svc.long-identifier_v2`);
  await other.getByLabel("Token", { exact: true }).fill(writeToken);
  await other.getByRole("button", { name: "Use", exact: true }).click();
  await page.goto(`${base}/ui#/service/edge.camera-svc.long-identifier_v2`);
  await visible(page.getByRole("heading", { name: "Service edge.camera-svc.long-identifier_v2" }));
  await visible(page.locator(".feed.live"));
  await page.getByRole("button", { name: "Edit" }).click();
  await visible(other.getByRole("button", { name: "Edit" }));
  await other.getByRole("button", { name: "Edit" }).click();
  await other.getByLabel("RAM (GB)").fill("2");
  await other.getByRole("button", { name: "Save" }).click();
  await visible(other.locator(".notice").getByText("Saved."));
  // This one changed only the description; its save is refused and shows both values.
  const mine = "Camera pipeline. **Edited** in the first browser.";
  await page.getByLabel("Description (Markdown)").fill(mine);
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await visible(page.getByRole("alert").getByText("Someone else changed it since you opened the form"));
  const conflict = page.getByRole("group", { name: /Changed elsewhere/ });
  await visible(conflict);
  const row = await conflict.locator("tbody tr").allInnerTexts();
  check(failures, row.length === 1 && row[0].includes("Description") && row[0].includes(mine)
    && row[0].includes("camera pipeline"), `the conflict shows ${JSON.stringify(row)}`);
  check(failures, (await page.getByLabel("Description (Markdown)").inputValue()) === mine, "the typed description was lost");
  failures.push(...(await seriousViolations(page)));
  await shot("ui-conflict.png");
  await conflict.getByRole("button", { name: "Save mine over it" }).click();
  await visible(page.locator(".notice").getByText("Saved."));
  const stored = await graphql(`{ service(id: "edge.camera-svc.long-identifier_v2") { description needs { ram } } }`);
  check(failures, stored.service.description === mine && stored.service.needs.ram === 2,
    `after saving over the other change: ${JSON.stringify(stored)}`);
  // The Markdown description is rendered: bold, no asterisks.
  await visible(page.locator(".markdown strong").getByText("Edited"));

  // The page follows changes made elsewhere: the other browser's RAM shows here without a reload.
  await page.evaluate(() => { window.notReloaded = true; });
  await graphql(`mutation { updateService(id: "edge.camera-svc.long-identifier_v2", input: {needs: {ram: 3}}) { id } }`);
  await visible(page.locator(".component .facts").getByText("3 GB"));
  check(failures, await page.evaluate(() => window.notReloaded === true), "the page reloaded to update");
  await other.close();

  // A library range that begins like a PEP 440 specifier but does not parse is refused before sending.
  await page.goto(`${base}/ui#/service/tiny`);
  await page.getByRole("button", { name: "Edit" }).click();
  await page.getByRole("button", { name: "Add library" }).click();
  await page.getByLabel("Library 1 name").fill("tensorflow");
  await page.getByLabel("Library 1 version").fill(">=>=2");
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await visible(page.getByRole("alert").getByText("Checked in this browser: nothing was sent to the server."));
  await visible(page.getByRole("alert").getByText('">=>=2" is no PEP 440 version range'));
  await page.getByRole("button", { name: "Cancel" }).click();

  // "Use this": the lines are copied and run by the real clients.
  await page.goto(`${base}/ui#/model/card/1.10`);
  await visible(page.getByRole("heading", { name: "Use this" }));
  const dir = await mkdtemp(join(tmpdir(), "use-this-"));
  const env = { ...process.env, REPOSITORY_TOKEN: writeToken };
  await page.getByRole("button", { name: "Copy download URL", exact: true }).click();
  check(failures, (await clipboard(page)) === `${base}/model/card/1.10`, `URL copied: ${await clipboard(page)}`);
  await page.getByRole("button", { name: "Copy curl command" }).click();
  const curl = await clipboard(page);
  check(failures, curl.includes('Authorization: Bearer $REPOSITORY_TOKEN'), `curl without the token header: ${curl}`);
  await run("sh", ["-c", curl], { cwd: dir, env });
  check(failures, sha256(await readFile(join(dir, "card-1.10.bin"))) === cardSha, "curl fetched other bytes");
  await page.getByRole("button", { name: "Copy Python requests" }).click();
  const script = await clipboard(page);
  await run(python, ["-c", script.replace("card-1.10.bin", "from-python.bin")], { cwd: dir, env });
  check(failures, sha256(await readFile(join(dir, "from-python.bin"))) === cardSha, "Python fetched other bytes");
  await page.getByRole("button", { name: "Copy GraphQL query" }).click();
  const query = await clipboard(page);
  const answered = await graphql(query);
  check(failures, answered.model.file.sha256 === cardSha, `the copied query answered ${JSON.stringify(answered)}`);
  await page.getByRole("button", { name: "Copy sha256" }).click();
  check(failures, (await clipboard(page)) === cardSha, "the sha256 copied differs");
  failures.push(...(await seriousViolations(page)));
  await shot("ui-use-this.png");
  await page.getByRole("button", { name: "Copy oras pull" }).click();
  const oras = await clipboard(page);
  check(failures, oras.endsWith(`oras pull --plain-http ${new URL(base).host}/models/card:1.10`), `oras: ${oras}`);

  // Aliases: set on 1.10, moved to 1.9, deleted; each move in the history.
  await page.getByLabel("Set an alias to this version").fill("production");
  await page.getByRole("button", { name: "Set alias" }).click();
  await visible(page.locator(".notice").getByText("The alias production points at 1.10."));
  await visible(page.getByRole("list", { name: "History of production" }).getByText("new → 1.10"));
  await page.getByRole("button", { name: "Copy download URL of alias production" }).click();
  check(failures, (await clipboard(page)) === `${base}/model/card/@production`, `alias URL: ${await clipboard(page)}`);
  await page.goto(`${base}/ui#/model/card/1.9`);
  await page.getByLabel("Set an alias to this version").fill("production");
  await page.getByRole("button", { name: "Set alias" }).click();
  await visible(page.locator(".notice").getByText("The alias production points at 1.9 (moved from 1.10)."));
  await visible(page.getByRole("list", { name: "History of production" }).getByText("1.10 → 1.9"));
  await page.getByLabel("Set an alias to this version").fill("stable");
  await page.getByRole("button", { name: "Set alias" }).click();
  await visible(page.getByRole("list", { name: "History of stable" }));
  await page.getByRole("button", { name: "Delete alias stable" }).click();
  await visible(page.locator(".notice").getByText("Deleted the alias stable."));
  await page.getByRole("list", { name: "History of stable" }).waitFor({ state: "detached", timeout: 10000 });

  // A per-platform file, uploaded through the page and downloaded under its own name.
  await page.getByLabel("Upload the file").setInputFiles(variantPath);
  await page.getByText("For one platform only").click();
  await page.getByLabel("OS", { exact: true }).fill("linux");
  await page.getByLabel("Architecture", { exact: true }).fill("arm64");
  await page.getByLabel("Accelerator", { exact: true }).fill("cuda");
  await page.getByLabel("Accelerator version").fill(">=12");
  await page.getByRole("button", { name: "Upload", exact: true }).click();
  await visible(page.locator(".notice").getByText("for linux/arm64"));
  const variantRow = page.locator("table.variants tbody tr");
  await visible(variantRow);
  const cells = await variantRow.locator("td").allInnerTexts();
  check(failures, cells[0] === "linux/arm64/v8 + cuda >=12", `variant platform: ${cells[0]}`);
  const variantName = variantPath.split("/").pop();
  const [variantDownload] = await Promise.all([
    page.waitForEvent("download"),
    variantRow.getByText(`Download ${variantName}`).click(),
  ]);
  check(failures, variantDownload.suggestedFilename() === variantName,
    `the variant saved as ${variantDownload.suggestedFilename()}`);
  const variantBytes = await readFile(variantPath);
  check(failures, sha256(await readFile(await variantDownload.path())) === sha256(variantBytes), "variant bytes differ");

  // Lock, after a confirmation: then no upload, no delete.
  await page.getByRole("button", { name: "Lock…" }).click();
  await page.getByRole("button", { name: "Lock for good" }).click();
  await visible(page.locator(".notice").getByText("Locked card · 1.9."));
  await visible(page.getByText("yes: its files can no longer be replaced"));
  for (const refused of ["Delete…", "Edit", "Upload"]) {
    check(failures, (await page.getByRole("button", { name: refused, exact: true }).count()) === 0,
      `a locked model with a file offers ${refused}`);
  }

  // The model's own page: PEP 440 order, alias badges, the card rendered inert.
  await page.evaluate(() => { window.pwned = false; });
  await page.goto(`${base}/ui#/model/card`);
  await visible(page.getByRole("heading", { name: "Model card", exact: true }));
  await visible(page.locator("table.versions tbody tr"));
  const order = (await page.locator("table.versions tbody tr td:first-child a").allInnerTexts()).join(",");
  check(failures, order === "2.0,1.10,1.10rc1,1.9,pilot-x", `versions in order: ${order}`);
  const badges = await page.locator("table.versions tbody tr").filter({ hasText: "1.9" }).first().locator("li.alias").allInnerTexts();
  check(failures, badges.join() === "production", `badges of 1.9: ${badges}`);
  const card = page.locator(".card-text .markdown");
  await visible(card.locator("h3").getByText("Card of the model"));
  check(failures, (await card.locator("script, img, iframe").count()) === 0, "the card holds live HTML elements");
  check(failures, (await card.innerText()).includes("<script>"), "the card's raw HTML is not shown as text");
  const links = await card.locator("a").evaluateAll((all) => all.map((a) => ({ href: a.getAttribute("href"), rel: a.rel })));
  check(failures, links.length === 1 && links[0].href === "https://example.org/paper" && links[0].rel.includes("noopener"),
    `card links: ${JSON.stringify(links)}`);
  await card.getByText("click me").click();
  await page.waitForTimeout(0);
  check(failures, (await page.evaluate(() => window.pwned)) === false, "the card ran script");
  await visible(page.getByRole("link", { name: "edge.camera-svc.long-identifier_v2" }));
  failures.push(...(await seriousViolations(page)));
  await shot("ui-model-page.png");

  // Search across every kind, and by a referenced model.
  await page.getByRole("link", { name: "Search" }).click();
  await page.getByLabel("Text").fill("camera");
  await page.getByRole("button", { name: "Search", exact: true }).click();
  await visible(page.getByText("2 matches"));
  const kinds = (await page.locator(".runnable .kind").allInnerTexts()).join();
  check(failures, kinds.toLowerCase() === "model,service", `search found ${kinds}`);
  await page.goto(`${base}/ui#/search?model=card`);
  await visible(page.getByText("1 match"));
  failures.push(...(await seriousViolations(page)));

  // The device check: platform fields, pasted JSON kept whole, client-side JSON errors said so, plurals.
  await page.goto(`${base}/ui#/device`);
  await page.getByRole("button", { name: "JSON" }).click();
  await page.getByLabel("Device JSON").fill('{"gpu": false, "ram": 1, "platform": {"os": "linux", "arch": "arm64", "accelerators": [{"name": "cuda", "version": "12.2"}]}}');
  await page.getByRole("button", { name: "Check" }).click();
  await visible(page.getByText(/^1 component$/));
  // What nearly fits says why not: the unmet need with both values.
  const nearly = page.getByRole("region", { name: "Nearly fits: why not" });
  await visible(nearly.getByText("needs card 1.10, this device has no model card"));
  const address = decodeURIComponent(page.url());
  check(failures, address.includes('"platform":{"os":"linux","arch":"arm64"'), `the platform was dropped: ${address}`);
  await page.getByRole("button", { name: "Form" }).click();
  check(failures, (await page.getByLabel("OS", { exact: true }).inputValue()) === "linux", "the form lost the OS");
  check(failures, (await page.getByLabel("Accelerator 1 name").inputValue()) === "cuda", "the form lost the accelerator");
  await page.getByRole("button", { name: "JSON" }).click();
  await page.getByLabel("Device JSON").fill('{"gpu": true, ');
  await page.getByRole("button", { name: "Check" }).click();
  await visible(page.getByRole("alert").getByText("Checked in this browser: nothing was sent to the server."));
  await visible(page.getByRole("alert").getByText("is not valid JSON"));

  // Leaving a page through an in-app link pauses its upload; coming back offers to resume it.
  const cdp = await first.newCDPSession(page);
  await cdp.send("Network.enable");
  const throttle = (uploadThroughput) => cdp.send("Network.emulateNetworkConditions", {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput,
  });
  await throttle(8 * 1024);
  await page.goto(`${base}/ui#/service/tiny`);
  await page.getByLabel("Upload the file").setInputFiles(variantPath);
  await page.getByRole("button", { name: "Upload", exact: true }).click();
  await page.waitForFunction(() => Number(document.querySelector("#upload-progress")?.getAttribute("value")) > 0,
    null, { timeout: 15000 });
  // Leaving the app while it runs asks first (dismissed here: the page stays, the upload goes on).
  const asked = new Promise((resolve) => {
    page.once("dialog", async (dialog) => {
      resolve(dialog.type());
      await dialog.dismiss();
    });
    setTimeout(() => resolve("no dialog"), 5000);
  });
  await page.evaluate(() => { window.location.href = "/docs"; });
  const dialogType = await asked;
  check(failures, dialogType === "beforeunload", `leaving during an upload asked: ${dialogType}`);
  check(failures, new URL(page.url()).pathname === "/ui", `the page left to ${page.url()}`);
  // The positive sign that it stopped: the running PATCH is aborted when the page is left.
  const stopped = page.waitForEvent("requestfailed", {
    predicate: (request) => request.method() === "PATCH" && request.url().includes("/uploads/"),
    timeout: 10000,
  });
  await page.getByRole("link", { name: "Services", exact: true }).click();
  await stopped;
  await visible(page.getByText(/of \d+ services/));
  await throttle(-1);
  await page.goto(`${base}/ui#/service/tiny`);
  await visible(page.getByRole("region", { name: "Unfinished uploads" }).getByText(variantName));
  const tiny = await graphql('{ service(id: "tiny") { file { sha256 } } }');
  check(failures, tiny.service.file === null, `the left upload ran on: ${JSON.stringify(tiny)}`);

  // A phone: the header folds into a menu and takes at most 10 % of the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/ui#/services`);
  await visible(page.getByText(/of \d+ service/));
  const phone = await page.locator("header.top").boundingBox();
  check(failures, phone.height <= 84.4, `the phone header is ${phone.height}px high (${(phone.height / 8.44).toFixed(1)} %)`);
  await page.getByRole("button", { name: "Menu" }).click();
  await visible(page.getByRole("link", { name: "What can this device run?" }));
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(failures, overflow <= 0, `the phone view is ${overflow}px wider than the screen`);
  await page.getByRole("button", { name: "Menu" }).click();
  await page.goto(`${base}/ui#/service/edge.camera-svc.long-identifier_v2`);
  await visible(page.getByRole("heading", { name: "Use this" }));
  const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(failures, wide <= 0, `the component page on a phone is ${wide}px wider than the screen`);
  await shot("ui-phone-component.png");
  // The README's phone picture: the top of a component page.
  await page.screenshot({ path: `${shots}/ui-readme-phone.png` });
  console.log(`header: ${header.height}px at 1280 px, ${phone.height}px at 390x844`);
} catch (error) {
  failures.push(String(error.stack || error));
  await shot("ui-editing-failure.png").catch(() => {});
} finally {
  await browser.close();
}
finish(failures, "editing");
