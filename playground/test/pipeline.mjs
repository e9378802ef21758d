// Builds and pipelines in the catalogue (tests/ui.rs seeded model llm 1 with 4-, 8- and 16-bit CUDA builds needing
// 6, 10 and 18 GB of GPU memory, and inferencer plain-runner): a build uploaded from the component page with its
// precision and GPU memory; the builds listed with their needs; the device check's GPU memory field; a pipeline
// checked on a 12 GB device (fits, with the 8-bit build) and on a 4 GB one (does not fit, and says why).
//   node playground/test/pipeline.mjs <base URL> <screenshot dir> <file to upload as a build>
import { check, finish, guardedPage, launch, seriousViolations } from "./common.mjs";

const [base, shots, buildPath] = process.argv.slice(2);
const failures = [];
const browser = await launch();
const visible = (locator, timeout = 15000) => locator.first().waitFor({ state: "visible", timeout });

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await guardedPage(context, base, failures);

  // A 2-bit build from the component page: precision and GPU memory go with the file.
  await page.goto(`${base}/ui/#/model/llm/1`);
  await visible(page.locator("table.variants tbody tr"));
  await page.locator("#upload-file").setInputFiles(buildPath);
  await page.getByText("For one platform only").click();
  await page.getByLabel("OS", { exact: true }).fill("linux");
  await page.getByLabel("Architecture", { exact: true }).fill("amd64");
  await page.getByLabel("Accelerator", { exact: true }).fill("cuda");
  await page.getByLabel("Precision (build)").fill("2bit");
  await page.getByLabel("This build's GPU memory in GB").fill("3");
  await page.getByRole("button", { name: "Upload", exact: true }).click();
  const twoBit = page.locator("table.variants tbody tr", { hasText: "(2bit)" });
  await visible(twoBit, 30000);
  const cells = await twoBit.locator("td").allInnerTexts();
  check(failures, cells[0] === "linux/amd64/v1 + cuda (2bit)", `the build's platform: ${cells[0]}`);
  check(failures, cells[cells.length - 1].includes("GPU memory 3 GB"), `the build's needs: ${cells.at(-1)}`);
  const eight = await page.locator("table.variants tbody tr", { hasText: "(8bit)" }).locator("td").last().innerText();
  check(failures, eight.includes("GPU memory 10 GB"), `the 8-bit build's needs: ${eight}`);

  // The device check with GPU memory, then a pipeline on it.
  const checkDevice = async (gpuMemory) => {
    await page.goto(`${base}/ui/#/device`);
    await page.getByLabel("Has a GPU").check();
    await page.getByLabel("GPU memory (GB)", { exact: true }).fill(String(gpuMemory));
    await page.getByLabel("OS", { exact: true }).fill("linux");
    await page.getByLabel("Architecture", { exact: true }).fill("amd64");
    await page.getByRole("button", { name: "Add accelerator" }).click();
    await page.getByLabel("Accelerator 1 name").fill("cuda");
    await page.getByLabel("Accelerator 1 version").fill("8.9");
    await page.getByRole("button", { name: "Check", exact: true }).click();
    await visible(page.getByRole("heading", { name: "Check a pipeline on this device" }));
    check(failures, decodeURIComponent(page.url()).includes(`"gpuMemory":${gpuMemory}`), `the address keeps GPU memory: ${page.url()}`);
    await page.getByLabel("Model name").fill("llm");
    await page.getByLabel("Version or @alias").fill("1");
    await page.getByLabel("Inferencer").fill("plain-runner");
    await page.getByRole("button", { name: "Resolve pipeline" }).click();
  };
  await checkDevice(12);
  await visible(page.getByText("Fits: it would start on this device."));
  const modelRow = page.locator("table.pipeline-parts tbody tr").first();
  const modelCells = await modelRow.locator("td").allInnerTexts();
  check(failures, modelCells[3] === "linux/amd64/v1 + cuda (8bit)", `a 12 GB device gets the 8-bit build: ${modelCells}`);
  await visible(page.getByText(/GPU memory 10 GB/));
  failures.push(...(await seriousViolations(page)));
  await page.screenshot({ path: `${shots}/pipeline-fits.png`, fullPage: true });

  await checkDevice(2);
  await visible(page.getByText("Does not fit: 1 problem."));
  const problem = await page.locator(".resolution .problems li").first().innerText();
  check(failures, problem.includes("GPU_MEMORY_EXCEEDED") && problem.includes("3 GB") && problem.includes("2 GB"),
    `the problem says why: ${problem}`);
  await page.screenshot({ path: `${shots}/pipeline-does-not-fit.png`, fullPage: true });
} catch (error) {
  failures.push(`${error.stack}`);
} finally {
  await browser.close();
}
finish(failures, "builds and pipelines in the catalogue");
