// Samples: a data file, a row of one, or an upload; loaded once and kept.
import { api, Input, DataEntry } from "./api";
import { NdArray, parseNpy, row, writeNpy, toBase64 } from "./npy";

export interface Sample {
  ref: string;               // "d:ID", "d:ID#ROW", "u:NAME" or "t:TEXT" (text typed in, kept in the URL)
  label: string;
  input: Input;              // what the server gets
  kind: "image" | "array" | "tabular" | "text";
  text?: string;             // text samples
  image?: ImageBitmap;       // image samples
  array?: NdArray;           // [1, ...] for arrays and tabular rows
  columns?: string[];        // tabular: from a CSV header
  truth?: number;
}

const files = new Map<string, Promise<ArrayBuffer>>();
export const fileOf = (id: string) => {
  if (!files.has(id)) files.set(id, api.file(id));
  return files.get(id)!;
};

/** Uploads of this browser session, by name. */
const uploads: Record<string, { kind: string; b64: string }> = JSON.parse(sessionStorage.getItem("candela-uploads") ?? "{}");
export function addUpload(name: string, kind: string, b64: string): string {
  uploads[name] = { kind, b64 };
  try { sessionStorage.setItem("candela-uploads", JSON.stringify(uploads)); } catch { /* too big to keep: this tab only */ }
  return `u:${name}`;
}

export function isInputFile(e: DataEntry): boolean {
  const base = e.id.split("/").pop()!.toLowerCase();
  if (e.kind === "text") return !/vocab|merges|names|classes|label/.test(base);
  return e.kind === "image" || ((e.kind === "npy" || e.kind === "csv") && !/label|mask|^y_|_y\.|expected/.test(base));
}

/** The texts of a .txt sample file: one per non-empty line (as `candela explain --input FILE.txt`). */
export const textLines = (t: string) => t.split("\n").map((l) => l.replace(/\r$/, "")).filter((l) => l !== "");

export const textSample = (text: string, ref = `t:${text}`): Sample =>
  ({ ref, label: text.length > 48 ? text.slice(0, 47) + "…" : text, input: { text }, kind: "text", text });

/** The labels of `X.npy`: `X_labels.npy`, or `y_*.npy` beside `x_*.npy`. */
export function labelsFor(id: string, all: DataEntry[]): string | undefined {
  const stem = id.replace(/\.(npy|csv|txt)$/, "");
  const cands = [`${stem}_labels.npy`, id.replace(/(^|\/)x_([^/]*)$/, "$1y_$2")];
  return cands.find((c) => c !== id && all.some((e) => e.id === c));
}

export function masksFor(id: string, all: DataEntry[]): string | undefined {
  const c = id.replace(/(^|\/)x_([^/]*)$/, "$1masks_$2");
  return c !== id && all.some((e) => e.id === c) ? c : undefined;
}

export function parseCsv(text: string): { columns?: string[]; rows: number[][] } {
  const lines = text.trim().split(/\r?\n/).map((l) => l.split(","));
  const header = lines[0].some((c) => c.trim() !== "" && isNaN(Number(c)));
  return { columns: header ? lines[0].map((c) => c.trim()) : undefined, rows: lines.slice(header ? 1 : 0).map((l) => l.map(Number)) };
}

export function arrayInput(a: NdArray): Input { return { npy: toBase64(writeNpy(a)) }; }

const cache = new Map<string, Promise<Sample>>();
export function loadSample(ref: string): Promise<Sample> {
  if (!cache.has(ref)) cache.set(ref, load(ref));
  const p = cache.get(ref)!;
  p.catch(() => cache.delete(ref));
  return p;
}

async function load(ref: string): Promise<Sample> {
  if (ref.startsWith("t:")) return textSample(ref.slice(2), ref);
  if (ref.startsWith("u:")) {
    const name = ref.slice(2), u = uploads[name];
    if (!u) throw new Error(`the upload '${name}' belongs to another browser session: upload it again`);
    const bytes = Uint8Array.from(atob(u.b64), (c) => c.charCodeAt(0));
    if (u.kind === "image") return { ref, label: name, input: { image: u.b64 }, kind: "image", image: await createImageBitmap(new Blob([bytes])) };
    const a = parseNpy(bytes.buffer);
    const r = a.shape.length >= 2 ? row(a, 0) : { shape: [1, ...a.shape], data: a.data };
    return { ref, label: name, input: arrayInput(r), kind: r.shape.length >= 3 ? "array" : "tabular", array: r };
  }
  const [id, rowText] = ref.slice(2).split("#");
  if (rowText === undefined) {
    const blob = new Blob([await fileOf(id)]);
    return { ref, label: id, input: { data: id }, kind: "image", image: await createImageBitmap(blob) };
  }
  const i = Number(rowText);
  if (id.toLowerCase().endsWith(".txt")) {
    const lines = textLines(new TextDecoder().decode(await fileOf(id)));
    if (!(i >= 0 && i < lines.length)) throw new Error(`'${id}' has no line ${i}`);
    return { ...textSample(lines[i], ref), label: `${id} line ${i}` };
  }
  if (id.endsWith(".csv")) {
    const t = parseCsv(new TextDecoder().decode(await fileOf(id)));
    if (!(i >= 0 && i < t.rows.length)) throw new Error(`'${id}' has no row ${i}`);
    const a = { shape: [1, t.rows[i].length], data: Float32Array.from(t.rows[i]) };
    return { ref, label: `${id} row ${i}`, input: arrayInput(a), kind: "tabular", array: a, columns: t.columns };
  }
  const all = parseNpy(await fileOf(id));
  if (!(i >= 0 && i < all.shape[0])) throw new Error(`'${id}' has no row ${i}`);
  const a = row(all, i);
  return { ref, label: `${id} row ${i}`, input: arrayInput(a), kind: a.shape.length >= 3 ? "array" : "tabular", array: a };
}
