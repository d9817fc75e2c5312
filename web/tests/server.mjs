// Starts `candela serve` on an ephemeral port with copies of the build's fixtures (the server
// refuses links that leave its folders), and Debian's chromium through playwright-core.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, "../..");
const build = process.env.CANDELA_BUILD ?? path.join(repo, "build");
const bin = process.env.CANDELA_BIN ?? path.join(build, "bin/candela");
const fixtures = process.env.CANDELA_FIXTURES ?? path.join(build, "fixtures");
const groundtruth = process.env.CANDELA_GROUNDTRUTH ?? path.join(build, "groundtruth");

function copy(from, to) {
  fs.mkdirSync(path.dirname(to), { recursive: true });
  fs.copyFileSync(from, to);
}

export async function startServer({ extraModels = [], extraData = [] } = {}) {
  for (const [what, p] of [["candela", bin], ["fixtures", fixtures], ["ground-truth sets", groundtruth], ["web UI (npm run build)", path.join(repo, "web/dist/index.html")]])
    if (!fs.existsSync(p)) throw new Error(`${what} not found at ${p}: run \`make build\` first`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "candela-web-"));
  const m = path.join(dir, "models"), d = path.join(dir, "data");
  for (const f of ["digits_cnn.pt", "digits_cnn.json", "breast_cancer_mlp.pt", "breast_cancer_mlp.json"]) copy(path.join(fixtures, f), path.join(m, f));
  for (const f of extraModels) copy(path.join(fixtures, f), path.join(m, f));
  for (const f of extraData) copy(path.join(fixtures, f), path.join(d, f));
  for (const f of ["model.pt", "model.json"]) copy(path.join(groundtruth, "patterns", f), path.join(m, "patterns", f));
  for (const f of ["digit_0.png", "digit_1.png", "digit_2.png", "digits_test.npy", "digits_test_labels.npy", "breast_cancer_test.npy", "breast_cancer_test_labels.npy"])
    if (fs.existsSync(path.join(fixtures, f))) copy(path.join(fixtures, f), path.join(d, f));
  for (const f of ["x_test.npy", "y_test.npy", "masks_test.npy"]) copy(path.join(groundtruth, "patterns", f), path.join(d, "patterns", f));
  // The shortcut set (a watermark the CNN leans on) for the audit.
  for (const f of ["model.pt", "model.json"]) copy(path.join(groundtruth, "shortcut", f), path.join(m, "shortcut", f));
  for (const f of ["x_test.npy", "y_test.npy"]) copy(path.join(groundtruth, "shortcut", f), path.join(d, "shortcut", f));
  const proc = spawn(bin, ["--threads", "2", "serve", "--models", m, "--data", d, "--results", path.join(dir, "results"), "--port", "0",
                           "--static", path.join(repo, "web/dist")], { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  const url = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`candela serve did not start:\n${log}`)), 30000);
    const on = (b) => {
      log += b;
      const hit = /serving on (http:\/\/[^/\s]+\/)/.exec(log);
      if (hit) { clearTimeout(t); resolve(hit[1]); }
    };
    proc.stdout.on("data", on);
    proc.stderr.on("data", on);
    proc.on("exit", (c) => reject(new Error(`candela serve exited with ${c}:\n${log}`)));
  });
  return { url, dir, stop: () => { proc.kill("SIGTERM"); fs.rmSync(dir, { recursive: true, force: true }); } };
}

export async function startBrowser() {
  const exe = process.env.CHROMIUM ?? ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => fs.existsSync(p));
  if (!exe) throw new Error("chromium not found: install Debian's chromium (scripts/install-deps.sh does)");
  return chromium.launch({ executablePath: exe, headless: true, args: ["--disable-gpu", "--disable-dev-shm-usage"] });
}

/** A page that records console errors and uncaught exceptions. */
export async function newPage(browser, url) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  page.errors = [];
  page.on("console", (m) => { if (m.type() === "error") page.errors.push(m.text()); });
  page.on("pageerror", (e) => page.errors.push(String(e)));
  page.on("response", async (r) => {
    if (r.status() >= 400) page.errors.push(`${r.status()} ${r.request().method()} ${r.url()}: ${(await r.text().catch(() => "")).slice(0, 200)} ${(r.request().postData() ?? "").slice(0, 200)}`);
  });
  page.base = url;
  return page;
}

/** The pixels of a canvas as a short digest plus summary numbers. */
export function pixels(page, selector) {
  return page.$eval(selector, (c) => {
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let h = 2166136261, colored = 0, distinct = new Set();
    for (let i = 0; i < d.length; i += 4) {
      h = Math.imul(h ^ (d[i] | (d[i + 1] << 8) | (d[i + 2] << 16)), 16777619);
      if (Math.abs(d[i] - d[i + 1]) > 12 || Math.abs(d[i + 1] - d[i + 2]) > 12) colored++;
      if (distinct.size < 64) distinct.add(`${d[i]},${d[i + 1]},${d[i + 2]}`);
    }
    return { hash: h >>> 0, colored, distinct: distinct.size, width: c.width, height: c.height };
  });
}
