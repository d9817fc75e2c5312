// Text models (input layout NL, token ids): which methods apply, token highlights drawn on a
// canvas with the heatmaps' colour scale (signed, clipped, shared between cells), and a what-if
// box where edited text is predicted and explained again.
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { getJson, MethodInfo, ModelInfo } from "./api";
import type { CellState } from "./cells";
import type { Look } from "./scale";
import { reportScale, sharedScale } from "./scale";
import { Colorbar } from "./panel";
import { applySign, clipScale, valueColor } from "./render";
import { Sample, textSample } from "./samples";

export const isTokenModel = (info?: ModelInfo) => info?.input.layout === "NL";

/** Token ids have no input gradient: gradient and propagation methods explain the embedding layer
 *  instead (Captum's LayerIntegratedGradients on `embeddings`); perturbation methods switch tokens
 *  to the baseline token; attention methods read the attention maps. Left out: CAMs (need an image
 *  grid), RISE and Anchors (image and tabular samplers), exact Shapley (2^L coalitions of a
 *  sentence's tokens are past the evaluation budget), neuron methods (need a neuron). */
const NOT_FOR_TEXT = new Set(["rise", "anchors", "exact_shapley"]);
export function forText(m: MethodInfo): boolean {
  if (m.family === "attention" || m.name === "attn_lrp") return true;
  if (m.family === "layer") return !m.name.startsWith("neuron_");
  return (m.family === "perturbation" || m.family === "global") && !NOT_FOR_TEXT.has(m.name);
}

/** The layer a text method explains when none is chosen: the token embedding (the first
 *  Embedding layer `candela info` lists), for methods that take a layer other than attention's. */
export function textLayers(m: MethodInfo, info?: ModelInfo): string[] | undefined {
  if (!isTokenModel(info) || !("layers" in m.options) || m.family === "attention") return undefined;
  const emb = info!.layers.find((l) => l.type === "Embedding");
  return emb ? [emb.name] : undefined;
}

/** A method's options for a request: the user's, plus the embedding layer for text models. */
export function requestOptions(m: MethodInfo | undefined, own: Record<string, unknown>, info?: ModelInfo): Record<string, unknown> {
  const layers = m && !("layers" in own) ? textLayers(m, info) : undefined;
  return layers ? { ...own, layers } : own;
}

export interface Tok { id: number; index: number; token: string; value: number; word: number }
const SPECIAL = /^\[(CLS|SEP|PAD|MASK|UNK)\]$|^<\/?s>$|^<pad>$/;

const tokenFiles = new Map<string, Promise<Tok[]>>();
/** The tokens of a finished result (tokens.json, the first text), fetched once. */
export function tokensOf(key: string): Promise<Tok[]> {
  if (!tokenFiles.has(key))
    tokenFiles.set(key, getJson<{ tokens: Tok[] }[]>(`/api/results/${key}/files/tokens.json`).then((t) => t[0]?.tokens ?? []));
  return tokenFiles.get(key)!;
}

const FONT = "15px system-ui, sans-serif", LINE = 26, PAD = 4;

/** Token highlights: each token on a box of the colour of its value (the heatmaps' colormap,
 *  sign and clipping); word pieces (##) join their word; padding is left out. */
