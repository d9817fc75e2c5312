// Models & data: pick a model, browse samples with thumbnails, filter by predicted or true
// class, upload by drag-and-drop (or the file button), pin a reference sample.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, DataEntry, ModelEntry, ModelInfo } from "./api";
import { url, set } from "./state";
import { parseNpy, row, toBase64 } from "./npy";
import { arrayImage } from "./render";
import { addUpload, fileOf, isInputFile, labelsFor, parseCsv, textLines } from "./samples";

export const models = { list: null as ModelEntry[] | null };
const infos = new Map<string, Promise<ModelInfo>>();
export const modelInfo = (id: string) => {
  if (!infos.has(id)) infos.set(id, api.model(id));
  return infos.get(id)!;
};

/** The value of `f()` for these `deps`; undefined until it arrives, and never a value computed for
 *  other deps (a render between a change and its effect would otherwise see the old one). */
export function useAsync<T>(f: () => Promise<T>, deps: unknown[]): [T | undefined, string | undefined] {
  const [st, setSt] = useState<{ deps: unknown[]; v?: T; err?: string }>({ deps: [] });
  useEffect(() => {
    let live = true;
    f().then((v) => live && setSt({ deps, v }), (e) => live && setSt({ deps, err: String(e.message ?? e) }));
    return () => { live = false; };
  }, deps);
  const same = st.deps.length === deps.length && st.deps.every((d, i) => Object.is(d, deps[i]));
  return same ? [st.v, st.err] : [undefined, undefined];
}

export function ModelPicker() {
  const [list, err] = useAsync(api.models, []);
  const model = url.value.model;
  useEffect(() => { if (list?.length && !model) set({ model: list[0].id }); }, [list]);
  if (err) return <p class="error">{err}</p>;
  return (
    <label>Model{" "}
      <select value={model} onChange={(e) => set({ model: (e.target as HTMLSelectElement).value, targets: "" })} data-testid="model">
        {(list ?? []).map((m) => <option value={m.id}>{m.id} ({m.format})</option>)}
      </select>
    </label>
  );
}

interface Item { ref: string; label: string; thumb?: string; pixels?: ImageData; truth?: number; pred?: number; fits?: boolean }

/** The samples of one data entry (an image, or the rows of an .npy / .csv). */
async function itemsOf(e: DataEntry, all: DataEntry[], info: ModelInfo | undefined, model: string): Promise<Item[]> {
  const names = info?.class_names ?? [];
  if (e.kind === "image") {
    const parts = e.id.split("/");
    const folder = parts.length > 1 ? parts[parts.length - 2] : "";
    const truth = names.indexOf(folder);
    return [{ ref: `d:${e.id}`, label: parts[parts.length - 1], thumb: e.thumbnail, truth: truth >= 0 ? truth : undefined }];
  }
  let rows: number;
  let pixels: (i: number) => ImageData | undefined = () => undefined;
  let fits = false;  // rows of this model's input shape: worth predicting
  let labels: (i: number) => string = (i) => `row ${i}`;
  if (e.kind === "text") {
    const lines = textLines(new TextDecoder().decode(await fileOf(e.id)));
    rows = Math.min(lines.length, 64);
    fits = !!info && info.input.layout === "NL" && lines.length <= 256;
    labels = (i) => lines[i].length > 60 ? lines[i].slice(0, 59) + "…" : lines[i];
  } else if (e.kind === "npy") {
    const a = parseNpy(await fileOf(e.id));
    fits = !!info && a.shape[0] <= 256 && a.shape.slice(1).join(",") === info.input.shape.join(",");
    rows = Math.min(a.shape[0], 64);
    if (a.shape.length >= 3) pixels = (i) => arrayImage(row(a, i));
  } else {
    const t = parseCsv(new TextDecoder().decode(await fileOf(e.id)));
    rows = Math.min(t.rows.length, 64);
    fits = !!info && t.rows.length <= 256 && info.input.shape.length === 1 && t.rows[0]?.length === info.input.shape[0];
  }
  let truths: Float32Array | undefined;
  const lab = labelsFor(e.id, all);
  if (lab) truths = parseNpy(await fileOf(lab)).data;
  return Array.from({ length: rows }, (_, i) => ({
    ref: `d:${e.id}#${i}`, label: labels(i), pixels: pixels(i), truth: truths ? truths[i] : undefined, fits,
  }));
}

/** The model's top-1 for the items of one entry (after they are shown): one call per image, one
 *  per array file whose rows are this model's input. */
async function predictionsOf(e: DataEntry, items: Item[], info: ModelInfo | undefined, model: string): Promise<(number | undefined)[]> {
  try {
    if (e.kind === "image" && info && info.input.layout !== "NC" && info.input.layout !== "NL") return [(await api.predict(model, { data: e.id }, 1)).samples[0].top[0].class];
    if (items[0]?.fits) return (await api.predict(model, { data: e.id }, 1)).samples.map((s) => s.top[0].class);
  } catch { /* not this model's input */ }
  return [];
}

function Thumb({ it }: { it: Item }) {
  const c = useRef<HTMLCanvasElement>(null);
  useEffect(() => { if (it.pixels && c.current) { c.current.width = it.pixels.width; c.current.height = it.pixels.height; c.current.getContext("2d")!.putImageData(it.pixels, 0, 0); } }, [it]);
  if (it.thumb) return <img src={it.thumb} alt="" />;
  if (it.pixels) return <canvas ref={c} aria-hidden="true" />;
  return null;
}

