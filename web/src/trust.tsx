// "Can I trust this?": completeness, the warnings of attribution.json, and checks: model
// parameter randomisation (a job), agreement with another method, deletion/insertion curves.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, MethodInfo, ModelInfo } from "./api";
import { cell, CellSpec, CellState, run } from "./cells";
import { Chart, curveOption } from "./charts";
import { methodsP } from "./explain";
import { useAsync } from "./data";
import { NdArray, writeNpy, toBase64 } from "./npy";
import { resize, spearman, topIoU, heatImage, toCanvas } from "./render";
import type { Sample } from "./samples";
import { announce } from "./state";
import { forText, isTokenModel, requestOptions, tokensOf } from "./text";

export function TrustPanel({ spec, st, method, sample, others, info }: { spec: CellSpec; st: CellState; method: MethodInfo; sample: Sample; others: MethodInfo[]; info?: ModelInfo }) {
  const a = st.attr ?? {};
  const delta = (a.convergence_delta as number[] | undefined)?.[0];
  const change = (a.output_change as number[] | undefined)?.[0];
  const warnings = (a.warnings as string[] | undefined) ?? [];
  // The body is built when first opened: a grid of many results stays light to re-render.
  const [open, setOpen] = useState(false);
  return (
    <details class="trust" data-testid="trust" onToggle={(e) => setOpen(open || (e.currentTarget as HTMLDetailsElement).open)}>
      <summary>Can I trust this?{warnings.length ? ` (${warnings.length} warning${warnings.length > 1 ? "s" : ""})` : ""}</summary>
      {open && <TrustBody spec={spec} st={st} method={method} sample={sample} others={others} info={info} delta={delta} change={change} warnings={warnings} />}
    </details>
  );
}

function TrustBody({ spec, st, method, sample, others, info, delta, change, warnings }: { spec: CellSpec; st: CellState; method: MethodInfo; sample: Sample; others: MethodInfo[]; info?: ModelInfo; delta?: number; change?: number; warnings: string[] }) {
  return (
    <>
      <p data-testid="completeness">
        {delta !== undefined
          ? <>Completeness: Σ attribution − (f(x) − f(baseline)) = <b>{delta.toPrecision(3)}</b>{change ? <> ({((100 * Math.abs(delta)) / Math.abs(change)).toFixed(2)}% of the change {change.toPrecision(4)})</> : null}</>
          : method.completeness ? "Completeness: not reported for this run." : `Completeness: ${method.name} does not claim to sum to the output change.`}
      </p>
      {warnings.map((w) => <p class="warn" role="note">⚠ {w}</p>)}
      <Randomisation spec={spec} st={st} sample={sample} />
      <Agreement spec={spec} st={st} others={others} info={info} />
      <Curves spec={spec} st={st} sample={sample} info={info} />
    </>
  );
}

function Randomisation({ spec, st, sample }: { spec: CellSpec; st: CellState; sample: Sample }) {
  const [state, setState] = useState<{ status: string; value?: number; fraction?: number; error?: string }>({ status: "idle" });
  const go = async () => {
    setState({ status: "queued" });
    try {
      // Text goes as its token ids (evaluate reads data sets: arrays, images, tables).
      const data = sample.kind === "text" && st.key ? { npy: toBase64(writeNpy(idsOf(await tokensOf(st.key)))) } : sample.input;
      let j = await api.evaluate({ model: spec.model, data, methods: [spec.method], metrics: ["model_parameter_randomisation"],
                                   method_options: Object.keys(spec.options).length ? { [spec.method]: spec.options } : {}, max_samples: 1 });
      while (j.state === "queued" || j.state === "running") {
        setState({ status: j.state, fraction: j.progress?.fraction });
        await new Promise((r) => setTimeout(r, 200));
        j = await api.job(j.id);
      }
      if (j.state !== "done") throw new Error(j.error ?? j.state);
      const r: any = await api.result(j.result ?? j.key);
      const value = r.summary.model_parameter_randomisation.methods[spec.method].mean;
      setState({ status: "done", value });
      announce(`randomisation check of ${spec.method}: ${value.toFixed(3)}`);
    } catch (e: any) { setState({ status: "error", error: String(e.message ?? e) }); }
  };
  return (
    <div data-testid="randomisation">
      <button type="button" onClick={go} disabled={state.status === "queued" || state.status === "running"}>Randomisation check</button>
      {(state.status === "queued" || state.status === "running") && <progress max={1} value={state.fraction ?? 0} aria-label="randomisation check progress" />}
      {state.status === "done" && <span> similarity to the map of a randomised model: <b>{state.value!.toFixed(3)}</b> {state.value! > 0.8 ? "⚠ barely changes: the map may not depend on what the model learned" : "(low is good: the map depends on the weights)"}</span>}
      {state.error && <span class="error"> {state.error}</span>}
    </div>
  );
}

