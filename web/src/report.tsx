// `candela report`'s page: one self-contained file. The data is the JSON that the C++ report
// builder (candela/app/report.h) puts into <script id="candela-report">; the pictures are drawn
// with the explain view's own components (HeatmapPanel, TabularPanel, Chart), so both look the
// same. Nothing here fetches: the page opens from file:// with no network.
import { render } from "preact";
import { useMemo, useState } from "preact/hooks";
import type { CellState } from "./cells";
import { Chart, barsOption, curveOption } from "./charts";
import { HeatmapPanel, Colorbar } from "./panel";
import { arrayImage, toCanvas, valueColor, Mode, Sign } from "./render";
import type { Look } from "./scale";
import type { Sample } from "./samples";
import { TabularPanel } from "./tabular";
import "./style.css";

interface Top { class: number; score: number; name?: string }
interface Sentence { kind: string; text: string }
interface Curves { deletion?: number[]; insertion?: number[]; deletion_auc?: number; insertion_auc?: number; error?: string }
interface Randomisation { similarity?: number; layers?: string[]; similarity_per_layer?: number[]; error?: string; options?: { mode?: string } }
interface Token { token: string; value: number; word: number }
interface Result {
  method: string; attribution: Record<string, any>; map?: { h: number; w: number; f32: string }; map_error?: string;
  tokens?: { tokens: Token[] }; curves: Curves; randomisation?: Randomisation;
}
interface ReportSample {
  index: number; label: string; image?: { h: number; w: number; c: number; u8: string };
  values?: { shape: number[]; f32: string }; prediction: Top[]; results: Result[];
  agreement: { a: string; b: string; spearman: number | null; top_iou: number | null }[];
  caveats?: Sentence[];
}
interface MethodFacts { name: string; family: string; description: string; reference: string; completeness: boolean }
export interface ReportData {
  format: string; version: number; kind: "image" | "tabular" | "text" | "array"; title: string;
  model: { name: string; file: string; output_kind: string; class_names: string[]; input_spec: Record<string, unknown> };
  input: { label: string; samples: number; shown: number };
  settings: { target: string; top_k: number; curve_steps: number; randomisation: boolean; baseline: string; agreement_top_fraction: number };
  methods: MethodFacts[]; samples: ReportSample[];
}

function bytes(b64: string): Uint8Array {
  const s = atob(b64);
  const u = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
  return u;
}
const floats = (b64: string) => new Float32Array(bytes(b64).buffer);

/** The input picture: RGB(A) bytes [H, W, C] as the report stores them. */
function imageCanvas(img: NonNullable<ReportSample["image"]>): HTMLCanvasElement {
  const u = bytes(img.u8), out = new ImageData(img.w, img.h);
  for (let i = 0; i < img.w * img.h; i++) {
    for (let k = 0; k < 3; k++) out.data[i * 4 + k] = u[i * img.c + (img.c >= 3 ? k : 0)];
    out.data[i * 4 + 3] = 255;
  }
  return toCanvas(out);
}

const fmt = (v: number | null | undefined, d = 3) => (v === null || v === undefined || !Number.isFinite(v) ? "–" : v.toPrecision(d));

function Controls({ look, setLook, image }: { look: Look; setLook: (l: Look) => void; image: boolean }) {
  const radio = (name: string, key: "mode" | "sign", values: [string, string][]) => (
    <fieldset><legend>{name}</legend>
      {values.map(([v, label]) => (
        <label style={{ marginRight: ".4rem" }}><input type="radio" name={key} value={v} checked={look[key] === v}
          onChange={() => setLook({ ...look, [key]: v })} /> {label}</label>
      ))}
    </fieldset>
  );
  return (
    <div class="controls card" data-testid="controls" style={{ margin: ".6rem 0" }}>
      {image && radio("Show", "mode", [["input", "input"], ["heatmap", "heatmap"], ["overlay", "overlay"], ["mask", "top-k% mask"]])}
      {radio("Sign", "sign", [["signed", "signed"], ["absolute", "absolute"], ["positive", "positive"], ["negative", "negative"]])}
      <label>Opacity <input type="range" min={0} max={1} step={0.05} value={look.opacity}
        onInput={(e) => setLook({ ...look, opacity: Number((e.target as HTMLInputElement).value) })} /> {look.opacity.toFixed(2)}</label>
      <span class="muted">one shared colour scale for every map in this report</span>
    </div>
  );
}

