// The catalogue of a deployment with tokens, in two servers tests/ui.rs started: one where reads need a token,
// one with public reads. Without a token the first asks for one; a read token (or public reads) gives the
// read-only view, with downloads that work; a write token gives the editing controls. A download that needs the
// token streams to disk through the page's download worker (the test prints how far a 64 MiB one moves the page's heap); where
// the browser has no service worker, the page says the file passes through its memory, and that still works.
//   node playground/test/protected.mjs <private base URL> <public base URL> <screenshot dir> <read token>
//        <write token> <sha256 of yolo v8's file> <a file larger than the public server's upload limit>
//        <sha256 of large-model v1's file on the private server> <its size>
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { check, finish, guardedPage, launch, seriousViolations } from "./common.mjs";

const [privateBase, publicBase, shots, readToken, writeToken, fileSha, tooLarge, largeSha, largeSize] =
  process.argv.slice(2);
const failures = [];
const browser = await launch();
let page;
/** The URLs the download worker fetched in the current context. */
let workerFetches = [];
const visible = (locator, timeout = 15000) => locator.first().waitFor({ state: "visible", timeout });

/**
 * A browser context on `base` whose page records the blob: addresses it makes (a file fetched into the page's
 * memory is saved from one) and whose download worker may only talk to `base`.
 */
async function open(base, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true, ...options });
  await context.addInitScript(() => {
    const create = URL.createObjectURL;
    window.blobAddresses = 0;
    URL.createObjectURL = (object) => {
      window.blobAddresses += 1;
      return create.call(URL, object);
    };
  });
  workerFetches = [];
  context.on("request", (request) => {
    if (!request.serviceWorker()) return;
    workerFetches.push(request.url());
    check(failures, request.url().startsWith(base), `the worker asked another host: ${request.url()}`);
  });
  page = await guardedPage(context, base, failures);
  return context;
}

async function useToken(value) {
  // In the header the field is folded behind "Set token" or "Change token", once the page knows what it may do.
  await page.locator(".top .badge").filter({ hasNotText: "Checking access" }).first().waitFor({ timeout: 15000 });
  const unfold = page.getByRole("button", { name: /^(Set|Change) token$/ });
  if (await unfold.isVisible()) await unfold.click();
  await page.getByLabel("Token", { exact: true }).fill(value);
  await page.getByRole("button", { name: "Use" }).click();
}

async function sha256(path) {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk);
  return hash.digest("hex");
}

/**
 * Downloads `filename` from a model's page and checks the saved bytes and the way they came: "link" (a plain
 * link to the REST route), "worker" (the download worker's one-time address, the worker fetching the file, no
 * blob: address in the page) or "memory" (the page's fallback, saved from a blob: address).
 */
async function downloadsIntact(what, way, { model = "yolo/v8", filename = "yolo.pt", sha = fileSha, measure } = {}) {
  const origin = new URL(page.url()).origin;
  await page.goto(`${page.url().split("#")[0]}#/model/${model}`);
  await visible(page.getByRole("heading", { name: `Model ${model.replace("/", " · ")}` }));
  const fetchesBefore = workerFetches.length;
  const blobsBefore = await page.evaluate(() => window.blobAddresses);
  const save = async () => {
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.getByText(`Download ${filename}`).click(),
    ]);
    return { download, saved: await download.path() };
  };
  const { download, saved } = await (measure ? heapGrowth(what, save) : save());
  const got = await sha256(saved);
  check(failures, got === sha, `${what}: the download differs (sha256 ${got})`);
  const url = download.url();
  const blobs = (await page.evaluate(() => window.blobAddresses)) - blobsBefore;
  const fetched = workerFetches.slice(fetchesBefore);
  if (way === "link") {
    check(failures, url === `${origin}/model/${model}`, `${what}: not a plain link (${url})`);
  } else if (way === "worker") {
    check(failures, url.startsWith(`${origin}/ui/download/`), `${what}: not from the download worker (${url})`);
    check(failures, fetched.includes(`${origin}/model/${model}`), `${what}: the worker fetched ${fetched}`);
    check(failures, blobs === 0, `${what}: the page made ${blobs} blob: addresses`);
  } else {
    check(failures, url.startsWith("blob:") && blobs === 1, `${what}: not saved from the page's memory (${url})`);
  }
}

