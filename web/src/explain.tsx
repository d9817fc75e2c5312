// Explain: prediction, targets, methods with their options, image controls, and a grid with one
// row per target class and one column per method; each cell has its trust panel.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { signal } from "@preact/signals";
import { api, MethodInfo, ModelInfo, Option, Top } from "./api";
import { url, set, list, methodOptions, announce } from "./state";
import { useAsync, modelInfo, ModelPicker } from "./data";
import { loadSample, Sample, arrayInput } from "./samples";
import { cell, CellSpec, isCheap, run, cancel, CellState, hash } from "./cells";
import { Chart, barsOption } from "./charts";
import { arrayImage, toCanvas, Mode, Sign } from "./render";
import { HeatmapPanel } from "./panel";
import type { Look } from "./scale";
import { TabularPanel, WhatIfTable, SurrogateRules } from "./tabular";
import { TrustPanel } from "./trust";
import { forText, isTokenModel, requestOptions, TokenPanel, WhatIfText } from "./text";
import { DownloadReport } from "./download";
import { toBase64 } from "./npy";

export const methodsP = api.methods();
export const runToken = signal(0);

export type { Look } from "./scale";
export { reportScale, sharedScale } from "./scale";

export function ExplainView() {
  const u = url.value;
  const [methods] = useAsync(() => methodsP, []);
  const [info, infoErr] = useAsync(() => (u.model ? modelInfo(u.model) : Promise.resolve(undefined)), [u.model]);
  const [sample, sampleErr] = useAsync(() => (u.sample ? loadSample(u.sample) : Promise.resolve(undefined)), [u.sample]);
  // What-if edits belong to one model and sample; another one drops them.
  const [edit, setEdit] = useState<{ at: string; s: Sample } | null>(null);
  const at = `${u.model}|${u.sample}`;
  const override = edit && edit.at === at ? edit.s : null;
  const setOverride = (x: Sample | null) => setEdit(x ? { at, s: x } : null);
  const s = override ?? sample;
  const inputKey = s ? hash(JSON.stringify(s.input)) : "";
  const [pred, predErr] = useAsync(
    () => (s && u.model && info ? api.predict(u.model, s.input, Math.min(5, info.classes)) : Promise.resolve(undefined)), [inputKey, u.model, info]);
  const top = pred?.samples[0]?.top ?? [];
  useEffect(() => { if (top.length && !u.targets) set({ targets: String(top[0].class) }); }, [pred]);

  if (!u.model || !u.sample)
    return <section><h2>Explain</h2><p>Pick a model and a sample in <a href="#/data" onClick={(e) => { e.preventDefault(); set({ view: "data" }); }}>Models & data</a> first.</p></section>;
  const targets = list(u.targets).map(Number);
  const text = isTokenModel(info);
  const offered = (methods ?? []).filter((m) => !text || forText(m));
  const chosen = offered.filter((m) => list(u.methods).includes(m.name));
  const look: Look = { mode: u.mode as Mode, sign: u.sign as Sign, opacity: Number(u.opacity), clip: Number(u.clip), shared: u.scale === "shared", smooth: u.smooth === "1", topk: Number(u.topk) };
  const names = info?.class_names ?? [];
  const inputCanvas = s ? inputCanvasOf(s) : undefined;

  return (
    <section aria-labelledby="explain-h">
      <h2 id="explain-h">Explain</h2>
      <div class="row"><ModelPicker /><span class="muted">sample {s?.label ?? u.sample}{override ? " (edited)" : ""}</span></div>
      {[infoErr, sampleErr, predErr].filter(Boolean).map((e) => <p class="error" role="alert">{e}</p>)}
      <div class="row">
        <div class="card col" style={{ width: "230px" }}>
          <h3>Input</h3>
          {s && (s.kind === "tabular" ? <WhatIfTable sample={s} info={info} onChange={setOverride} />
                : s.kind === "text" ? <WhatIfText sample={s} onChange={setOverride} />
                : <WhatIfImage sample={s} onChange={setOverride} />)}
          {override && <button type="button" onClick={() => setOverride(null)}>Reset the edits</button>}
          {u.ref && <RefSample refId={u.ref} model={u.model} names={names} />}
        </div>
        <div class="card col" style={{ minWidth: "300px", flex: 1 }}>
          <h3>Prediction</h3>
          <Prediction top={top} names={names} />
          <TargetPicker info={info} top={top} targets={targets} />
        </div>
        <div class="card col" style={{ flex: 2, minWidth: "320px" }}>
          <h3>Methods</h3>
          <MethodPicker methods={offered} chosen={chosen} />
          {text && <p class="muted">Token ids have no input gradient: gradient methods explain the embedding layer ({info?.layers.find((l) => l.type === "Embedding")?.name ?? "none found"}); methods that need an image are not offered.</p>}
          <div class="row">
            <button type="button" class="primary" data-testid="run" onClick={() => { runToken.value++; announce("Running the chosen methods"); }}>Run</button>
            <span class="muted">cheap methods run at once; the others on Run</span>
            {s && <DownloadReport model={u.model} input={s.input} methods={chosen.map((m) => m.name)} target={targets[0]} options={Object.fromEntries(chosen.map((m) => [m.name, requestOptions(m, methodOptions.value[m.name] ?? {}, info)]))} />}
          </div>
        </div>
      </div>
      {s?.kind === "tabular" && u.sample.startsWith("d:") && u.sample.includes("#") && <SurrogateRules model={u.model} dataId={u.sample.slice(2).split("#")[0]} />}
      {s?.kind !== "tabular" && <Controls look={look} text={s?.kind === "text"} />}
      {s && chosen.length > 0 && targets.length > 0 && (
        <div class="grid" role="grid" aria-label="Explanations: one row per target class, one column per method" data-testid="grid"
             style={{ gridTemplateColumns: `repeat(${chosen.length}, minmax(210px, 1fr))` }}>
          {targets.map((t) => (
            <div role="row" style={{ display: "contents" }}>
              {chosen.map((m) => (
                <Cell spec={{ model: u.model, input: s.input, method: m.name, target: t, options: requestOptions(m, methodOptions.value[m.name] ?? {}, info) }}
                      method={m} targetName={names[t] ?? String(t)} look={look} sample={s} inputCanvas={inputCanvas} info={info}
                      others={chosen} targets={targets} />
              ))}
            </div>
          ))}
        </div>
      )}
    </section>
  );
}

