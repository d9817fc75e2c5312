// Heatmaps on canvas: channel reduction, sign modes, Captum's outlier clipping, colormaps.
import type { NdArray } from "./npy";

export type Sign = "signed" | "absolute" | "positive" | "negative";
export type Mode = "input" | "heatmap" | "overlay" | "mask";

export interface Map2D { h: number; w: number; data: Float32Array }

/** [N, C, H, W] / [N, H, W] / [C, H, W] → the first sample's [H, W], channels summed (Captum's
 *  visualize_image_attr sums the channel axis, keeping the sign). */
export function reduce(a: NdArray): Map2D {
  const s = a.shape;
  let h: number, w: number, c: number;
  if (s.length === 4) [c, h, w] = [s[1], s[2], s[3]];
  else if (s.length === 3 && s[0] === 1) [c, h, w] = [1, s[1], s[2]];
  else if (s.length === 3) [c, h, w] = [s[0], s[1], s[2]];
  else if (s.length === 2) [c, h, w] = [1, 1, s[1]];
  else [c, h, w] = [1, 1, a.data.length];
  const out = new Float32Array(h * w);
  for (let k = 0; k < c; k++) for (let i = 0; i < h * w; i++) out[i] += a.data[k * h * w + i];
  return { h, w, data: out };
}

export function applySign(m: Map2D, sign: Sign): Float32Array {
  const d = m.data, out = new Float32Array(d.length);
  for (let i = 0; i < d.length; i++) {
    const v = d[i];
    out[i] = sign === "signed" ? v : sign === "absolute" ? Math.abs(v) : sign === "positive" ? Math.max(v, 0) : Math.max(-v, 0);
  }
  return out;
}

/** Captum's `_cumulative_sum_threshold`: the |value| at which the sorted cumulative sum of |values|
 *  reaches `percentile`% of the total; values above it saturate (outlier_perc = 100 - percentile). */
export function clipScale(v: Float32Array, percentile: number): number {
  const a = Float32Array.from(v, Math.abs).sort();
  let total = 0;
  for (const x of a) total += x;
  if (total === 0) return 0;
  const target = (total * percentile) / 100;
  let acc = 0;
  for (let i = 0; i < a.length; i++) {
    acc += a[i];
    if (acc >= target) return a[i];
  }
  return a[a.length - 1];
}

// Colour stops: RdBu reversed (diverging, white at 0), Reds and Blues (sequential).
const STOPS: Record<string, number[][]> = {
  diverging: [[5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240], [247, 247, 247],
              [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31]],
  reds: [[255, 245, 240], [254, 224, 210], [252, 187, 161], [252, 146, 114], [251, 106, 74], [239, 59, 44], [203, 24, 29], [153, 0, 13]],
  blues: [[247, 251, 255], [222, 235, 247], [198, 219, 239], [158, 202, 225], [107, 174, 214], [66, 146, 198], [33, 113, 181], [8, 69, 148]],
};

export function colormapFor(sign: Sign): string { return sign === "signed" ? "diverging" : sign === "negative" ? "blues" : "reds"; }

/** t in [0, 1] → RGB of the named map. */
export function color(name: string, t: number): number[] {
  const s = STOPS[name];
  const x = Math.min(1, Math.max(0, t)) * (s.length - 1);
  const i = Math.min(s.length - 2, Math.floor(x)), f = x - i;
  return [0, 1, 2].map((k) => Math.round(s[i][k] + f * (s[i + 1][k] - s[i][k])));
}

/** The colour of a value under a scale: signed maps centre 0 at white, the others start at 0. */
export function valueColor(sign: Sign, v: number, scale: number): number[] {
  const cm = colormapFor(sign);
  if (scale <= 0) return color(cm, sign === "signed" ? 0.5 : 0);
  return color(cm, sign === "signed" ? 0.5 + 0.5 * (v / scale) : v / scale);
}

/** An RGBA image [h, w] of the transformed values; alpha grows with |value| so an overlay shows
 *  the input where the map is near 0. */
export function heatImage(v: Float32Array, h: number, w: number, sign: Sign, scale: number): ImageData {
  const img = new ImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const [r, g, b] = valueColor(sign, v[i], scale);
    img.data.set([r, g, b, 255], i * 4);
  }
  return img;
}

