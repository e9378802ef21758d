// Signatures in the catalogue (tests/ui.rs seeded a model with a file and a trust policy naming one key): a
// bundle chosen in the page is attached and shown verified with its signer; one from a key the policy does not
// name is shown not verified with the reason; a per-platform file's signatures are in its row; axe-core is happy.
//   node playground/test/signing.mjs <base URL> <screenshot dir> <trusted bundle> <untrusted bundle> <fingerprint>
import { check, finish, guardedPage, launch, seriousViolations } from "./common.mjs";

const [base, shots, trusted, untrusted, fingerprint] = process.argv.slice(2);
const failures = [];
const browser = await launch();
const visible = (locator, timeout = 15000) => locator.first().waitFor({ state: "visible", timeout });

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await guardedPage(context, base, failures);
  await page.goto(`${base}/ui/#/model/signed-model/1.0`);
  await visible(page.getByRole("heading", { name: "Signatures" }));
  await visible(page.getByText("Not signed."));

  const attach = async (bundle) => {
    await page.locator("#signature-bundle").setInputFiles(bundle);
    await page.getByRole("button", { name: "Attach", exact: true }).click();
  };
  await attach(trusted);
  await visible(page.locator(".signatures .badge.good", { hasText: "verified" }));
  await visible(page.locator(".signatures", { hasText: fingerprint }));
  await attach(untrusted);
  const refused = page.locator(".signatures .badge.bad", { hasText: "not verified" });
  await visible(refused);
  const reason = await page.locator(".signatures li").nth(1).innerText();
  check(failures, /key|policy/i.test(reason), `the unverified signature says why: ${reason}`);
  check(failures, (await page.locator(".signatures li").count()) >= 2, "both signatures are listed");
  await page.screenshot({ path: `${shots}/signatures.png`, fullPage: true });
  failures.push(...(await seriousViolations(page)));
} catch (error) {
  failures.push(`${error.stack}`);
} finally {
  await browser.close();
}
finish(failures, "signatures in the catalogue");
