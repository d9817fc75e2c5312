// `candela report`'s HTML in Debian's chromium from file://: no console error, no request but the
// file itself, and the maps, charts and token highlights painted. Then the web UI's "Download
// report" button against a real `candela serve` (node --test; see server.mjs).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { startServer, startBrowser, newPage, pixels, repo } from "./server.mjs";

const build = process.env.CANDELA_BUILD ?? path.join(repo, "build");
const bin = process.env.CANDELA_BIN ?? path.join(build, "bin/candela");
const fixtures = process.env.CANDELA_FIXTURES ?? path.join(build, "fixtures");
const web = path.join(repo, "web/dist");

let browser, dir;
before(async () => {
  if (!fs.existsSync(path.join(web, "report.html"))) throw new Error(`${web}/report.html not found: run \`make build\` first`);
  browser = await startBrowser();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "candela-report-"));
});
after(async () => { await browser?.close(); if (dir) fs.rmSync(dir, { recursive: true, force: true }); });

function report(name, args) {
  const out = path.join(dir, name);
  execFileSync(bin, ["--threads", "2", "report", "--quiet", ...args, "--web", web, "--out", out], { stdio: ["ignore", "pipe", "pipe"] });
  return out;
}

/** The report opened from file://, every request and console error recorded. */
async function open(file) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  const errors = [], requests = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("request", (r) => requests.push(r.url()));
  const url = pathToFileURL(file).href;
  await page.goto(url);
  await page.waitForSelector('[data-testid="report-sample"]');
  const done = () => {
    assert.deepEqual(errors, []);
    assert.deepEqual(requests, [url], "the report requests nothing but itself");
  };
  return { page, done, close: () => context.close() };
}

test("an image report paints every map on one scale, with curves and words, offline", async () => {
  const file = report("digits.html", ["--model", path.join(fixtures, "digits_cnn.pt"), "--input", path.join(fixtures, "digit_0.png"),
    "--methods", "saliency,input_x_gradient,grad_cam", "--layer", "features.2", "--curve-steps", "8", "--no-randomisation"]);
  const { page, done, close } = await open(file);
  await page.waitForFunction(() => document.querySelectorAll('canvas[data-testid^="map-"][data-painted]').length === 3, null, { timeout: 30000 });
  for (const m of ["saliency", "input_x_gradient", "grad_cam"]) {
    const p = await pixels(page, `canvas[data-testid="map-s0-${m}"]`);
    assert.ok(p.colored > 100, `${m}: the overlay has colour (${p.colored} coloured pixels)`);
    assert.ok(p.distinct > 8, `${m}: the map is not one flat colour`);
  }
  // One shared colour scale: every colour bar shows the same range.
  const his = await page.$$eval('[data-testid="colorbar"]', (b) => b.map((e) => Number(e.dataset.hi)));
  assert.equal(new Set(his).size, 1, `one scale, got ${his}`);
  assert.ok(his[0] > 0);
  // The trust figures and the explanation in words.
  assert.equal(await page.locator('[data-testid="curves"] canvas').count(), 3);
  assert.match(await page.textContent('[data-testid="cell-saliency"] [data-testid="auc"]'), /deletion AUC \d/);
  assert.match(await page.textContent('[data-testid="cell-saliency"] [data-testid="words"]'), /The model predicts class 2/);
  assert.match(await page.textContent('[data-testid="agreement"]'), /saliency \/ input_x_gradient/);
  assert.match(await page.textContent('[data-testid="top1"]'), /top-1: 2/);
  // A control redraws the maps.
  const before = (await pixels(page, 'canvas[data-testid="map-s0-saliency"]')).hash;
  await page.check('input[name="mode"][value="heatmap"]');
  await page.waitForTimeout(100);
  assert.notEqual((await pixels(page, 'canvas[data-testid="map-s0-saliency"]')).hash, before);
  done();
  await close();
});

test("a tabular report draws a waterfall per method; a text report highlights tokens", async () => {
  let file = report("tabular.html", ["--model", path.join(fixtures, "breast_cancer_mlp.pt"), "--input", path.join(fixtures, "breast_cancer_test.npy"),
    "--methods", "integrated_gradients,input_x_gradient", "--max-samples", "2", "--curve-steps", "5"]);
  let o = await open(file);
  assert.equal(await o.page.locator('[data-testid="report-sample"]').count(), 2);
  await o.page.waitForSelector('[data-testid="tabular"] canvas');
  assert.equal(await o.page.locator('[data-testid="tabular"]').count(), 4);
  const p = await pixels(o.page, '[data-testid="cell-integrated_gradients"] [data-testid="tabular"] canvas');
  assert.ok(p.colored > 200, `the waterfall has coloured bars (${p.colored})`);
  assert.match(await o.page.textContent('[data-testid="cell-integrated_gradients"] [data-testid="randomisation"]'), /similarity to the map of a randomised model/);
  o.done();
  await o.close();

  file = report("text.html", ["--model", path.join(fixtures, "text_bert.pt"), "--input", "a wonderful movie, really great",
    "--methods", "attn_lrp,layer_integrated_gradients", "--layer", "tok", "--no-randomisation", "--curve-steps", "4"]);
  o = await open(file);
  const spans = await o.page.$$eval('[data-testid="tokens"] span', (s) => s.map((e) => [e.textContent, getComputedStyle(e).backgroundColor]));
  assert.ok(spans.some(([t]) => t === "wonderful"), JSON.stringify(spans));
  assert.ok(spans.filter(([, c]) => c !== "rgb(247, 247, 247)").length > 3, `tokens are coloured: ${JSON.stringify(spans)}`);
  o.done();
  await o.close();
});

test("the explain view's Download report button gives the same kind of file", async () => {
  const server = await startServer();
  try {
    const page = await newPage(browser, server.url);
    await page.goto(`${server.url}#/explain?model=digits_cnn.pt&sample=d:digit_0.png&methods=saliency,grad_cam&targets=2`);
    await page.waitForSelector('canvas[data-testid^="map-saliency-"][data-painted]', { timeout: 60000 });
    const [download] = await Promise.all([page.waitForEvent("download", { timeout: 120000 }),
                                          page.click('[data-testid="download-report"] button')]);
    const saved = path.join(dir, "downloaded.html");
    await download.saveAs(saved);
    const html = fs.readFileSync(saved, "utf8");
    const data = JSON.parse(/<script type="application\/json" id="candela-report">([^<]*)<\/script>/.exec(html)[1]);
    assert.deepEqual(data.samples[0].results.map((r) => r.method), ["saliency", "grad_cam"]);
    assert.equal(data.samples[0].results[0].attribution.targets[0], 2);
    assert.deepEqual(page.errors, []);
    await page.context().close();
    const o = await open(saved);
    await o.page.waitForFunction(() => document.querySelectorAll('canvas[data-testid^="map-"][data-painted]').length === 2, null, { timeout: 30000 });
    o.done();
    await o.close();
  } finally {
    server.stop();
  }
});