function Prediction({ top, names }: { top: Top[]; names: string[] }) {
  const labels = top.map((t) => t.name ?? names[t.class] ?? String(t.class));
  const option = useMemo(() => barsOption(labels, top.map((t) => t.score)), [top]);
  return (
    <div data-testid="prediction">
      <Chart option={option} height={Math.max(60, 26 * top.length)} label={`Top ${top.length} predictions`} />
      <ol class="sr-only">{top.map((t, i) => <li>{labels[i]}: {t.score.toPrecision(4)}</li>)}</ol>
      <p class="muted" data-testid="top1">top-1: {labels[0]} ({top[0]?.score.toFixed(3)})</p>
    </div>
  );
}

/** Tokens on the diverging scale of the maps, scaled by the largest |value| of the sample's methods. */
function TokenText({ tokens, scale, sign }: { tokens: Token[]; scale: number; sign: Sign }) {
  return (
    <p class="tokens" data-testid="tokens" style={{ lineHeight: 1.9 }}>
      {tokens.filter((t) => t.token !== "[PAD]").map((t) => {
        const v = sign === "signed" ? t.value : sign === "absolute" ? Math.abs(t.value) : sign === "positive" ? Math.max(t.value, 0) : Math.max(-t.value, 0);
        const [r, g, b] = valueColor(sign, v, scale);
        return <span title={`${t.token}: ${t.value.toPrecision(4)}`} style={{ background: `rgb(${r},${g},${b})`, padding: "1px 3px", marginRight: "2px", borderRadius: "3px" }}>{t.token}</span>;
      })}
    </p>
  );
}

function Trust({ r, facts, steps }: { r: Result; facts?: MethodFacts; steps: number }) {
  const a = r.attribution;
  const delta = a.convergence_delta?.[0] as number | null | undefined;
  const change = a.output_change?.[0] as number | null | undefined;
  const warnings = (a.warnings ?? []) as { message: string }[];
  const c = r.curves;
  const option = useMemo(() => (c.deletion && c.insertion ? curveOption([{ name: "deletion", values: c.deletion }, { name: "insertion", values: c.insertion }]) : undefined), [c]);
  const rnd = r.randomisation;
  return (
    <div class="trust" data-testid="trust">
      <h5 style={{ margin: ".4rem 0 .2rem" }}>Can I trust this?</h5>
      <p data-testid="completeness">
        {delta !== undefined && delta !== null
          ? <>Completeness: Σ attribution − (f(x) − f(baseline)) = <b>{delta.toPrecision(3)}</b>{change ? <> ({((100 * Math.abs(delta)) / Math.abs(change)).toFixed(2)}% of the change {change.toPrecision(4)})</> : null}</>
          : facts?.completeness ? "Completeness: not reported for this run." : `Completeness: ${r.method} does not claim to sum to the output change.`}
      </p>
      {warnings.map((w) => <p class="warn" role="note">⚠ {w.message}</p>)}
      <p data-testid="randomisation">
        {!rnd ? "Randomisation check: not run (--no-randomisation)."
          : rnd.error ? <>Randomisation check: not available ({rnd.error}).</>
          : <>Randomisation check: similarity to the map of a randomised model <b>{fmt(rnd.similarity)}</b>{" "}
              {rnd.similarity! > 0.8 ? "⚠ barely changes: the map may not depend on what the model learned" : "(low is good: the map depends on the weights)"}
              {rnd.layers && <span class="muted"> ({rnd.options?.mode === "full" ? `${rnd.layers[0]} randomised at once` : `${rnd.layers.length} layers randomised, top down, cascading`}, Spearman)</span>}</>}
      </p>
      <div data-testid="curves">
        {c.error ? <p class="muted">Deletion / insertion curves: not available ({c.error}).</p> : option && <>
          <Chart option={option} height={160} label={`deletion AUC ${fmt(c.deletion_auc)} (lower is better), insertion AUC ${fmt(c.insertion_auc)} (higher is better)`} />
          <p class="muted" data-testid="auc">deletion AUC {fmt(c.deletion_auc)} (lower is better) · insertion AUC {fmt(c.insertion_auc)} (higher is better) · {steps} steps, features to zeros</p>
        </>}
      </div>
    </div>
  );
}

