// The HTTP API of `candela serve` (docs/api.md), with the token when the server needs one.
import { parseNpy, NdArray } from "./npy";

export interface Option { type: string; default?: unknown; description?: string; choices?: string[] }
export interface MethodInfo {
  name: string; family: string; description: string; reference: string;
  stochastic: boolean; uses_baseline: boolean; uses_target: boolean; completeness: boolean;
  options: Record<string, Option>;
}
export interface MetricInfo { name: string; family: string; description: string; higher_is_better: boolean; needs_masks: boolean; needs_explainer: boolean }
export interface ModelEntry { id: string; format: string; bytes: number }
export interface ModelInfo {
  classes: number; output_kind: string; class_names?: string[]; feature_names?: string[];
  input: { shape: number[]; layout: string; mean: number[]; std: number[]; range: number[] };
  layers: { name: string; type: string; output_shape: number[] }[];
}
export interface DataEntry { id: string; kind: string; bytes: number; thumbnail?: string }
export interface Progress { stage: string; done: number; total: number; fraction: number }
export interface Job {
  id: string; kind: string; state: string; key: string; model: string; method?: string; cached?: boolean;
  progress?: Progress; eta_seconds?: number; error?: string; result?: string; request?: Record<string, unknown>;
  created?: number;
}
export interface Top { class: number; score: number; name?: string }

/** What the server gets as "input": a sample id or inline bytes. */
export type Input = { data: string } | { npy: string } | { image: string } | { csv: string } | { text: string };

let token = sessionStorage.getItem("candela-token") ?? "";
export function setToken(t: string) { token = t; sessionStorage.setItem("candela-token", t); }

export class ApiError extends Error {
  constructor(public status: number, message: string) { super(message); }
}

async function call(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (token) headers.set("Authorization", `Bearer ${token}`);
  if (init.body) headers.set("Content-Type", "application/json");
  const res = await fetch(path, { ...init, headers });
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`;
    try { msg = (await res.json()).error ?? msg; } catch { /* not JSON */ }
    throw new ApiError(res.status, msg);
  }
  return res;
}

export const getJson = async <T>(path: string): Promise<T> => (await call(path)).json();
export const postJson = async <T>(path: string, body: unknown): Promise<T> =>
  (await call(path, { method: "POST", body: JSON.stringify(body) })).json();
export const del = async (path: string) => (await call(path, { method: "DELETE" })).json();
export const getBuffer = async (path: string) => (await call(path)).arrayBuffer();

export const api = {
  models: () => getJson<ModelEntry[]>("/api/models"),
  model: (id: string) => getJson<ModelInfo>(`/api/models/${id}`),
  methods: () => getJson<MethodInfo[]>("/api/methods"),
  metrics: () => getJson<MetricInfo[]>("/api/metrics"),
  data: () => getJson<DataEntry[]>("/api/data"),
  file: (id: string) => getBuffer(`/api/data/${id}/file`),
  predict: (model: string, input: Input, top_k = 5) =>
    postJson<{ samples: { top: Top[] }[]; output_kind: string }>("/api/predict", { model, input, top_k }),
  explain: (req: Record<string, unknown>) => postJson<Job>("/api/explain", req),
  evaluate: (req: Record<string, unknown>) => postJson<Job>("/api/evaluate", req),
  audit: (req: Record<string, unknown>) => postJson<Job>("/api/audit", req),
  report: (req: Record<string, unknown>) => postJson<Job>("/api/report", req),
  job: (id: string) => getJson<Job>(`/api/jobs/${id}`),
  jobs: () => getJson<Job[]>("/api/jobs"),
  cancel: (id: string) => del(`/api/jobs/${id}`),
  result: <T = Record<string, unknown>>(key: string) => getJson<T>(`/api/results/${key}`),
  values: async (key: string): Promise<NdArray> => parseNpy(await getBuffer(`/api/results/${key}/values?format=npy`)),
};

/** Polls a job until it ends; `onProgress` sees every state. Resolves with the last state. */
export async function follow(job: Job, onProgress: (j: Job) => void, signal?: { stop: boolean }): Promise<Job> {
  let j = job;
  onProgress(j);
  let delay = 60;
  while (j.state === "queued" || j.state === "running") {
    await new Promise((r) => setTimeout(r, delay));
    if (signal?.stop) return j;
    delay = Math.min(400, delay * 1.5);
    j = await api.job(j.id);
    onProgress(j);
  }
  return j;
}