/** The input as RGBA [h, w] from an array [C, H, W] in any range (min-max scaled). */
export function arrayImage(a: NdArray): ImageData {
  const s = a.shape.slice(-3);
  const [c, h, w] = s.length === 3 ? s : [1, s[0] ?? 1, s[1] ?? a.data.length];
  let lo = Infinity, hi = -Infinity;
  for (const x of a.data) { lo = Math.min(lo, x); hi = Math.max(hi, x); }
  const k = hi > lo ? 255 / (hi - lo) : 0;
  const img = new ImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    for (let ch = 0; ch < 3; ch++) {
      const src = c >= 3 ? a.data[ch * h * w + i] : a.data[i];
      img.data[i * 4 + ch] = (src - lo) * k;
    }
    img.data[i * 4 + 3] = 255;
  }
  return img;
}

/** Indices of the top `pct`% values. */
export function topMask(v: Float32Array, pct: number): Uint8Array {
  const n = v.length, k = Math.max(1, Math.round((n * pct) / 100));
  const idx = Array.from(v.keys()).sort((a, b) => v[b] - v[a]);
  const m = new Uint8Array(n);
  for (let i = 0; i < k; i++) m[idx[i]] = 1;
  return m;
}

export function toCanvas(img: ImageData): HTMLCanvasElement {
  const c = document.createElement("canvas");
  c.width = img.width; c.height = img.height;
  c.getContext("2d")!.putImageData(img, 0, 0);
  return c;
}

/** Spearman rank correlation of two maps of the same size. */
export function spearman(a: Float32Array, b: Float32Array): number {
  const rank = (v: Float32Array) => {
    const idx = Array.from(v.keys()).sort((i, j) => v[i] - v[j]);
    const r = new Float64Array(v.length);
    for (let i = 0; i < idx.length;) {
      let j = i;
      while (j + 1 < idx.length && v[idx[j + 1]] === v[idx[i]]) j++;
      for (let k = i; k <= j; k++) r[idx[k]] = (i + j) / 2;
      i = j + 1;
    }
    return r;
  };
  const ra = rank(a), rb = rank(b), n = a.length;
  const ma = ra.reduce((s, x) => s + x, 0) / n, mb = rb.reduce((s, x) => s + x, 0) / n;
  let sab = 0, saa = 0, sbb = 0;
  for (let i = 0; i < n; i++) { sab += (ra[i] - ma) * (rb[i] - mb); saa += (ra[i] - ma) ** 2; sbb += (rb[i] - mb) ** 2; }
  return saa && sbb ? sab / Math.sqrt(saa * sbb) : 0;
}

/** Intersection over union of the top-k% of |a| and |b|. */
export function topIoU(a: Float32Array, b: Float32Array, pct: number): number {
  const ma = topMask(Float32Array.from(a, Math.abs), pct), mb = topMask(Float32Array.from(b, Math.abs), pct);
  let inter = 0, uni = 0;
  for (let i = 0; i < ma.length; i++) { inter += ma[i] & mb[i]; uni += ma[i] | mb[i]; }
  return uni ? inter / uni : 0;
}

/** Bilinear resize of a map (for comparing maps of different resolutions). */
export function resize(m: Map2D, h: number, w: number): Float32Array {
  if (m.h === h && m.w === w) return m.data;
  const out = new Float32Array(h * w);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const sy = Math.min(m.h - 1, ((y + 0.5) * m.h) / h - 0.5), sx = Math.min(m.w - 1, ((x + 0.5) * m.w) / w - 0.5);
    const y0 = Math.max(0, Math.floor(sy)), x0 = Math.max(0, Math.floor(sx));
    const y1 = Math.min(m.h - 1, y0 + 1), x1 = Math.min(m.w - 1, x0 + 1), fy = Math.max(0, sy - y0), fx = Math.max(0, sx - x0);
    const g = (yy: number, xx: number) => m.data[yy * m.w + xx];
    out[y * w + x] = (1 - fy) * ((1 - fx) * g(y0, x0) + fx * g(y0, x1)) + fy * ((1 - fx) * g(y1, x0) + fx * g(y1, x1));
  }
  return out;
}