function SampleView({ d, s, look }: { d: ReportData; s: ReportSample; look: Look }) {
  const names = d.model.class_names ?? [];
  const input = useMemo(() => (s.image ? imageCanvas(s.image) : undefined), [s]);
  const values = useMemo(() => (s.values ? { shape: [1, ...s.values.shape], data: floats(s.values.f32) } : undefined), [s]);
  const arrayCanvas = useMemo(() => (d.kind === "array" && values && values.shape.length >= 3 ? toCanvas(arrayImage(values)) : undefined), [values]);
  const maps = useMemo(() => s.results.map((r) => (r.map ? { h: r.map.h, w: r.map.w, data: floats(r.map.f32) } : undefined)), [s]);
  const tokenScale = Math.max(0, ...s.results.flatMap((r) => r.tokens?.tokens.map((t) => Math.abs(t.value)) ?? []));
  return (
    <section class="report-sample" data-testid="report-sample" aria-labelledby={`sample-${s.index}`}>
      <h2 id={`sample-${s.index}`}>Sample {s.index}: {s.label}</h2>
      <div class="row">
        <div class="card col" style={{ width: "230px" }}>
          <h3>Input</h3>
          {input && <canvas role="img" aria-label={`input ${s.label}`} data-testid="input-canvas" style={{ width: "192px", imageRendering: "pixelated" }}
                            ref={(c) => { if (c && input) { c.width = input.width; c.height = input.height; c.getContext("2d")!.drawImage(input, 0, 0); } }} />}
          {d.kind === "text" && s.results[0]?.tokens && <p>{s.results[0].tokens.tokens.filter((t) => !t.token.startsWith("[")).map((t) => t.token).join(" ")}</p>}
          {d.kind === "tabular" && values && <p class="muted">{values.data.length} features (the table under each method lists them)</p>}
        </div>
        <div class="card col" style={{ minWidth: "300px", flex: 1 }}>
          <h3>Prediction</h3>
          <Prediction top={s.prediction} names={names} />
        </div>
      </div>
      <div class="grid" role="grid" aria-label="Explanations: one column per method" data-testid="grid"
           style={{ gridTemplateColumns: `repeat(${s.results.length}, minmax(${d.kind === "tabular" ? 360 : 230}px, 1fr))`, marginTop: ".6rem" }}>
        <div role="row" style={{ display: "contents" }}>
          {s.results.map((r, k) => {
            const a = r.attribution;
            const target = a.target_names?.[0] ?? a.targets?.[0] ?? "?";
            const map = maps[k];
            const st: CellState = { status: "done", map, attr: a };
            const sample: Sample | undefined = values && { ref: `report:${s.index}`, label: s.label, input: { npy: "" }, kind: "tabular", array: values,
              columns: featureNames(a, values.data.length) };
            return (
              <div class="cell" role="gridcell" data-testid={`cell-${r.method}`}>
                <h4>{r.method} · {String(target)}</h4>
                {!map ? <p class="muted">No map: {r.map_error}</p>
                  : d.kind === "tabular" && sample ? <TabularPanel st={st} sample={sample} />
                  : d.kind === "text" && r.tokens ? <><TokenText tokens={r.tokens.tokens} scale={tokenScale} sign={look.sign} />
                      <Colorbar sign={look.sign} lo={look.sign === "signed" ? -tokenScale : 0} hi={tokenScale} /></>
                  : <HeatmapPanel id={`s${s.index}-${r.method}`} st={st} look={look} input={input ?? arrayCanvas} label={`${r.method} for ${target}`} />}
                {a.summary?.[0] && (
                  <details open data-testid="words"><summary>In words</summary>
                    <ul>{(a.summary[0].sentences as Sentence[]).map((x) => <li class={x.kind === "warning" || x.text.startsWith("Caveat") ? "warn" : ""}>{x.text}</li>)}</ul>
                  </details>
                )}
                <Trust r={r} facts={d.methods.find((m) => m.name === r.method)} steps={d.settings.curve_steps} />
              </div>
            );
          })}
        </div>
      </div>
      {s.caveats && s.caveats.length > 0 && (
        <div class="card" data-testid="caveats" style={{ marginTop: ".6rem" }}>
          <h3>Caveats</h3>
          <ul>{s.caveats.map((x) => <li class="warn">{x.text}</li>)}</ul>
        </div>
      )}
      {s.agreement.length > 0 && (
        <div class="card" data-testid="agreement" style={{ marginTop: ".6rem" }}>
          <h3>Agreement between methods</h3>
          <table>
            <thead><tr><th scope="col">methods</th><th scope="col">Spearman ρ</th><th scope="col">top-{Math.round(100 * d.settings.agreement_top_fraction)}% IoU</th></tr></thead>
            <tbody>{s.agreement.map((g) => <tr><td>{g.a} / {g.b}</td><td>{fmt(g.spearman)}</td><td>{fmt(g.top_iou)}</td></tr>)}</tbody>
          </table>
          <p class="muted">Rank correlation of the two maps, and the overlap of their {Math.round(100 * d.settings.agreement_top_fraction)}% largest |values|: low values mean the methods point at different evidence.</p>
        </div>
      )}
    </section>
  );
}