function Agreement({ spec, st, others, info }: { spec: CellSpec; st: CellState; others: MethodInfo[]; info?: ModelInfo }) {
  const [all] = useAsync(() => methodsP, []);
  const methods = (all ?? []).filter((m) => !isTokenModel(info) || forText(m));
  const [other, setOther] = useState(others.find((m) => m.name !== spec.method)?.name ?? (isTokenModel(info) ? "occlusion" : "saliency"));
  const [asked, setAsked] = useState(false);
  const ospec = { ...spec, method: other, options: requestOptions(methods.find((m) => m.name === other), {}, info) };
  const o = cell(ospec).value;
  const diff = useRef<HTMLDivElement>(null);
  const stats = useMemo(() => {
    if (!asked || o.status !== "done" || !o.map || !st.map) return undefined;
    const a = st.map.data, b = resize(o.map, st.map.h, st.map.w);
    const na = Math.max(...Array.from(a, Math.abs)) || 1, nb = Math.max(...Array.from(b, Math.abs)) || 1;
    const d = Float32Array.from(a, (v, i) => v / na - b[i] / nb);
    return { rho: spearman(a, b), iou: topIoU(a, b, 10), d };
  }, [asked, o, st]);
  useEffect(() => {
    if (!stats || !diff.current || !st.map) return;
    const c = toCanvas(heatImage(stats.d, st.map.h, st.map.w, "signed", 1));
    c.style.width = "120px"; c.style.imageRendering = "pixelated";
    c.setAttribute("role", "img"); c.setAttribute("aria-label", `difference of the normalised maps of ${spec.method} and ${other}`);
    diff.current.replaceChildren(c);
  }, [stats]);
  return (
    <div data-testid="agreement">
      <label>Agreement with{" "}
        <select value={other} onChange={(e) => { setOther((e.target as HTMLSelectElement).value); setAsked(false); }}>
          {methods.filter((m) => m.name !== spec.method && m.family !== "global").map((m) => <option>{m.name}</option>)}
        </select></label>{" "}
      <button type="button" onClick={() => { setAsked(true); if (o.status === "idle") run(ospec, `${other} for comparison`); }}>Compare</button>
      {asked && o.status !== "done" && <span class="muted"> {o.status}{o.error ? `: ${o.error}` : ""}</span>}
      {stats && <p data-testid="agreement-result">Spearman ρ = <b>{stats.rho.toFixed(3)}</b>, top-10% IoU = <b>{stats.iou.toFixed(3)}</b>; difference map (red: {spec.method} higher):</p>}
      <div ref={diff} />
    </div>
  );
}

/** The model's input (its own space, after mean/std) as an array [1, C, H, W] or [1, F]. */
function modelInput(sample: Sample, info?: ModelInfo): NdArray | undefined {
  if (sample.array) return sample.array;
  if (!sample.image || !info) return undefined;
  const [c, h, w] = info.input.shape.length === 3 ? info.input.shape : [3, sample.image.height, sample.image.width];
  const cv = document.createElement("canvas");
  cv.width = w; cv.height = h;
  const ctx = cv.getContext("2d")!;
  ctx.drawImage(sample.image, 0, 0, w, h);
  const px = ctx.getImageData(0, 0, w, h).data;
  const [lo, hi] = info.input.range ?? [0, 1];
  const data = new Float32Array(c * h * w);
  for (let k = 0; k < c; k++) {
    const m = info.input.mean?.[k] ?? info.input.mean?.[0] ?? 0, s = info.input.std?.[k] ?? info.input.std?.[0] ?? 1;
    for (let i = 0; i < h * w; i++) {
      const p = c === 1 ? (px[i * 4] + px[i * 4 + 1] + px[i * 4 + 2]) / 3 : px[i * 4 + k];
      data[k * h * w + i] = (lo + ((hi - lo) * p) / 255 - m) / s;
    }
  }
  return { shape: [1, c, h, w], data };
}

/** Deletion and insertion (Petsiuk et al. 2018) for this sample: features in the order of the map,
 *  removed from the input (to 0, the "zeros" substrate of the deletion metric) or inserted into
 *  zeros; the target's softmax probability at each step, from one predict call. */
