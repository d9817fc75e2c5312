// One heatmap: input / heatmap / overlay / top-k% mask, drawn on a canvas; colorbar; the raw value
// under the pointer; PNG and raw-value export.
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import type { CellState } from "./cells";
import type { Look } from "./scale";
import { reportScale, sharedScale } from "./scale";
import { applySign, clipScale, colormapFor, color, heatImage, toCanvas, topMask } from "./render";

const SIZE = 192;

export function HeatmapPanel({ id, st, look, input, label }: { id: string; st: CellState; look: Look; input?: HTMLCanvasElement; label: string }) {
  const cv = useRef<HTMLCanvasElement>(null);
  const map = st.map!;
  const v = useMemo(() => applySign(map, look.sign), [map, look.sign]);
  const own = useMemo(() => clipScale(v, look.clip), [v, look.clip]);
  useEffect(() => reportScale(id, own), [id, own]);
  const scale = look.shared ? sharedScale() : own;
  const heat = useMemo(() => toCanvas(heatImage(v, map.h, map.w, look.sign, scale)), [v, scale, look.sign]);
  const mask = useMemo(() => (look.mode === "mask" ? topMask(v, look.topk) : undefined), [v, look.mode, look.topk]);
  const [hover, setHover] = useState("");
  const w = SIZE, h = Math.max(1, Math.round((SIZE * map.h) / map.w));

  // Drawn before the browser paints the frame (a layout effect), so a slider moves the pixels in
  // the same frame.
  useLayoutEffect(() => {
    performance.mark(`paint-start-${id}`);
    const c = cv.current!;
    c.width = w; c.height = h;
    const ctx = c.getContext("2d")!;
    ctx.imageSmoothingEnabled = look.smooth;
    ctx.clearRect(0, 0, w, h);
    const drawInput = () => { if (input) ctx.drawImage(input, 0, 0, w, h); else { ctx.fillStyle = "#888"; ctx.fillRect(0, 0, w, h); } };
    if (look.mode === "input") drawInput();
    else if (look.mode === "heatmap") ctx.drawImage(heat, 0, 0, w, h);
    else if (look.mode === "overlay") { drawInput(); ctx.globalAlpha = look.opacity; ctx.drawImage(heat, 0, 0, w, h); ctx.globalAlpha = 1; }
    else {
      // Top-k% mask: the input where the map is in its top k%, dimmed elsewhere.
      drawInput();
      const m = document.createElement("canvas");
      m.width = map.w; m.height = map.h;
      const img = new ImageData(map.w, map.h);
      for (let i = 0; i < mask!.length; i++) img.data.set(mask![i] ? [0, 0, 0, 0] : [255, 255, 255, Math.round(255 * (0.85 * look.opacity + 0.1))], i * 4);
      m.getContext("2d")!.putImageData(img, 0, 0);
      ctx.drawImage(m, 0, 0, w, h);
    }
    performance.mark(`paint-end-${id}`);
    c.dataset.painted = String(Number(c.dataset.painted ?? 0) + 1);
  }, [heat, look.mode, look.opacity, look.smooth, mask, input]);

  const onMove = (e: MouseEvent) => {
    const b = cv.current!.getBoundingClientRect();
    const x = Math.min(map.w - 1, Math.floor(((e.clientX - b.left) / b.width) * map.w));
    const y = Math.min(map.h - 1, Math.floor(((e.clientY - b.top) / b.height) * map.h));
    setHover(`(${x}, ${y}): ${map.data[y * map.w + x].toPrecision(4)}`);
  };
  const png = () => {
    const a = document.createElement("a");
    a.href = cv.current!.toDataURL("image/png");
    a.download = `${id}.png`;
    a.click();
  };
  const lo = look.sign === "signed" ? -scale : 0;
  return (
    <div class="panel">
      <canvas ref={cv} class="map" role="img" data-testid={`map-${id}`} tabIndex={0}
              aria-label={`${label}: ${look.mode}, ${look.sign}, scale ${lo.toPrecision(3)} to ${scale.toPrecision(3)}`}
              style={{ imageRendering: look.smooth ? "auto" : "pixelated" }} onMouseMove={onMove} onMouseLeave={() => setHover("")} />
      <Colorbar sign={look.sign} lo={lo} hi={scale} />
      <div class="muted" data-testid="hover" aria-live="off">{hover || "hover for values"}</div>
      <div class="row" style={{ gap: ".4rem", fontSize: ".75rem" }}>
        <button type="button" onClick={png}>PNG</button>
        {st.key && <a href={`/api/results/${st.key}/values?format=npy`} download>values .npy</a>}
        {st.key && <a href={`/api/results/${st.key}`} target="_blank" rel="noopener">attribution.json</a>}
      </div>
    </div>
  );
}

export function Colorbar({ sign, lo, hi }: { sign: string; lo: number; hi: number }) {
  const cv = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    const c = cv.current!;
    c.width = 120; c.height = 10;
    const ctx = c.getContext("2d")!;
    const cm = colormapFor(sign as any);
    for (let x = 0; x < 120; x++) { const [r, g, b] = color(cm, x / 119); ctx.fillStyle = `rgb(${r},${g},${b})`; ctx.fillRect(x, 0, 1, 10); }
  }, [sign]);
  return (
    <div class="colorbar" data-testid="colorbar" data-lo={lo} data-hi={hi}>
      <span>{lo.toPrecision(3)}</span><canvas ref={cv} role="img" aria-label={`colour scale from ${lo.toPrecision(3)} to ${hi.toPrecision(3)}`} /><span>{hi.toPrecision(3)}</span>
    </div>
  );
}