/** Feature names in input order from attribution.json's "features" (largest first, with their index). */
function featureNames(a: Record<string, any>, n: number): string[] {
  const out = Array.from({ length: n }, (_, i) => `x${i}`);
  for (const f of (a.features?.[0] ?? []) as { index: number; feature: string }[]) if (f.index < n) out[f.index] = f.feature;
  return out;
}

function Report({ d }: { d: ReportData }) {
  const [look, setLook] = useState<Look>({ mode: "overlay" as Mode, sign: "signed", opacity: 0.6, clip: 98, shared: true, smooth: false, topk: 10 });
  return (
    <>
      <header><h1>{d.title}</h1></header>
      <main>
        <p data-testid="report-meta">Model <b>{d.model.file}</b> ({d.model.output_kind}), input <b>{d.input.label}</b>
          {d.input.samples > d.input.shown ? <> (the first {d.input.shown} of {d.input.samples} samples)</> : null}; target {d.settings.target};
          baseline {d.settings.baseline}. Made by <code>candela report</code>.</p>
        <details class="card"><summary>Methods</summary>
          <ul>{d.methods.map((m) => <li><b>{m.name}</b> ({m.family}): {m.description} <span class="muted">{m.reference}</span></li>)}</ul>
        </details>
        {d.kind !== "tabular" && <Controls look={look} setLook={setLook} image={d.kind !== "text"} />}
        {d.samples.map((s) => <SampleView d={d} s={s} look={look} />)}
      </main>
    </>
  );
}

const el = document.getElementById("candela-report");
const data = el?.textContent ? (JSON.parse(el.textContent) as ReportData | null) : null;
const app = document.getElementById("app")!;
if (!data) render(<main><h1>Candela report</h1><p>This is the report template: <code>candela report</code> fills it with data.</p></main>, app);
else {
  document.title = data.title;
  render(<Report d={data} />, app);
}