function Curves({ spec, st, sample, info }: { spec: CellSpec; st: CellState; sample: Sample; info?: ModelInfo }) {
  const [curves, setCurves] = useState<{ del: number[]; ins: number[] } | null>(null);
  const [err, setErr] = useState("");
  const go = async () => {
    try {
      if (sample.kind === "text") { setCurves(await textCurves(spec, st, info)); return; }
      const x = modelInput(sample, info);
      if (!x || !st.map) throw new Error("no input values for this sample");
      const n = st.map.h * st.map.w, ch = x.data.length / n;
      if (!Number.isInteger(ch)) throw new Error("the map's size does not match the input's");
      const order = Array.from(st.map.data.keys()).sort((i, j) => st.map!.data[j] - st.map!.data[i]);
      const steps = 20, rows: Float32Array[] = [];
      for (const insert of [false, true]) for (let s = 0; s <= steps; s++) {
        const k = Math.round((s / steps) * n);
        const r = insert ? new Float32Array(x.data.length) : Float32Array.from(x.data);
        for (let t = 0; t < k; t++) for (let c = 0; c < ch; c++) { const i = c * n + order[t]; r[i] = insert ? x.data[i] : 0; }
        rows.push(r);
      }
      const batch = new Float32Array(rows.length * x.data.length);
      rows.forEach((r, i) => batch.set(r, i * x.data.length));
      const p = await api.predict(spec.model, { npy: toBase64(writeNpy({ shape: [rows.length, ...x.shape.slice(1)], data: batch })) }, info?.classes ?? 1000);
      const prob = p.samples.map((s) => s.top.find((t) => t.class === spec.target)?.score ?? 0);
      setCurves({ del: prob.slice(0, steps + 1), ins: prob.slice(steps + 1) });
    } catch (e: any) { setErr(String(e.message ?? e)); }
  };
  const auc = (v: number[]) => v.slice(1).reduce((a, y, i) => a + (y + v[i]) / 2, 0) / (v.length - 1);
  const option = useMemo(() => curves && curveOption([{ name: "deletion", values: curves.del }, { name: "insertion", values: curves.ins }]), [curves]);
  return (
    <div data-testid="curves">
      <button type="button" onClick={go}>Deletion / insertion curves</button>
      {err && <span class="error"> {err}</span>}
      {curves && option && <>
        <Chart option={option} height={160} label={`deletion AUC ${auc(curves.del).toFixed(3)} (lower is better), insertion AUC ${auc(curves.ins).toFixed(3)} (higher is better)`} />
        <p class="muted" data-testid="auc">deletion AUC {auc(curves.del).toFixed(3)} (lower is better) · insertion AUC {auc(curves.ins).toFixed(3)} (higher is better)</p>
      </>}
    </div>
  );
}

const idsOf = (toks: { id: number }[]): NdArray => ({ shape: [1, toks.length], data: Float32Array.from(toks, (t) => t.id) });

/** Deletion and insertion over tokens: tokens in the order of their values are switched to the
 *  padding token (deletion) or from padding back to the text (insertion); [CLS], [SEP] and padding
 *  stay. The target's softmax probability at each of about 20 steps, from one predict call. */
async function textCurves(spec: CellSpec, st: CellState, info?: ModelInfo): Promise<{ del: number[]; ins: number[] }> {
  if (!st.key) throw new Error("no result to order the tokens by");
  const toks = await tokensOf(st.key);
  const pad = toks.find((t) => t.token === "[PAD]" || t.token === "<pad>")?.id ?? 0;
  const special = (t: { token: string }) => /^\[(CLS|SEP|PAD)\]$|^<\/?s>$|^<pad>$/.test(t.token);
  const order = toks.filter((t) => !special(t)).sort((a, b) => b.value - a.value).map((t) => t.index);
  if (!order.length) throw new Error("the text has no tokens to delete");
  const n = order.length, steps = Math.min(20, n), L = toks.length, rows: number[][] = [];
  for (const insert of [false, true]) for (let s = 0; s <= steps; s++) {
    const k = Math.round((s / steps) * n), r = toks.map((t) => (insert && !special(t) ? pad : t.id));
    for (let i = 0; i < k; i++) r[order[i]] = insert ? toks[order[i]].id : pad;
    rows.push(r);
  }
  const ids = { shape: [rows.length, L], data: Float32Array.from(rows.flat()) };
  const p = await api.predict(spec.model, { npy: toBase64(writeNpy(ids)) }, info?.classes ?? 2);
  const prob = p.samples.map((s) => s.top.find((t) => t.class === spec.target)?.score ?? 0);
  return { del: prob.slice(0, steps + 1), ins: prob.slice(steps + 1) };
}
