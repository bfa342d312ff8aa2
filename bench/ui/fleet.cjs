// The fleet page under a simulated fleet, in headless Chromium, for `odigos-bench fleet --ui`.
// It prints one JSON line per measurement and waits for "go" on stdin before each change the
// benchmark makes:
//   {"render_ms"}    opening /fleet until the status bar counts every agent
//   {"update_ms"}    from "go" (one agent is then made to fail) until the page shows it
//   {"rollout_ms", "longest_frame_ms"}  from "go" (every agent gets a new config) until the
//                    page shows them all applied, and the longest gap between frames meanwhile
// Environment: ODIGOS_UI_LINK (the server's one-time sign-in link), ODIGOS_UI_NODE_MODULES,
// ODIGOS_AGENTS.

const path = require("path");
const readline = require("readline");
const { chromium } = require(path.join(process.env.ODIGOS_UI_NODE_MODULES, "playwright-core"));

const agents = Number(process.env.ODIGOS_AGENTS);
// Lines that arrive before they are awaited wait in a queue.
const lines = readline.createInterface({ input: process.stdin });
const queued = [];
const waiting = [];
lines.on("line", (line) => (waiting.length ? waiting.shift()(line) : queued.push(line)));
const go = () => (queued.length ? Promise.resolve(queued.shift()) : new Promise((resolve) => waiting.push(resolve)));
const say = (value) => console.log(JSON.stringify(value));
const note = (what) => console.error(`fleet page: ${what}`);

async function main() {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.setDefaultTimeout(120_000);

  const link = process.env.ODIGOS_UI_LINK;
  await page.goto(link);
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  note("signed in; opening /fleet");
  const opened = Date.now();
  await page.goto(new URL(link).origin + "/fleet");
  await page.getByText(`${agents} agents`, { exact: true }).waitFor();
  await page.getByTestId("agent-row").first().waitFor();
  say({ render_ms: Date.now() - opened });

  note("waiting for go (one agent fails)");
  await go();
  const changed = Date.now();
  await page.getByTestId("count-failed").getByText("1 failed").waitFor();
  say({ update_ms: Date.now() - changed });

  // Frame gaps while the whole fleet applies a config at once.
  await page.evaluate(() => {
    window.longestFrame = 0;
    let last = performance.now();
    const frame = (now) => {
      window.longestFrame = Math.max(window.longestFrame, now - last);
      last = now;
      if (!window.stopFrames) requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  });
  note("waiting for go (every agent applies)");
  await go();
  const pushed = Date.now();
  await page.getByTestId("count-applied").getByText(`${agents - 1} applied`).waitFor();
  const rollout = Date.now() - pushed;
  const longest = await page.evaluate(() => {
    window.stopFrames = true;
    return window.longestFrame;
  });
  say({ rollout_ms: rollout, longest_frame_ms: Math.round(longest) });
  await browser.close();
  lines.close();
}

main().catch((error) => {
  console.error(`failed: ${error.stack ?? error}`);
  process.exit(1);
});