const inputCanvases = new WeakMap<object, HTMLCanvasElement>();
export function inputCanvasOf(s: Sample): HTMLCanvasElement | undefined {
  const k = (s.image ?? s.array) as object | undefined;
  if (!k) return undefined;
  if (!inputCanvases.has(k)) {
    let c: HTMLCanvasElement;
    if (s.image) {
      c = document.createElement("canvas");
      c.width = s.image.width; c.height = s.image.height;
      c.getContext("2d")!.drawImage(s.image, 0, 0);
    } else c = toCanvas(arrayImage(s.array!));
    inputCanvases.set(k, c);
  }
  return inputCanvases.get(k);
}

function Prediction({ top, names }: { top: Top[]; names: string[] }) {
  const labels = top.map((t) => t.name ?? names[t.class] ?? String(t.class));
  const option = useMemo(() => barsOption(labels, top.map((t) => t.score)), [top]);
  if (!top.length) return <p class="muted">predicting…</p>;
  return (
    <div data-testid="prediction">
      <Chart option={option} height={Math.max(60, 26 * top.length)} label={`Top ${top.length} predictions`} />
      <ol class="sr-only" data-testid="prediction-text">{top.map((t, i) => <li>{labels[i]}: {t.score.toPrecision(4)}</li>)}</ol>
      <p class="muted" data-testid="top1">top-1: {labels[0]} ({top[0].score.toFixed(3)})</p>
    </div>
  );
}

function RefSample({ refId, model, names }: { refId: string; model: string; names: string[] }) {
  const [r] = useAsync(() => loadSample(refId), [refId]);
  const [p] = useAsync(() => (r ? api.predict(model, r.input, 1) : Promise.resolve(undefined)), [r, model]);
  const c = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const cv = r && inputCanvasOf(r);
    if (cv && c.current) { const img = document.createElement("canvas"); img.width = 96; img.height = 96;
      const ctx = img.getContext("2d")!; ctx.imageSmoothingEnabled = false; ctx.drawImage(cv, 0, 0, 96, 96); c.current.replaceChildren(img); }
  }, [r]);
  const t = p?.samples[0]?.top[0];
  return <div><h3>Reference</h3><div ref={c} role="img" aria-label={`reference sample ${refId}`} />
    <span class="muted">{refId}: predicted {t ? t.name ?? names[t.class] ?? t.class : "…"}</span></div>;
}

