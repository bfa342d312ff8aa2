// Drives the UI of a running `odigos up` in headless Chromium, as a person would. It waits on
// the page's elements, never on the network going idle. Run by tests/tests/ui.rs, which passes:
//   ODIGOS_UI_LINK          the one-time sign-in link `odigos up` printed
//   ODIGOS_UI_NODE_MODULES  where playwright-core is installed
//   ODIGOS_UI_SHOTS         where to save a screenshot of every page, light and dark
//   ODIGOS_UI_ARCHIVE       a file path for the destination created through the form
//   ODIGOS_UI_ODIGLET       "1" when odiglet runs and must show APPLIED too
//   ODIGOS_UI_OTLP          host:port of a running OTLP/gRPC receiver
//   ODIGOS_UI_CLOSED        host:port where nothing listens
// Each step prints what it checked; the first failure ends the run with its reason.

const path = require("path");
const { chromium } = require(path.join(process.env.ODIGOS_UI_NODE_MODULES, "playwright-core"));

const link = process.env.ODIGOS_UI_LINK;
const shots = process.env.ODIGOS_UI_SHOTS;
const base = new URL(link).origin;
const TIMEOUT = 20_000;

function step(what) {
  console.log(`ok: ${what}`);
}

async function shoot(page, name) {
  for (const theme of ["light", "dark"]) {
    await page.evaluate((t) => {
      document.documentElement.dataset.theme = t;
    }, theme);
    await page.screenshot({ path: path.join(shots, `${name}-${theme}.png`), fullPage: true });
  }
  await page.evaluate(() => {
    document.documentElement.dataset.theme = localStorage.getItem("theme") ?? "light";
  });
}

/** Waits until the row of `testid` that names `text` shows the badge `badge`, exactly. */
async function rowWithBadge(page, testid, text, badge) {
  const row = page
    .getByTestId(testid)
    .filter({ hasText: text })
    .filter({ has: page.locator(".badge", { hasText: new RegExp(`^${badge}$`) }) });
  await row.first().waitFor({ timeout: TIMEOUT });
}

let current;

