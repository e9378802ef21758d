// A rollout in the catalogue (issue #26; tests/ui.rs seeded model fleet-ui 1.0 and 2.0 with production -> 1.0):
// six devices in two hardware classes (three CPU boxes, three Jetsons) follow production with their id and report
// what they run, the Jetsons failing on 2.0. From the model's page a write token starts a rollout of 2.0 in two
// steps; the page shows each class's progress, the CPU boxes completing and the Jetsons reverting with the gate's
// reason and figures, and which devices run which version. A second rollout is paused, resumed and aborted from
// the page. A read token sees the rollouts without the buttons and the form.
//   node playground/test/rollout.mjs <base URL> <screenshot dir> <write token> <read token> <device token>
//        <sha256 of 1.0's file> <sha256 of 2.0's file>
import { check, finish, guardedPage, launch, seriousViolations } from "./common.mjs";

const [base, shots, writeToken, readToken, deviceToken, sha10, sha20] = process.argv.slice(2);
const failures = [];
const browser = await launch();
const visible = (locator, timeout = 15000) => locator.first().waitFor({ state: "visible", timeout });
const MODEL = "fleet-ui";

// The fleet: each device asks for production with its id (its cohort's version, told by the ETag, the file's
// sha256) and reports running it; a Jetson on 2.0 fails 30 % of its requests and is three times slower.
const cpu = { platform: { os: "linux", arch: "amd64" }, ram: 16 };
const jetson = {
  platform: { os: "linux", arch: "arm64", variant: "v8", accelerators: [{ name: "cuda", version: "12.2" }] },
  gpu: true, gpuMemory: 7.4, ram: 8,
};
const devices = [
  ...[1, 2, 3].map((n) => ({ id: `cpu-box-${n}`, device: cpu, bad: false, version: "1.0" })),
  ...[1, 2, 3].map((n) => ({ id: `jetson-${n}`, device: jetson, bad: true, version: "1.0" })),
];
const byDigest = { [`"${sha10}"`]: "1.0", [`"${sha20}"`]: "2.0" };
const deviceHeaders = { authorization: `Bearer ${deviceToken}` };

async function tick(d) {
  const answer = await fetch(`${base}/model/${MODEL}/@production?device=${d.id}`, { method: "HEAD", headers: deviceHeaders });
  if (answer.ok) d.version = answer.headers.get("x-model-version") ?? byDigest[answer.headers.get("etag")] ?? d.version;
  const degraded = d.bad && d.version === "2.0";
  const report = await fetch(`${base}/devices/${d.id}/report`, {
    method: "POST",
    headers: { ...deviceHeaders, "content-type": "application/json" },
    body: JSON.stringify({
      device: d.device,
      running: [{ kind: "model", name: MODEL, version: d.version }],
      health: { requests: 100, errors: degraded ? 30 : 0, p99Ms: degraded ? 90 : 30 },
    }),
  });
  if (report.status !== 200) failures.push(`${d.id}'s report answered ${report.status}`);
}

let fleetBusy = false;
const fleetTick = async () => {
  if (fleetBusy) return;
  fleetBusy = true;
  try {
    await Promise.all(devices.map(tick));
  } catch (error) {
    failures.push(`the fleet: ${error}`);
  } finally {
    fleetBusy = false;
  }
};
await fleetTick();
const fleet = setInterval(fleetTick, 400);