export function DataView() {
  const model = url.value.model;
  const [data, err] = useAsync(api.data, []);
  const [info] = useAsync(() => (model ? modelInfo(model) : Promise.resolve(undefined)), [model]);
  const [items, setItems] = useState<Record<string, Item[]>>({});
  const [over, setOver] = useState(false);
  const [msg, setMsg] = useState("");
  // The entries this model can read first (texts for a token model; texts last otherwise).
  const text = info?.input.layout === "NL";
  const rank = (e: DataEntry) => (e.kind === "text" ? (text ? 0 : 2) : 1);
  const entries = (data ?? []).filter(isInputFile).sort((a, b) => rank(a) - rank(b));
  useEffect(() => {
    if (!data || !model || !info) return;
    let live = true;
    setItems({});
    (async () => {
      // First every entry's samples, then the predictions, so the list shows at once.
      const shown: [DataEntry, Item[]][] = [];
      for (const e of entries.slice(0, 40)) {
        try {
          const its = await itemsOf(e, data, info, model);
          shown.push([e, its]);
          if (live) setItems((o) => ({ ...o, [e.id]: its }));
        } catch (x) { /* unreadable sample: listed without rows */ }
      }
      for (const [e, its] of shown) {
        const preds = await predictionsOf(e, its, info, model);
        if (!live) return;
        if (preds.length) setItems((o) => ({ ...o, [e.id]: its.map((it, i) => ({ ...it, pred: preds[i] })) }));
      }
    })();
    return () => { live = false; };
  }, [data, model, info]);

  const names = info?.class_names ?? [];
  const cls = (i?: number) => (i === undefined ? "?" : names[i] ?? String(i));
  const f = url.value.filter, t = url.value.truth;
  const keep = (it: Item) => (f === "" || String(it.pred) === f) && (t === "" || String(it.truth) === t);

  async function upload(files: FileList | null) {
    for (const file of Array.from(files ?? [])) {
      const bytes = new Uint8Array(await file.arrayBuffer());
      if (file.name.toLowerCase().endsWith(".txt")) {
        // A text file: its first line, kept in the URL like typed text.
        const first = textLines(new TextDecoder().decode(bytes))[0];
        if (!first) { setMsg(`${file.name} holds no text`); continue; }
        setMsg(`Loaded the first line of ${file.name}`);
        set({ sample: `t:${first}`, view: "explain" });
        continue;
      }
      const kind = file.name.endsWith(".npy") ? "npy" : "image";
      const ref = addUpload(file.name, kind, toBase64(bytes));
      setMsg(`Uploaded ${file.name}`);
      set({ sample: ref, view: "explain" });
    }
  }

  return (
    <section aria-labelledby="data-h">
      <h2 id="data-h">Models & data</h2>
      <div class="row">
        <ModelPicker />
        {info && <span class="muted" data-testid="model-info">input {info.input.layout} [{info.input.shape.join("×")}], {info.classes} classes, output {info.output_kind}</span>}
      </div>
      <div class="row" style={{ margin: ".6rem 0" }}>
        {([["Predicted class", "filter"], ["True class", "truth"]] as const).map(([label, key]) => (
          <label>{label}{" "}
            <select value={url.value[key]} onChange={(e) => set({ [key]: (e.target as HTMLSelectElement).value })}>
              <option value="">any</option>
              {names.map((n, i) => <option value={String(i)}>{n}</option>)}
            </select>
          </label>
        ))}
        <div class={`drop ${over ? "over" : ""}`} onDragOver={(e) => { e.preventDefault(); setOver(true); }}
             onDragLeave={() => setOver(false)} onDrop={(e) => { e.preventDefault(); setOver(false); upload(e.dataTransfer?.files ?? null); }}>
          Drop an image, .npy or .txt here, or{" "}
          <label class="link">choose a file <input type="file" accept="image/*,.npy,.txt" onChange={(e) => upload((e.target as HTMLInputElement).files)} /></label>
          <span class="sr-only" aria-live="polite">{msg}</span>
        </div>
        {url.value.ref && <span>Reference: {url.value.ref} <button type="button" onClick={() => set({ ref: "" })}>unpin</button></span>}
      </div>
      {info?.input.layout === "NL" && <TypeText />}
      {err && <p class="error">{err}</p>}
      {entries.map((e) => {
        const its = (items[e.id] ?? []).filter(keep);
        return (
          <div>
            {e.kind !== "image" && <h3>{e.id}</h3>}
            <div class="samples" role="list" aria-label={`samples of ${e.id}`}>
              {its.map((it) => (
                <div class="sample card" role="listitem">
                  <button type="button" class="link" aria-label={`Explain ${e.kind === "image" ? e.id : it.label + " of " + e.id}`}
                          onClick={() => set({ sample: it.ref, view: "explain" })}>
                    <Thumb it={it} /><br />{it.label}
                  </button>
                  <span class="muted">pred {cls(it.pred)}{it.truth !== undefined ? ` · true ${cls(it.truth)}` : ""}</span>
                  <button type="button" aria-pressed={url.value.ref === it.ref} onClick={() => set({ ref: url.value.ref === it.ref ? "" : it.ref })}>pin</button>
                </div>
              ))}
            </div>
          </div>
        );
      })}
    </section>
  );
}

/** A token model: explain a text typed in (it goes into the URL, so a link reproduces it). */
function TypeText() {
  const [t, setT] = useState("");
  const go = () => { if (t.trim()) set({ sample: `t:${t.trim()}`, view: "explain" }); };
  return (
    <form class="row" style={{ margin: ".4rem 0" }} onSubmit={(e) => { e.preventDefault(); go(); }}>
      <label for="type-text">Your own text</label>
      <input id="type-text" type="text" size={60} value={t} data-testid="type-text" placeholder="a sentence for this model"
             onInput={(e) => setT((e.target as HTMLInputElement).value)} />
      <button type="submit" disabled={!t.trim()}>Explain it</button>
    </form>
  );
}