export function TokenPanel({ id, st, look, label }: { id: string; st: CellState; look: Look; label: string }) {
  const [toks, setToks] = useState<Tok[] | null>(null);
  const [err, setErr] = useState("");
  useEffect(() => {
    if (!st.key) return;
    tokensOf(st.key).then(setToks, (e) => setErr(`no token values for this result: ${e.message ?? e}`));
  }, [st.key]);
  const shown = useMemo(() => (toks ?? []).filter((t) => t.token !== "[PAD]" && t.token !== "<pad>"), [toks]);
  const v = useMemo(() => applySign({ h: 1, w: shown.length, data: Float32Array.from(shown, (t) => t.value) }, look.sign), [shown, look.sign]);
  const own = useMemo(() => clipScale(v, look.clip), [v, look.clip]);
  useEffect(() => reportScale(id, own), [id, own]);
  const scale = look.shared ? sharedScale() : own;
  const cv = useRef<HTMLCanvasElement>(null);
  const boxes = useRef<{ x: number; y: number; w: number; t: Tok }[]>([]);
  const [hover, setHover] = useState("");

  useLayoutEffect(() => {
    const c = cv.current;
    if (!c || !shown.length) return;
    const ctx = c.getContext("2d")!;
    ctx.font = FONT;
    const WIDTH = Math.max(240, Math.min(640, c.parentElement?.clientWidth ?? 320));
    // Layout first (the height depends on the wrapping), then paint.
    const laid: { x: number; y: number; w: number; text: string; i: number }[] = [];
    let x = 0, y = 0;
    shown.forEach((t, i) => {
      const piece = t.token.startsWith("##") && i > 0;
      const text = piece ? t.token.slice(2) : t.token;
      const w = ctx.measureText(text).width + 2 * PAD;
      if (!piece && x > 0) x += 5;
      if (x + w > WIDTH && x > 0) { x = 0; y += LINE; }
      laid.push({ x, y, w, text, i });
      x += w;
    });
    const dpr = window.devicePixelRatio || 1;
    c.width = WIDTH * dpr; c.height = (y + LINE) * dpr;
    c.style.width = `${WIDTH}px`; c.style.height = `${y + LINE}px`;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.font = FONT;
    ctx.textBaseline = "middle";
    ctx.clearRect(0, 0, WIDTH, y + LINE);
    boxes.current = [];
    for (const b of laid) {
      const t = shown[b.i];
      const [r, g, bl] = valueColor(look.sign, v[b.i], scale);
      ctx.fillStyle = `rgb(${r},${g},${bl})`;
      ctx.fillRect(b.x, b.y + 2, b.w, LINE - 4);
      const dark = 0.299 * r + 0.587 * g + 0.114 * bl < 110;
      ctx.fillStyle = SPECIAL.test(t.token) ? (dark ? "#ddd" : "#666") : dark ? "#fff" : "#111";
      ctx.fillText(b.text, b.x + PAD, b.y + LINE / 2);
      boxes.current.push({ x: b.x, y: b.y, w: b.w, t });
    }
    c.dataset.painted = String(Number(c.dataset.painted ?? 0) + 1);
  }, [shown, v, scale, look.sign]);

  const onMove = (e: MouseEvent) => {
    const r = cv.current!.getBoundingClientRect();
    const x = e.clientX - r.left, y = e.clientY - r.top;
    const b = boxes.current.find((b) => x >= b.x && x < b.x + b.w && y >= b.y && y < b.y + LINE);
    setHover(b ? `${b.t.token} (token ${b.t.index}): ${b.t.value.toPrecision(4)}` : "");
  };
  const png = () => {
    const a = document.createElement("a");
    a.href = cv.current!.toDataURL("image/png");
    a.download = `${id}.png`;
    a.click();
  };
  if (err) return <p class="error">{err}</p>;
  if (!toks) return <p class="muted">loading the tokens…</p>;
  const ranked = shown.map((t, i) => ({ t, a: v[i] })).filter((x) => !SPECIAL.test(x.t.token)).sort((p, q) => Math.abs(q.a) - Math.abs(p.a));
  const lo = look.sign === "signed" ? -scale : 0;
  return (
    <div class="panel" data-testid={`tokens-${id}`}>
      <canvas ref={cv} class="tokens" role="img" tabIndex={0} data-testid={`token-canvas-${id}`}
              aria-label={`${label}: token highlights, ${look.sign}, scale ${lo.toPrecision(3)} to ${scale.toPrecision(3)}; the list below reads them out`}
              onMouseMove={onMove} onMouseLeave={() => setHover("")} />
      <Colorbar sign={look.sign} lo={lo} hi={scale} />
      <div class="muted" data-testid="hover" aria-live="off">{hover || "hover a token for its value"}</div>
      <p class="muted" data-testid="top-tokens">strongest: {ranked.slice(0, 3).map((x) => `${x.t.token} (${x.a >= 0 && look.sign === "signed" ? "+" : ""}${x.a.toPrecision(3)})`).join(", ")}</p>
      <ol class="sr-only" data-testid={`token-list-${id}`}>{shown.map((t) => <li>{t.token}: {t.value.toPrecision(4)}</li>)}</ol>
      <div class="row" style={{ gap: ".4rem", fontSize: ".75rem" }}>
        <button type="button" onClick={png}>PNG</button>
        {st.key && <a href={`/api/results/${st.key}/files/tokens.json`} download>tokens.json</a>}
        {st.key && <a href={`/api/results/${st.key}/files/tokens.html`} target="_blank" rel="noopener">tokens.html</a>}
        {st.key && <a href={`/api/results/${st.key}`} target="_blank" rel="noopener">attribution.json</a>}
      </div>
    </div>
  );
}

/** What-if on text: edit the text; after a pause it is predicted and explained again. */
export function WhatIfText({ sample, onChange }: { sample: Sample; onChange: (s: Sample) => void }) {
  const norm = (x: string) => x.replace(/\s*\n+\s*/g, " ").trim();
  const [t, setT] = useState(sample.text ?? "");
  // A reset (or another sample) replaces the text; the sample made from this box does not.
  useEffect(() => { if (norm(t) !== sample.text) setT(sample.text ?? ""); }, [sample.text]);
  useEffect(() => {
    if (norm(t) === sample.text || !norm(t)) return;
    const h = setTimeout(() => onChange({ ...textSample(norm(t)), ref: `${sample.ref.replace(/\*$/, "")}*` }), 300);
    return () => clearTimeout(h);
  }, [t]);
  return (
    <div class="col">
      <label for="what-if-text">Text (edit it: the prediction and the explanations follow)</label>
      <textarea id="what-if-text" data-testid="what-if-text" rows={5} value={t}
                onInput={(e) => setT((e.target as HTMLTextAreaElement).value)} />
    </div>
  );
}