const signIn = async (page, token) => {
  await page.goto(`${base}/ui/`);
  await page.getByLabel("Token", { exact: true }).fill(token);
  await page.getByRole("button", { name: "Use", exact: true }).click();
};

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await guardedPage(context, base, failures);
  await signIn(page, writeToken);
  await visible(page.getByText("Read and write"));
  await page.goto(`${base}/ui/#/model/${MODEL}`);
  await visible(page.getByRole("heading", { name: "Rollouts" }));
  await visible(page.getByText(`No rollout of ${MODEL} yet.`));

  // Who runs what, before: every device on 1.0, in two hardware classes.
  const runningRow = (version) => page.locator("table.running-versions tbody tr", { has: page.getByRole("rowheader", { name: version, exact: true }) });
  await visible(runningRow("1.0"));
  const before = await runningRow("1.0").innerText();
  check(failures, /\b6\b/.test(before) && before.includes("linux/amd64/v1@ram16g: 3") && before.includes("linux/arm64/v8+cuda@gpu8g: 3"),
    `devices on 1.0 by class: ${before}`);

  // A rollout of 2.0 in two steps of 3 s, started from the form.
  await page.getByText("Start a rollout", { exact: true }).click();
  check(failures, await page.getByLabel("Alias").inputValue() === "production", "the form proposes production");
  await page.getByLabel("Version").selectOption("2.0");
  await page.getByLabel("Steps (percent of each class)").fill("50, 100");
  await page.getByLabel("Seconds per step").fill("3");
  await page.getByLabel("Fewest reports").fill("1");
  failures.push(...(await seriousViolations(page)));
  await page.getByRole("button", { name: "Start rollout" }).click();
  await visible(page.locator(".notice").getByText("Started rolling out 2.0 as production."));
  const first = page.locator("article.rollout", { hasText: "1.0 → 2.0" });
  await visible(first);
  const classRow = (card, hardwareClass) => card.locator("table.rollout-classes tbody tr", { hasText: hardwareClass });
  await visible(classRow(first, "linux/amd64/v1@ram16g"));
  await visible(classRow(first, "linux/arm64/v8+cuda@gpu8g"));
  check(failures, (await first.locator(".meta").innerText()).includes("50 % → 100 %"), "the card names the steps");

  // The page follows the rollout by itself: the CPU boxes complete, the Jetsons revert and say why.
  const cpuRow = classRow(first, "linux/amd64/v1@ram16g");
  const jetsonRow = classRow(first, "linux/arm64/v8+cuda@gpu8g");
  await visible(jetsonRow.locator(".badge", { hasText: "reverted" }), 90000);
  await visible(cpuRow.locator(".badge", { hasText: "completed" }), 90000);
  await visible(first.locator("h3 .badge", { hasText: "completed" }), 30000);
  const cpuText = await cpuRow.innerText();
  check(failures, cpuText.includes("100 %"), `the CPU boxes reached 100 %: ${cpuText}`);
  const jetsonText = await jetsonRow.innerText();
  const reason = await jetsonRow.locator(".reason").innerText().catch(() => "");
  check(failures, reason.trim().length > 0, `the Jetsons say why they reverted: ${jetsonText}`);
  check(failures, jetsonText.includes("30.0 % errors"), `the Jetsons' figures on 2.0: ${jetsonText}`);
  check(failures, (await first.locator("progress").count()) === 2, "one progress bar per class");
  check(failures, await first.getByRole("button", { name: /Abort/ }).count() === 0, "a finished rollout has no buttons");
  await page.screenshot({ path: `${shots}/rollout.png`, fullPage: true });

  // Who runs what, after: the CPU boxes on 2.0, the Jetsons back on 1.0 (they asked again meanwhile).
  const settled = async () => {
    await page.getByRole("button", { name: "Refresh devices" }).click();
    const on20 = await runningRow("2.0").innerText().catch(() => "");
    const on10 = await runningRow("1.0").innerText().catch(() => "");
    return on20.includes("linux/amd64/v1@ram16g: 3") && !on20.includes("arm64") && on10.includes("linux/arm64/v8+cuda@gpu8g: 3")
      && !on10.includes("amd64") ? null : `2.0: ${on20} | 1.0: ${on10}`;
  };
  let unsettled = "not checked";
  for (let i = 0; i < 40 && unsettled; i += 1) {
    unsettled = await settled();
    if (unsettled) await page.waitForTimeout(250);
  }
  check(failures, !unsettled, `devices after the rollout: ${unsettled}`);

  // A second rollout (back to 1.0, one long step): paused, resumed and aborted from the page.
  await page.getByLabel("Version").selectOption("1.0");
  await page.getByLabel("Steps (percent of each class)").fill("100");
  await page.getByLabel("Seconds per step").fill("600");
  await page.getByRole("button", { name: "Start rollout" }).click();
  const second = page.locator("article.rollout", { hasText: "2.0 → 1.0" });
  await visible(second);
  await second.getByRole("button", { name: "Pause the rollout of production → 1.0" }).click();
  await visible(second.locator("h3 .badge", { hasText: "paused" }));
  await second.getByRole("button", { name: "Resume the rollout of production → 1.0" }).click();
  await visible(second.locator("h3 .badge", { hasText: "running" }));
  await second.getByRole("button", { name: "Abort the rollout of production → 1.0" }).click();
  await visible(second.locator("h3 .badge", { hasText: "aborted" }));
  await visible(page.locator(".notice").getByText("production stays on 2.0"));
  // Newest first.
  const headings = await page.locator("article.rollout h3").allInnerTexts();
  check(failures, headings.length === 2 && headings[0].includes("2.0 → 1.0"), `rollouts newest first: ${headings}`);
  // A start the server refuses says why, and one the page can tell is wrong is not sent.
  await page.getByLabel("Steps (percent of each class)").fill("ten");
  await page.getByRole("button", { name: "Start rollout" }).click();
  await visible(page.locator("form[aria-label='Start a rollout'] .error").getByText("is not a whole percent"));
  failures.push(...(await seriousViolations(page)));

  // A read token: the rollouts and the devices, no buttons, no form.
  const reader = await guardedPage(await browser.newContext({ viewport: { width: 1280, height: 900 } }), base, failures);
  await signIn(reader, readToken);
  await visible(reader.getByText("Read-only token"));
  await reader.goto(`${base}/ui/#/model/${MODEL}`);
  await visible(reader.locator("article.rollout", { hasText: "1.0 → 2.0" }));
  await visible(reader.locator("table.running-versions"));
  check(failures, await reader.getByRole("button", { name: /Pause|Resume|Abort|Start rollout/ }).count() === 0,
    "a read token gets no rollout buttons");
  check(failures, await reader.getByText("Start a rollout").count() === 0, "a read token gets no form");

  // A phone: one column, the class table scrolls on its own.
  const phone = await guardedPage(await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true }), base, failures);
  await signIn(phone, readToken);
  await phone.goto(`${base}/ui/#/model/${MODEL}`);
  await visible(phone.locator("article.rollout").first());
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(failures, overflow <= 0, `the page is ${overflow}px wider than a phone`);
  await phone.screenshot({ path: `${shots}/rollout-phone.png`, fullPage: true });
} catch (error) {
  failures.push(`${error.stack}`);
} finally {
  clearInterval(fleet);
  await browser.close();
}
finish(failures, "rollouts in the catalogue");
