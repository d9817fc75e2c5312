// The web UI's speed in Debian's chromium against `candela serve` (numbers for the note):
//   1. first load on localhost: navigation start → the UI rendered, and → the data view's samples listed;
//   2. click → painted overlay for a cached result (performance marks in the page);
//   3. the grid with 6 methods × 3 classes on a 224² image (resnet18): frame time while the
//      opacity slider moves (requestAnimationFrame deltas over 60 input events).
// Usage: node bench/web/bench_ui.mjs [--repeat N]      (after `make build`; BUILD=build by default)
//   --help   this text
import { startServer, startBrowser, newPage, repo } from "../../web/tests/server.mjs";
import fs from "node:fs";
import path from "node:path";

if (process.argv.includes("--help")) {
  console.log(fs.readFileSync(new URL(import.meta.url)).toString().split("\n").filter((l) => l.startsWith("//")).map((l) => l.slice(3)).join("\n"));
  process.exit(0);
}
const repeat = Number(process.argv[process.argv.indexOf("--repeat") + 1]) || 5;
const median = (v) => v.slice().sort((a, b) => a - b)[Math.floor(v.length / 2)];

const server = await startServer({ extraModels: ["resnet18.pt", "resnet18.json"], extraData: ["sample_224.png"] });
const browser = await startBrowser();
try {
  // 1. first load
  const loads = [], shells = [];
  for (let i = 0; i < repeat; i++) {
    const page = await newPage(browser, server.url);
    const t0 = Date.now();
    await page.goto(`${server.url}#/data?model=digits_cnn.pt`);
    await page.waitForSelector("nav a");
    shells.push(Date.now() - t0);
    await page.waitForSelector(".sample button");
    loads.push(Date.now() - t0);
    await page.context().close();
  }
  // 2. click → painted overlay, result cached by the server (the first visit computes it)
  const page = await newPage(browser, server.url);
  const url = `${server.url}#/explain?model=digits_cnn.pt&sample=d:digit_0.png`;
  await page.goto(url + "&methods=saliency");
  await page.waitForSelector('canvas[data-testid^="map-saliency-"][data-painted]');
  const clicks = [];
  for (let i = 0; i < repeat; i++) {
    await page.goto(url);
    await page.reload();
    await page.waitForSelector('button[data-method="saliency"]');
    await page.waitForSelector('[data-testid="top1"]');
    const ms = await page.evaluate(() => new Promise((resolve) => {
      const t0 = performance.now();
      const obs = new MutationObserver(() => {
        const c = document.querySelector('canvas[data-testid^="map-saliency-"][data-painted]');
        if (c) { obs.disconnect(); requestAnimationFrame(() => resolve(performance.now() - t0)); }
      });
      obs.observe(document.body, { subtree: true, childList: true, attributes: true });
      document.querySelector('button[data-method="saliency"]').click();
    }));
    clicks.push(ms);
  }
  await page.context().close();
  // 3. 6 methods × 3 classes on resnet18 224²
  const methods = "saliency,input_x_gradient,grad_cam,guided_backprop,grad_cam_plus_plus,layer_cam";
  const grid = await newPage(browser, server.url);
  const t0 = Date.now();
  await grid.goto(`${server.url}#/explain?model=resnet18.pt&sample=d:sample_224.png&methods=${methods}&targets=0,1,2`);
  await grid.waitForFunction(() => document.querySelectorAll('canvas[data-testid^="map-"][data-painted]').length === 18, null, { timeout: 300000 });
  const gridSeconds = (Date.now() - t0) / 1000;
  // Per slider event: the work (input event → every canvas redrawn, measured after a macrotask so
  // Preact's batched render and its layout effects are included), then the frame (rAF delta).
  const { work, frames } = await grid.evaluate(async () => {
    const slider = document.querySelector('input[data-testid="opacity"]');
    const work = [], frames = [];
    let last = performance.now();
    for (let i = 0; i < 60; i++) {
      const t0 = performance.now();
      slider.value = String((i % 20) / 20);
      slider.dispatchEvent(new Event("input", { bubbles: true }));
      await new Promise((r) => setTimeout(r, 0));
      work.push(performance.now() - t0);
      await new Promise((r) => requestAnimationFrame(() => r()));
      const now = performance.now();
      frames.push(now - last);
      last = now;
    }
    return { work, frames };
  });
  const pct = (v, q) => v.slice().sort((a, b) => a - b)[Math.floor(v.length * q)];
  const dist = path.join(repo, "web/dist/assets");
  const { gzipSync } = await import("node:zlib");
  const gz = fs.readdirSync(dist).filter((f) => f.endsWith(".js")).reduce((a, f) => a + gzipSync(fs.readFileSync(path.join(dist, f))).length, 0);
  console.log(JSON.stringify({
    first_load_ui_ms_median: median(shells), first_load_samples_listed_ms_median: median(loads), first_load_ms: loads,
    click_to_painted_cached_ms_median: Math.round(median(clicks) * 10) / 10, click_to_painted_ms: clicks.map((x) => Math.round(x)),
    grid_6x3_resnet18_seconds_to_all_painted: gridSeconds,
    opacity_work_ms_median: Math.round(median(work) * 10) / 10, opacity_work_ms_p95: Math.round(pct(work, 0.95) * 10) / 10,
    opacity_frame_ms_median: Math.round(median(frames) * 10) / 10, opacity_frame_ms_p95: Math.round(pct(frames, 0.95) * 10) / 10,
    shipped_js_gzip_bytes: gz,
  }, null, 2));
} finally {
  await browser.close();
  server.stop();
}