/**
 * Runs `action` while sampling the page's JavaScript heap and ArrayBuffer memory through the Chrome DevTools
 * Protocol, and prints how far they grew above where they were after a garbage collection: a figure, not a check
 * (the worker and no-blob: checks above are what prove the bytes bypass the page).
 */
async function heapGrowth(what, action) {
  const devtools = await page.context().newCDPSession(page);
  const used = async () => {
    const usage = await devtools.send("Runtime.getHeapUsage");
    return usage.usedSize + (usage.backingStorageSize ?? 0);
  };
  await devtools.send("HeapProfiler.collectGarbage");
  const baseline = await used();
  let peak = baseline;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, await used());
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  try {
    return await action();
  } finally {
    sampling = false;
    await sampler;
    await devtools.detach();
    const mib = (bytes) => `${(bytes / 1048576).toFixed(1)} MiB`;
    console.log(`${what}: the page's heap and buffers grew by ${mib(peak - baseline)} (from ${mib(baseline)})`);
  }
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
  let context = await open(privateBase);
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
  // The list follows the change feed with the token (which an EventSource cannot send, so the page streams it
  // with fetch): a model another client registers shows up without a reload.
  await visible(page.locator(".feed.live"));
  const asWriter = (query) => fetch(`${privateBase}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${writeToken}` },
    body: JSON.stringify({ query }),
  }).then((response) => response.json());
  const created = await asWriter('mutation { createModel(input: {name: "live-model", version: "v1"}) { name } }');
  check(failures, !created.errors, `creating live-model: ${JSON.stringify(created.errors)}`);
  await visible(page.getByRole("link", { name: "live-model · v1" }));
  await asWriter('mutation { deleteModel(name: "live-model", version: "v1") }');
  await page.getByRole("link", { name: "live-model · v1" }).waitFor({ state: "detached", timeout: 15000 });
  await readOnly("read token");
  await page.screenshot({ path: `${shots}/ui-read-only.png`, fullPage: true });
  await downloadsIntact("read token", "worker");
  await downloadsIntact("64 MiB with a read token", "worker", {
    model: "large-model/v1",
    filename: "large-model.bin",
    sha: largeSha,
    measure: true,
  });

  await useToken(writeToken);
  await visible(page.getByText("Read and write"));
  await page.goto(`${privateBase}/ui#/service/edge.camera-svc`);
  await visible(page.getByRole("button", { name: "Edit" }));
  await downloadsIntact("write token", "worker");

  // A file gone since the page showed it: the worker's answer comes back as the page's error, and the page stays.
  await page.goto(`${privateBase}/ui#/model/large-model/v1`);
  await visible(page.getByText("Download large-model.bin"));
  const deleted = await fetch(`${privateBase}/model/large-model/v1`, {
    method: "DELETE",
    headers: { authorization: `Bearer ${writeToken}` },
  });
  check(failures, deleted.ok, `deleting large-model v1 answered ${deleted.status}`);
  await page.getByText("Download large-model.bin").click();
  await visible(page.getByRole("alert").getByText("It is not (or no longer) in the repository."));
  check(failures, page.url().endsWith("#/model/large-model/v1"), `a failed download left the page for ${page.url()}`);

  // The token is kept for this tab's session: a reload keeps it, "Forget" drops it.
  await page.reload();
  await visible(page.getByText("Read and write"));
  await page.getByRole("button", { name: "Forget" }).click();
  await visible(page.getByRole("heading", { name: "Sign in with a token" }));
  await context.close();

  // A browser without service workers (as on a page served over plain HTTP): the page says the file goes
  // through its memory, and the download still works.
  context = await open(privateBase, { serviceWorkers: "block" });
  await page.goto(`${privateBase}/ui`);
  await useToken(readToken);
  await visible(page.getByText("Read-only token"));
  await page.goto(`${privateBase}/ui#/model/yolo/v8`);
  await visible(page.getByText("held in the page's memory before it is saved"));
  await page.screenshot({ path: `${shots}/ui-download-in-memory.png` });
  await downloadsIntact("without service workers", "memory");
  await context.close();

  // Public reads: the read-only view without a token, with plain download links.
  context = await open(publicBase);
  await page.goto(`${publicBase}/ui`);
  await visible(page.getByText("Read-only: public reads"));
  await readOnly("public reads");
  await downloadsIntact("public reads", "link");
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
