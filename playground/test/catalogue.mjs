// The catalogue as a person uses it, on a server without tokens that tests/ui.rs seeded: browse the tabs, page
// and filter, follow a referenced model, upload a file with a progress bar, reload half way and resume it (tus),
// download it back, edit, check what a device can run (form, pasted JSON, shared link), create and delete, a list
// that follows the change feed, a model's aliases, lock and per-platform files; on a phone-sized screen too.
// Fails on a request to another host, a page error, or a serious accessibility violation (axe-core).
//   node playground/test/catalogue.mjs <base URL> <screenshot dir> <file to upload> <its sha256>
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { check, finish, guardedPage, launch, seriousViolations } from "./common.mjs";

const [base, shots, uploadPath, uploadSha] = process.argv.slice(2);
const failures = [];
const browser = await launch();
const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
let page = await guardedPage(context, base, failures);
const visible = (locator, timeout = 15000) => locator.first().waitFor({ state: "visible", timeout });
const summary = () => page.locator(".list-head p").innerText();
const cardTitles = () => page.locator(".card h3").allInnerTexts();
const shot = (name) => page.screenshot({ path: `${shots}/${name}`, fullPage: true });

/** A GraphQL operation sent by another client than the page (this script); returns its data. */
async function graphql(query, variables = {}) {
  const response = await fetch(`${base}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(`${query}: ${JSON.stringify(body.errors)}`);
  return body.data;
}

try {
  // A browser at the root lands on the catalogue, models first.
  await page.goto(`${base}/`);
  check(failures, new URL(page.url()).pathname === "/ui", `the root led to ${page.url()}`);
  await visible(page.getByRole("link", { name: "fall-detection · pilot-2-1" }));
  await visible(page.getByText("Open: no token needed"));
  check(failures, (await cardTitles()).length === 2, `models: ${await cardTitles()}`);
  for (const link of ["REST API", "GraphQL playground"]) {
    check(failures, (await page.getByRole("link", { name: link }).count()) === 1, `no link to ${link}`);
  }
  failures.push(...(await seriousViolations(page)));
  await shot("ui-models.png");

  // Keyboard: the first Tab reaches "Skip to content", which moves the focus to the page's heading.
  await page.keyboard.press("Tab");
  const first = await page.evaluate(() => document.activeElement.textContent);
  check(failures, first === "Skip to content", `the first Tab reached ${first}`);
  await page.keyboard.press("Enter");
  const focused = await page.evaluate(() => document.activeElement.tagName);
  check(failures, focused === "H1", `"Skip to content" focused a ${focused}`);

  // Services: 23 of them, 20 a page.
  await page.getByRole("navigation", { name: "Kinds" }).getByRole("link", { name: "Services" }).click();
  await visible(page.getByText("1–20 of 23 services"));
  await page.getByRole("button", { name: "Next page" }).click();
  await visible(page.getByText("21–23 of 23 services"));
  check(failures, (await cardTitles()).join() === "svc-19,svc-20,svc-21", `page 2: ${await cardTitles()}`);
  await page.getByRole("button", { name: "Previous page" }).click();
  await visible(page.getByText("1–20 of 23 services"));

  // Needs filters: no GPU, at most 4 GB of RAM, TensorFlow 2.13 accepted.
  await page.getByLabel("GPU").selectOption("no");
  await page.getByLabel("Max RAM (GB)").fill("4");
  await page.getByLabel("Needs library").fill("tensorflow");
  await page.getByLabel("Version or range").fill("2.13");
  await page.getByRole("button", { name: "Filter" }).click();
  await visible(page.getByText("1–3 of 3 services"));
  const filtered = (await cardTitles()).join();
  check(failures, filtered === "edge.camera-svc,svc-03,svc-09", `filtered: ${filtered}`);
  check(failures, page.url().includes("maxRam=4"), `the filter is not in the address: ${page.url()}`);

  // Search, typed and submitted with the keyboard alone.
  await page.getByRole("button", { name: "Clear" }).click();
  await visible(page.getByText("1–20 of 23 services"));
  await page.getByLabel("Search").focus();
  await page.keyboard.type("camera");
  await page.keyboard.press("Enter");
  await visible(page.getByText("1–1 of 1 service", { exact: true }));

  // Referenced models: resolved to a link when stored, said to be missing when not.
  const card = page.locator(".card").filter({ hasText: "edge.camera-svc" });
  await visible(card.getByText("missing-model v1"));
  check(failures, (await card.getByText("(not in this repository)").count()) === 1, "the missing model is not marked");
  await shot("ui-services.png");
  await card.getByRole("link", { name: "fall-detection pilot-2-1" }).click();
  await visible(page.getByRole("heading", { name: "Model fall-detection · pilot-2-1" }));
  await visible(page.getByText("No file uploaded yet."));
  check(failures, (await page.title()).startsWith("Model fall-detection · pilot-2-1"), `title: ${await page.title()}`);

  // Upload through the page. The link is throttled so the progress bar has time to show.
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 3 * 1024 * 1024,
  });
  // Uploads go to /uploads with tus: the offsets of the PATCH requests show where each one started.
  const patches = [];
  page.on("request", (request) => {
    if (request.method() === "PATCH" && request.url().includes("/uploads/")) {
      patches.push({ url: request.url(), offset: Number(request.headers()["upload-offset"]) });
    }
  });
  const progressValues = async (until) => {
    const values = new Set();
    while ((await page.locator("#upload-progress").count()) > 0 && !until(values)) {
      const value = await page.locator("#upload-progress").getAttribute("value").catch(() => null);
      if (value !== null) values.add(Number(value));
      await page.waitForTimeout(50);
    }
    return values;
  };
  await page.getByLabel("Upload the file").setInputFiles(uploadPath);
  await page.getByRole("button", { name: "Upload", exact: true }).click();
  await visible(page.locator("#upload-progress"));
  const before = await progressValues((values) => [...values].some((v) => v >= 30));
  await shot("ui-upload-progress.png");
  const rate = await page.locator(".progress span").innerText().catch(() => "");
  check(failures, /\/s, about \d+ s left$/.test(rate), `the progress says ${rate}`);
  check(failures, [...before].some((v) => v >= 30 && v < 100), `the first upload showed only ${[...before]}`);
  // A reload half way, then the same file chosen again: the upload resumes where the server stands.
  await page.reload();
  await visible(page.getByRole("heading", { name: "Model fall-detection · pilot-2-1" }));
  // The page says the upload can be resumed.
  await visible(page.getByRole("region", { name: "Unfinished uploads" }).getByText("fall-detection.zip"));
  await page.getByLabel("Upload the file").setInputFiles(uploadPath);
  await page.getByRole("button", { name: "Upload", exact: true }).click();
  const seen = new Set([...before, ...(await progressValues(() => false))]);
  const resumed = patches.filter((p) => p.url === patches[0]?.url);
  check(failures, resumed.length >= 2 && resumed.at(-1).offset > 0,
    `the upload did not resume after the reload: ${JSON.stringify(patches)}`);
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1,
  });
  check(failures, [...seen].some((v) => v > 0 && v < 100), `the progress bar showed only ${[...seen]}`);
  await visible(page.locator(".notice").getByText("Uploaded fall-detection.zip"));
  check(failures, (await page.locator("code.hash").innerText()) === uploadSha, "the page shows another sha256");
  await shot("ui-model.png");
  failures.push(...(await seriousViolations(page)));

  // Download it back: byte-identical.
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("link", { name: "Download fall-detection.zip" }).click(),
  ]);
  const saved = await readFile(await download.path());
  const sha = createHash("sha256").update(saved).digest("hex");
  check(failures, sha === uploadSha, `the download differs: ${saved.length} bytes, sha256 ${sha}`);

  // Edit.
  await page.getByRole("button", { name: "Edit" }).click();
  await page.getByLabel("Description").fill("detects falls, edited in the browser");
  failures.push(...(await seriousViolations(page)));
  await page.getByRole("button", { name: "Save" }).click();
  await visible(page.locator(".notice").getByText("Saved."));
  await visible(page.getByText("detects falls, edited in the browser"));
  // "all versions" leads to the model's own page.
  await page.getByRole("link", { name: "all versions" }).click();
  await visible(page.getByRole("heading", { name: "Model fall-detection" }));
  await visible(page.getByText("1 version", { exact: true }));

  // Edit needs: a GPU, more RAM, one more library.
  await page.goto(`${base}/ui#/service/svc-12`);
  await page.getByRole("button", { name: "Edit" }).click();
  await page.getByLabel("Needs a GPU").check();
  await page.getByLabel("RAM (GB)").fill("6");
  await page.getByRole("button", { name: "Add library" }).click();
  await page.getByLabel("Library 2 name").fill("opencv");
  await page.getByLabel("Library 2 version").fill(">=4.8");
  await page.getByRole("button", { name: "Save" }).click();
  await visible(page.locator(".notice").getByText("Saved."));
  const needs = await page.locator(".component .facts").nth(1).innerText();
  for (const shown of ["needed", "6 GB", "tensorflow 2.13.0", "opencv >=4.8"]) {
    check(failures, needs.includes(shown), `the edited needs lack ${shown}: ${needs}`);
  }

  // The README's picture.
  await page.setViewportSize({ width: 1280, height: 720 });
  await page.goto(`${base}/ui#/services?gpu=no&maxRam=4`);
  await visible(page.getByText("1–7 of 7 services"));
  await page.screenshot({ path: `${shots}/ui-readme.png` });

  // What can this device run? Form first.
  await page.getByRole("link", { name: "What can this device run?" }).click();
  await visible(page.getByRole("heading", { name: "What can this device run?" }));
  await page.getByLabel("RAM (GB)").fill("4");
  await page.getByRole("button", { name: "Add library" }).click();
  await page.getByLabel("Library 1 name").fill("tensorflow");
  await page.getByLabel("Library 1 version").fill("2.13.0");
  await page.getByRole("button", { name: "Check" }).click();
  await visible(page.getByText("4 components", { exact: true }));
  const runnable = (await page.locator(".runnable li a").allInnerTexts()).join();
  check(failures, runnable === "resize,svc-03,svc-09,tf-inferencer", `runnable: ${runnable}`);
  failures.push(...(await seriousViolations(page)));
  await shot("ui-device.png");

  // The address is the link to share: a new tab shows the same device and answer.
  const link = await page.getByLabel("Link to this answer").inputValue();
  const shared = await guardedPage(context, base, failures);
  await shared.goto(link);
  await shared.getByText("4 components").waitFor({ timeout: 15000 });
  check(failures, (await shared.getByLabel("RAM (GB)").inputValue()) === "4", "the shared link lost the RAM");
  await shared.close();

  // Pasted JSON; then JSON that is not a device.
  await page.getByRole("button", { name: "JSON" }).click();
  await page.getByLabel("Device JSON").fill('{"gpu": true, "ram": 16, "libraries": [{"name": "torch", "version": "2.1.0"}]}');
  await page.getByRole("button", { name: "Check" }).click();
  await visible(page.getByText("15 components"));
  await page.getByLabel("Device JSON").fill('{"gpu": true, "ram": 16, ');
  await page.getByRole("button", { name: "Check" }).click();
  await visible(page.getByRole("alert").getByText("The pasted device is not valid"));

  // Create a service, then refuse a second one with the same id.
  await page.goto(`${base}/ui#/services`);
  await page.getByRole("link", { name: "New service" }).click();
  await page.getByLabel("Id").fill("made-in-the-browser");
  await page.getByLabel("Description").fill("created by the browser test");
  await page.getByRole("button", { name: "Create" }).click();
  await visible(page.getByRole("heading", { name: "Service made-in-the-browser" }));
  await visible(page.locator(".notice").getByText("Created made-in-the-browser"));
  await page.goto(`${base}/ui#/new/service`);
  await page.getByLabel("Id").fill("made-in-the-browser");
  await page.getByRole("button", { name: "Create" }).click();
  await visible(page.getByRole("alert").getByText("A component with this key already exists."));

  // Delete, with a confirmation (Escape keeps the component).
  await page.goto(`${base}/ui#/service/svc-21`);
  await page.getByRole("button", { name: "Delete…" }).click();
  await visible(page.getByRole("dialog").getByText("Delete svc-21?"));
  await page.keyboard.press("Escape");
  await page.getByRole("dialog").waitFor({ state: "hidden", timeout: 5000 });
  await page.getByRole("button", { name: "Delete…" }).click();
  await page.getByRole("button", { name: "Delete for good" }).click();
  await visible(page.locator(".notice").getByText("Deleted service svc-21."));
  await visible(page.getByText("1–20 of 23 services"));

  // The list follows the change feed: a service another client creates shows up without a reload, and goes
  // away when it is deleted.
  await visible(page.locator(".feed.live"));
  await page.evaluate(() => { window.notReloaded = true; });
  await graphql('mutation { createService(input: {id: "added-live", description: "created elsewhere"}) { id } }');
  await visible(page.getByText("1–20 of 24 services"));
  await visible(page.getByRole("link", { name: "added-live" }));
  await shot("ui-live.png");
  await graphql('mutation { deleteService(id: "added-live") }');
  await visible(page.getByText("1–20 of 23 services"));
  check(failures, await page.evaluate(() => window.notReloaded === true), "the list reloaded the page to update");

  // A model's aliases with their history, its lock and its per-platform files.
  await graphql(`mutation { setModelAlias(name: "fall-detection", alias: "production", version: "pilot-2-1") {
    name } }`);
  const variantBytes = Buffer.from("an arm64 build of the model\n");
  const variantSha = createHash("sha256").update(variantBytes).digest("hex");
  const form = new FormData();
  form.append("operations", JSON.stringify({
    query: `mutation ($file: Upload!) { uploadModelFile(name: "fall-detection", version: "pilot-2-1", file: $file,
      platform: {os: "linux", arch: "arm64", accelerator: "cuda", acceleratorVersion: ">=12"}) { name } }`,
    variables: { file: null },
  }));
  form.append("map", JSON.stringify({ 0: ["variables.file"] }));
  form.append("0", new Blob([variantBytes]), "fall-detection-arm64.zip");
  const uploaded = await fetch(`${base}/graphql`, {
    method: "POST", headers: { "apollo-require-preflight": "true" }, body: form,
  }).then((response) => response.json());
  check(failures, !uploaded.errors, `the variant upload failed: ${JSON.stringify(uploaded.errors)}`);
  await graphql('mutation { lockModel(name: "fall-detection", version: "pilot-2-1") { locked } }');
  await page.goto(`${base}/ui#/models`);
  await visible(page.locator(".card").filter({ hasText: "pilot-2-1" }).getByText("Aliases: production"));
  await page.goto(`${base}/ui#/model/fall-detection/pilot-2-1`);
  await visible(page.getByRole("list", { name: "History of production" }).getByText("new → pilot-2-1"));
  await visible(page.getByText("yes: its files can no longer be replaced"));
  check(failures, (await page.getByRole("button", { name: "Upload", exact: true }).count()) === 0,
    "a locked model offers to replace its file");
  const row = page.locator("table.variants tbody tr");
  await visible(row);
  const cells = await row.locator("td").allInnerTexts();
  check(failures, cells[0].startsWith("linux/arm64") && cells[0].includes("cuda >=12"), `variant platform: ${cells[0]}`);
  check(failures, cells[2] === variantSha, `variant sha256: ${cells[2]}`);
  const [variantDownload] = await Promise.all([
    page.waitForEvent("download"),
    row.getByRole("link", { name: "Download fall-detection-arm64.zip" }).click(),
  ]);
  const variantSaved = await readFile(await variantDownload.path());
  check(failures, variantSaved.equals(variantBytes), `the variant download differs: ${variantSaved.length} bytes`);
  failures.push(...(await seriousViolations(page)));
  await shot("ui-model-variants.png");

  // A component that does not exist.
  await page.goto(`${base}/ui#/service/no-such-service`);
  await visible(page.getByRole("alert").getByText("It is not (or no longer) in the repository."));

  // On a phone: one column, nothing wider than the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/ui#/services?search=camera`);
  await visible(page.getByText("1–1 of 1 service", { exact: true }));
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(failures, overflow <= 0, `the phone view is ${overflow}px wider than the screen`);
  failures.push(...(await seriousViolations(page)));
  await shot("ui-phone.png");
} catch (error) {
  failures.push(String(error.stack || error));
  await shot("ui-failure.png").catch(() => {});
} finally {
  await browser.close();
}
finish(failures, "catalogue");