function TargetPicker({ info, top, targets }: { info?: ModelInfo; top: Top[]; targets: number[] }) {
  const names = info?.class_names ?? [];
  const toggle = (c: number) => {
    const next = targets.includes(c) ? targets.filter((x) => x !== c) : [...targets, c];
    set({ targets: next.join(",") });
  };
  const shown = names.length <= 20 ? names.map((_, i) => i) : [...new Set([...top.map((t) => t.class), ...targets])];
  return (
    <fieldset data-testid="targets">
      <legend>Target classes (rows of the grid)</legend>
      <div class="chips">
        {shown.map((c) => (
          <button type="button" class="chip" aria-pressed={targets.includes(c)} onClick={() => toggle(c)}>{names[c] ?? c}</button>
        ))}
      </div>
      {names.length > 20 && (
        <label>Add class <input type="number" min={0} max={names.length - 1}
          onChange={(e) => { const v = Number((e.target as HTMLInputElement).value); if (v >= 0 && v < names.length && !targets.includes(v)) toggle(v); }} /></label>
      )}
    </fieldset>
  );
}

function MethodPicker({ methods, chosen }: { methods: MethodInfo[]; chosen: MethodInfo[] }) {
  const names = chosen.map((m) => m.name);
  const toggle = (n: string) => set({ methods: (names.includes(n) ? names.filter((x) => x !== n) : [...names, n]).join(",") });
  const families = [...new Set(methods.map((m) => m.family))];
  return (
    <div class="col" data-testid="methods">
      {families.map((f) => (
        <div role="group" aria-label={`${f} methods`} class="chips">
          <span class="muted" style={{ width: "90px" }}>{f}</span>
          {methods.filter((m) => m.family === f).map((m) => (
            <button type="button" class="chip" aria-pressed={names.includes(m.name)} title={`${m.description} (${m.reference})`}
                    data-method={m.name} onClick={() => toggle(m.name)}>{m.name}{isCheap(m) ? "" : " ⏱"}</button>
          ))}
        </div>
      ))}
      {chosen.filter((m) => Object.keys(m.options).length).map((m) => <OptionDrawer m={m} />)}
    </div>
  );
}

/** A form generated from a method's option schema; values go into the URL. */
function OptionDrawer({ m }: { m: MethodInfo }) {
  const cur = methodOptions.value[m.name] ?? {};
  const setOpt = (k: string, v: unknown) => {
    const all = { ...methodOptions.value };
    const mine = { ...(all[m.name] ?? {}) };
    if (v === undefined || v === "" || v === m.options[k].default) delete mine[k]; else mine[k] = v;
    if (Object.keys(mine).length) all[m.name] = mine; else delete all[m.name];
    set({ opts: Object.keys(all).length ? JSON.stringify(all) : "" });
  };
  const field = (k: string, o: Option) => {
    const id = `opt-${m.name}-${k}`;
    const v = k in cur ? cur[k] : o.default;
    let input;
    if (o.type === "boolean") input = <input id={id} type="checkbox" checked={Boolean(v)} onChange={(e) => setOpt(k, (e.target as HTMLInputElement).checked)} />;
    else if (o.choices) input = <select id={id} value={String(v)} onChange={(e) => setOpt(k, (e.target as HTMLSelectElement).value)}>{o.choices.map((c) => <option>{c}</option>)}</select>;
    else if (o.type === "integer" || o.type === "number")
      input = <input id={id} type="number" step={o.type === "integer" ? 1 : "any"} value={v === undefined ? "" : String(v)}
                     onChange={(e) => { const t = (e.target as HTMLInputElement).value; setOpt(k, t === "" ? undefined : Number(t)); }} />;
    else if (o.type === "string")
      input = <input id={id} type="text" value={v === undefined ? "" : String(v)} onChange={(e) => setOpt(k, (e.target as HTMLInputElement).value)} />;
    else input = <input id={id} type="text" value={v === undefined ? "" : JSON.stringify(v)}
                        onChange={(e) => { try { setOpt(k, JSON.parse((e.target as HTMLInputElement).value)); } catch { /* kept as typed */ } }} />;
    return <div class="row" style={{ gap: ".4rem" }}><label for={id} title={o.description}>{k}</label>{input}<span class="muted">{o.description}</span></div>;
  };
  return (
    <details data-testid={`options-${m.name}`}>
      <summary>{m.name} options</summary>
      {Object.entries(m.options).map(([k, o]) => field(k, o))}
    </details>
  );
}