async function main() {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  current = page;
  page.setDefaultTimeout(TIMEOUT);
  // Errors the page logs once signed in (before, the API's 401 is expected).
  const consoleErrors = [];
  let signedIn = false;
  page.on("console", (m) => signedIn && m.type() === "error" && consoleErrors.push(m.text()));

  // Before signing in, the API refuses and the page asks for the token.
  await page.goto(base + "/fleet");
  await page.getByRole("button", { name: "Sign in" }).waitFor();
  step("without a session the page asks to sign in");

  // The printed link signs in, and the code leaves the address bar.
  await page.goto(link);
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  if (page.url().includes("login=")) throw new Error(`the login code stayed in the address: ${page.url()}`);
  await page.getByTestId("link-state").filter({ hasText: "live" }).waitFor();
  signedIn = true;
  step("signed in with the link; the live link is up");
  await shoot(page, "overview");

  // The fleet: the gateway and node collector (and odiglet) APPLIED.
  await page.getByRole("link", { name: "Fleet", exact: true }).click();
  const roles = ["gateway", "node"];
  if (process.env.ODIGOS_UI_ODIGLET === "1") roles.push("odiglet");
  for (const role of roles) {
    const applied = page.locator(".badge", { hasText: /^APPLIED$/ });
    await page.getByTestId("agent-row").filter({ hasText: role }).filter({ has: applied }).first().waitFor();
  }
  step(`fleet shows ${roles.join(", ")} APPLIED`);
  await shoot(page, "fleet");

  // An agent's page: its description and the desired config beside the effective one.
  await page.getByTestId("agent-row").filter({ hasText: "gateway" }).getByRole("link").click();
  await page.getByRole("heading", { name: "Desired and effective config" }).waitFor();
  await page.getByText("collector.yaml").first().waitFor();
  step("an agent's page shows its desired and effective config");
  await shoot(page, "agent");

  // A bad value is refused at its field, and nothing is created.
  await page.getByRole("link", { name: "Destinations", exact: true }).click();
  await page.getByRole("button", { name: "Add destination" }).click();
  await page.getByLabel("destination type").selectOption("otlp");
  await page.getByLabel("name", { exact: true }).fill("backend");
  await page.getByLabel("OTLP_GRPC_ENDPOINT").fill("not a url at all");
  await page.getByRole("button", { name: "Create" }).click();
  const fieldError = page.locator("label.field", { has: page.getByLabel("OTLP_GRPC_ENDPOINT") }).locator(".field-error");
  await fieldError.waitFor();
  step(`a bad endpoint is refused at its field: ${await fieldError.innerText()}`);
  await shoot(page, "destination-form-error");

  // Testing the connection sends an empty export and shows what the exporter said.
  const outcome = page.getByTestId("test-outcome");
  await page.getByLabel("OTLP_GRPC_ENDPOINT").fill(process.env.ODIGOS_UI_CLOSED);
  await page.getByRole("button", { name: "Test connection" }).click();
  await outcome.filter({ hasText: "Connection refused" }).waitFor();
  step(`a destination that is down fails its test: ${await outcome.innerText()}`);
  await shoot(page, "destination-test");
  await page.getByLabel("OTLP_GRPC_ENDPOINT").fill(process.env.ODIGOS_UI_OTLP);
  await page.getByRole("button", { name: "Test connection" }).click();
  await outcome.filter({ hasText: "took an empty export" }).waitFor();
  step(`a destination that is up passes its test: ${await outcome.innerText()}`);
  await page.getByRole("button", { name: "Cancel" }).click();

  // A destination made through its form rolls out to every collector.
  await page.getByRole("button", { name: "Add destination" }).click();
  await page.getByLabel("destination type").selectOption("file");
  await page.getByLabel("name", { exact: true }).fill("archive");
  await page.getByLabel("FILE_PATH").fill(process.env.ODIGOS_UI_ARCHIVE);
  await page.getByRole("button", { name: "Create" }).click();
  await rowWithBadge(page, "destination-row", "default/archive", "Applied");
  step("the destination made through the form is Applied");
  const progress = page.getByTestId("rollout-progress");
  await progress.filter({ hasText: "Rolled out" }).filter({ hasText: /gateway (\d+)\/\1/ }).waitFor();
  step(`the change is followed by its rollout: ${(await progress.innerText()).replace(/\s+/g, " ")}`);
  await shoot(page, "destinations");
  await page.getByRole("link", { name: "Rollouts", exact: true }).click();
  const gateway = page.getByTestId("rollout").filter({ has: page.getByRole("heading", { name: "gateway", exact: true }) });
  // Every gateway applied it: "N applied · 0 pending · 0 failed of N", N > 0.
  await gateway.getByText(/^([1-9]\d*) applied · 0 pending · 0 failed of \1$/).waitFor();
  step("the rollout reached every gateway");
  await gateway.getByText("Destination default/archive created").waitFor();
  const earlier = page.getByTestId("rollout-history").filter({ hasText: "superseded" }).filter({ hasText: "gateway" });
  await earlier.first().waitFor();
  step("the rollout says what change made it; the gateway's config before it is in the history, superseded");
  await shoot(page, "rollouts");

  // An Action through the form drawn from its schema: a second action block is refused at
  // the block, removing it lets the Action land, and an edit lands too.
  await page.getByRole("link", { name: "Actions", exact: true }).click();
  await page.getByRole("button", { name: "Add action" }).click();
  await page.getByLabel("name", { exact: true }).fill("rename-user");
  await page.getByLabel("spec.renameAttribute.renames").waitFor();
  await page.getByLabel("add spec.deleteAttribute").click();
  await page.getByLabel("spec.deleteAttribute.attributeNamesToDelete").fill("user.email");
  await page.getByRole("button", { name: "Create" }).click();
  const blockError = page.locator("fieldset", { has: page.getByLabel("remove spec.renameAttribute") }).locator(".field-error").first();
  await blockError.filter({ hasText: "an Action does one thing" }).waitFor();
  step(`two actions in one are refused at the block: ${await blockError.innerText()}`);
  await shoot(page, "action-form-error");
  await page.getByLabel("remove spec.deleteAttribute").click();
  await page.getByRole("button", { name: "Create" }).click();
  await rowWithBadge(page, "action-row", "default/rename-user", "Applied");
  step("the Action made through the form is Applied");
  const row = page.getByTestId("action-row").filter({ hasText: "default/rename-user" });
  await row.getByRole("button", { name: "Edit" }).click();
  await page.getByLabel("spec.renameAttribute.renames").fill("user.id=enduser.id\nuser.name=enduser.name");
  await page.getByRole("button", { name: "Save" }).click();
  await row.getByRole("button", { name: "default/rename-user" }).click();
  await row.locator("pre.document", { hasText: "user.name: enduser.name" }).waitFor();
  await rowWithBadge(page, "action-row", "default/rename-user", "Applied");
  step("the Action edited through the form is Applied with its new rename");
  await shoot(page, "actions");

  // A destination whose exporter cannot be built: the gateway FAILS it, and says why.
  await page.getByRole("link", { name: "Destinations", exact: true }).click();
  await page.getByRole("button", { name: "Add destination" }).click();
  await page.getByLabel("destination type").selectOption("file");
  await page.getByLabel("name", { exact: true }).fill("unwritable");
  await page.getByLabel("FILE_PATH").fill("/proc/odigos-cannot-write-here/spans.jsonl");
  await page.getByRole("button", { name: "Create" }).click();
  await rowWithBadge(page, "destination-row", "default/unwritable", "ApplyFailed");
  await page.getByRole("link", { name: "Fleet", exact: true }).click();
  const failed = page.getByTestId("agent-row").filter({ hasText: "gateway" }).filter({ has: page.locator(".badge", { hasText: /^FAILED$/ }) });
  await failed.getByText("default.unwritable").waitFor();
  step("the gateway shows FAILED with its error");
  await shoot(page, "fleet-failed");
  await failed.getByRole("link").click();
  const history = page.getByTestId("config-event");
  await history.filter({ hasText: "FAILED" }).first().waitFor();
  await history.filter({ hasText: "APPLIED" }).first().waitFor();
  step("the gateway's page lists its config history: applied, then failed");
  await shoot(page, "agent-failed");
  await page.getByRole("link", { name: "Problems", exact: true }).click();
  await page.getByTestId("problem").filter({ hasText: "gateway" }).first().waitFor();
  step("the Problems page lists the failed rollout");
  await shoot(page, "problems");

  for (const [name, to] of [["sources", "/sources"], ["rules", "/rules"], ["sampling", "/sampling"]]) {
    await page.getByRole("link", { name: name === "rules" ? "Rules" : name[0].toUpperCase() + name.slice(1), exact: true }).click();
    await page.waitForURL(base + to);
    await page.locator("h1").waitFor();
    await shoot(page, name);
  }
  step("every page rendered");

  // An SDK has been sending as `checkout` all along: the overview shows what flows on each edge.
  await page.getByRole("link", { name: "Overview", exact: true }).click();
  const flowing = (locator) => locator.locator(".rate").filter({ hasText: /^(?!0\/s$)[0-9.]+k?\/s$/ });
  await flowing(page.locator(".chip", { hasText: "checkout" })).waitFor();
  await flowing(page.getByTestId("edge-node-received")).waitFor();
  await flowing(page.getByTestId("edge-gateway-sent")).waitFor();
  step(`the overview shows live throughput: checkout ${await flowing(page.locator(".chip", { hasText: "checkout" })).innerText()}, node in ${await page.getByTestId("edge-node-received").innerText()}`);
  await shoot(page, "overview-live");

  // On a phone.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByRole("link", { name: "Overview", exact: true }).click();
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  await shoot(page, "overview-phone");

  if (consoleErrors.length) throw new Error(`the page logged errors: ${consoleErrors.join("; ")}`);
  await browser.close();
}

main().catch(async (error) => {
  console.error(`failed: ${error.stack ?? error}`);
  // What the page showed when it failed.
  await current?.screenshot({ path: path.join(shots, "failure.png"), fullPage: true }).catch(() => {});
  process.exit(1);
});
