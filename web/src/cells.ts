// One explanation (method × target × input): its job, then its values and attribution.json.
import { signal, Signal } from "@preact/signals";
import { api, Input, Job, MethodInfo } from "./api";
import { reduce, Map2D } from "./render";
import { announce } from "./state";

export interface CellState {
  status: "idle" | "queued" | "running" | "done" | "error" | "cancelled";
  job?: Job; map?: Map2D; attr?: Record<string, any>; error?: string; key?: string;
}

const cells = new Map<string, Signal<CellState>>();

export function hash(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16);
}

export interface CellSpec { model: string; input: Input; method: string; target: number; options: Record<string, unknown> }
export const cellKey = (c: CellSpec) => hash(JSON.stringify([c.model, c.input, c.method, c.target, c.options]));

export function cell(c: CellSpec): Signal<CellState> {
  const k = cellKey(c);
  if (!cells.has(k)) cells.set(k, signal<CellState>({ status: "idle" }));
  return cells.get(k)!;
}

/** Methods worth running at once: one or a few backward passes, no sampling. */
const COSTLY = new Set(["score_cam", "ablation_cam", "integrated_gradients", "layer_integrated_gradients", "layer_conductance",
  "neuron_integrated_gradients", "deep_lift_shap", "full_grad"]);
export const isCheap = (m: MethodInfo) => !m.stochastic && m.family !== "perturbation" && m.family !== "global" && !COSTLY.has(m.name);

export async function run(c: CellSpec, label: string): Promise<void> {
  const s = cell(c);
  if (s.value.status === "queued" || s.value.status === "running") return;
  s.value = { status: "queued" };
  try {
    let j = await api.explain({ model: c.model, input: c.input, method: c.method, target: String(c.target), options: c.options });
    s.value = { status: j.state === "done" ? "running" : (j.state as CellState["status"]), job: j };
    let delay = 50;
    while (j.state === "queued" || j.state === "running") {
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(300, delay * 1.4);
      j = await api.job(j.id);
      s.value = { status: j.state as CellState["status"], job: j };
    }
    if (j.state !== "done") {
      s.value = { status: j.state === "cancelled" ? "cancelled" : "error", job: j, error: j.error ?? j.state };
      announce(`${label}: ${j.state}${j.error ? ": " + j.error : ""}`);
      return;
    }
    const key = j.result ?? j.key;
    const [values, attr] = await Promise.all([api.values(key), api.result(key)]);
    s.value = { status: "done", job: j, key, map: reduce(values), attr };
    announce(`${label}: done`);
  } catch (e: any) {
    s.value = { status: "error", error: String(e.message ?? e) };
    announce(`${label}: error: ${e.message ?? e}`);
  }
}

export async function cancel(c: CellSpec) {
  const j = cell(c).value.job;
  if (j) { try { await api.cancel(j.id); } catch { /* already finished */ } }
}