function Controls({ look, text }: { look: Look; text?: boolean }) {
  const radio = (name: string, key: string, values: [string, string][], cur: string) => (
    <fieldset><legend>{name}</legend>
      {values.map(([v, label]) => (
        <label style={{ marginRight: ".4rem" }}><input type="radio" name={key} value={v} checked={cur === v} onChange={() => set({ [key]: v })} /> {label}</label>
      ))}
    </fieldset>
  );
  const u = url.value;
  return (
    <div class="controls card" data-testid="controls" style={{ margin: ".6rem 0" }}>
      {!text && radio("Show", "mode", [["input", "input"], ["heatmap", "heatmap"], ["overlay", "overlay"], ["mask", "top-k% mask"]], u.mode)}
      {radio("Sign", "sign", [["signed", "signed"], ["absolute", "absolute"], ["positive", "positive"], ["negative", "negative"]], u.sign)}
      {radio("Scale", "scale", [["shared", "one shared scale"], ["each", "one per map"]], u.scale)}
      {!text && <label>Opacity <input type="range" min={0} max={1} step={0.05} value={look.opacity} data-testid="opacity"
                            onInput={(e) => set({ opacity: (e.target as HTMLInputElement).value })} /> {look.opacity.toFixed(2)}</label>}
      <label>Clip at <input type="range" min={80} max={100} step={0.5} value={look.clip} data-testid="clip"
                            onInput={(e) => set({ clip: (e.target as HTMLInputElement).value })} /> {look.clip}% of |attribution|</label>
      {!text && <><label>Top-k% <input type="number" min={1} max={100} value={look.topk} style={{ width: "4em" }}
                           onChange={(e) => set({ topk: (e.target as HTMLInputElement).value })} /></label>
      <label><input type="checkbox" checked={look.smooth} data-testid="smooth" onChange={(e) => set({ smooth: (e.target as HTMLInputElement).checked ? "1" : "0" })} /> smooth upsampling</label></>}
    </div>
  );
}


function Cell(p: { spec: CellSpec; method: MethodInfo; targetName: string; look: Look; sample: Sample; inputCanvas?: HTMLCanvasElement; info?: ModelInfo; others: MethodInfo[]; targets: number[] }) {
  const st = cell(p.spec).value;
  const label = `${p.spec.method} for ${p.targetName}`;
  const token = runToken.value;
  const seen = useRef(token);
  useEffect(() => {
    if (st.status === "idle" && (isCheap(p.method) || token !== seen.current)) run(p.spec, label);
    seen.current = token;
  }, [st.status, token, JSON.stringify(p.spec)]);
  const prog = st.job?.progress;
  return (
    <div class="cell" role="gridcell" data-testid={`cell-${p.spec.method}-${p.spec.target}`} data-status={st.status}>
      <h4>{p.spec.method} · {p.targetName}</h4>
      {st.status === "idle" && <button type="button" onClick={() => run(p.spec, label)}>Run {p.spec.method}</button>}
      {(st.status === "queued" || st.status === "running") && (
        <div>
          <progress max={1} value={prog?.fraction ?? 0} aria-label={`${label} progress`} data-testid="progress" />
          <span class="muted"> {st.status}{prog?.total ? ` ${prog.done}/${prog.total}` : ""}{st.job?.eta_seconds ? `, ${st.job.eta_seconds.toFixed(1)} s left` : ""}</span>
          <button type="button" onClick={() => cancel(p.spec)} data-testid="cancel">Cancel</button>
        </div>
      )}
      {(st.status === "error" || st.status === "cancelled") && (
        <div><p class={st.status === "error" ? "error" : "muted"} role="alert">{st.status === "cancelled" ? "Cancelled." : st.error}</p>
          <button type="button" onClick={() => { cell(p.spec).value = { status: "idle" }; run(p.spec, label); }}>Run again</button></div>
      )}
      {st.status === "done" && st.map && (
        p.sample.kind === "tabular"
          ? <TabularPanel st={st} sample={p.sample} info={p.info} />
          : p.sample.kind === "text"
          ? <TokenPanel id={`${p.spec.method}-${p.spec.target}`} st={st} look={p.look} label={label} />
          : <HeatmapPanel id={`${p.spec.method}-${p.spec.target}`} st={st} look={p.look} input={p.inputCanvas} label={label} />
      )}
      {st.status === "done" && st.attr?.summary?.[0] && (
        <details data-testid="words"><summary>In words</summary>
          <ul>{(st.attr.summary[0].sentences as { text: string; kind: string }[]).map((x) => <li class={x.kind === "warning" || x.text.startsWith("Caveat") ? "warn" : ""}>{x.text}</li>)}</ul>
        </details>
      )}
      {st.status === "done" && <TrustPanel spec={p.spec} st={st} method={p.method} sample={p.sample} others={p.others} info={p.info} />}
    </div>
  );
}

/** What-if on an image: erase or blur a brushed region; the prediction follows. */
function WhatIfImage({ sample, onChange }: { sample: Sample; onChange: (s: Sample) => void }) {
  const cv = useRef<HTMLCanvasElement>(null);
  const [tool, setTool] = useState<"erase" | "blur">("erase");
  const [radius, setRadius] = useState(12);
  const [xy, setXy] = useState({ x: 50, y: 50 });
  const drawing = useRef(false);
  const src = inputCanvasOf(sample);
  useEffect(() => {
    if (!cv.current || !src) return;
    cv.current.width = src.width; cv.current.height = src.height;
    cv.current.getContext("2d")!.drawImage(src, 0, 0);
  }, [src]);
  const paint = (x: number, y: number) => {
    const c = cv.current!, ctx = c.getContext("2d")!;
    const r = (radius / 100) * Math.max(c.width, c.height);
    ctx.save(); ctx.beginPath(); ctx.arc(x, y, Math.max(r, 0.5), 0, Math.PI * 2); ctx.clip();
    if (tool === "erase") { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, c.width, c.height); }
    else { ctx.filter = `blur(${Math.max(1, r / 3)}px)`; ctx.drawImage(c, 0, 0); }
    ctx.restore();
  };
  const at = (e: PointerEvent) => {
    const c = cv.current!, b = c.getBoundingClientRect();
    return [((e.clientX - b.left) / b.width) * c.width, ((e.clientY - b.top) / b.height) * c.height];
  };
  const commit = async () => {
    const c = cv.current!;
    if (sample.array) {
      // An array sample: edited pixels back into its values (erase = 0, blur = the blurred grey level rescaled).
      const a = sample.array, n = c.width * c.height, ch = a.data.length / n;
      const px = c.getContext("2d")!.getImageData(0, 0, c.width, c.height).data;
      let lo = Infinity, hi = -Infinity;
      for (const v of a.data) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      const data = Float32Array.from(a.data);
      for (let i = 0; i < n; i++) for (let k = 0; k < ch; k++) {
        const g = px[i * 4 + (ch >= 3 ? k : 0)] / 255;
        const orig = (a.data[k * n + i] - lo) / (hi - lo || 1);
        if (Math.abs(g - orig) > 1 / 255) data[k * n + i] = tool === "erase" && g === 0 ? 0 : lo + g * (hi - lo);
      }
      const arr = { shape: a.shape, data };
      onChange({ ...sample, ref: sample.ref + "*", input: arrayInput(arr), array: arr });
      return;
    }
    const blob: Blob = await new Promise((r) => c.toBlob((b) => r(b!), "image/png"));
    const bytes = new Uint8Array(await blob.arrayBuffer());
    onChange({ ...sample, ref: sample.ref + "*", input: { image: toBase64(bytes) }, image: await createImageBitmap(blob) });
  };
  return (
    <div class="col" data-testid="whatif">
      <canvas ref={cv} role="img" aria-label={`input ${sample.label}; drag to ${tool} a region`} data-testid="input-canvas"
              style={{ width: "192px", imageRendering: "pixelated", touchAction: "none", cursor: "crosshair" }}
              onPointerDown={(e) => { drawing.current = true; const [x, y] = at(e); paint(x, y); }}
              onPointerMove={(e) => { if (drawing.current) { const [x, y] = at(e); paint(x, y); } }}
              onPointerUp={() => { if (drawing.current) { drawing.current = false; commit(); } }} />
      <fieldset><legend>What if</legend>
        <label><input type="radio" name="tool" checked={tool === "erase"} onChange={() => setTool("erase")} /> erase</label>{" "}
        <label><input type="radio" name="tool" checked={tool === "blur"} onChange={() => setTool("blur")} /> blur</label><br />
        <label>brush radius % <input type="number" min={1} max={50} value={radius} style={{ width: "4em" }} onChange={(e) => setRadius(Number((e.target as HTMLInputElement).value))} /></label><br />
        <label>x % <input type="number" min={0} max={100} value={xy.x} style={{ width: "4em" }} onChange={(e) => setXy({ ...xy, x: Number((e.target as HTMLInputElement).value) })} /></label>{" "}
        <label>y % <input type="number" min={0} max={100} value={xy.y} style={{ width: "4em" }} onChange={(e) => setXy({ ...xy, y: Number((e.target as HTMLInputElement).value) })} /></label>{" "}
        <button type="button" data-testid="apply-region" onClick={() => { const c = cv.current!; paint((xy.x / 100) * c.width, (xy.y / 100) * c.height); commit(); }}>Apply to region</button>
      </fieldset>
    </div>
  );
}

export type { CellState };
