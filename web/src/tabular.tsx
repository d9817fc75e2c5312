// Tabular results: SHAP-style waterfall (default) and force plot, a sortable table with the
// feature values; the what-if table edits a row and the prediction follows.
import { useMemo, useState } from "preact/hooks";
import { api, ModelInfo } from "./api";
import type { CellState } from "./cells";
import { Chart, waterfallOption, forceOption } from "./charts";
import { Sample, arrayInput } from "./samples";

export function featureNames(sample: Sample, info?: ModelInfo, attr?: Record<string, any>): string[] {
  const n = sample.array!.data.length;
  const fromAttr = attr?.feature_names as string[] | undefined;
  const names = sample.columns ?? fromAttr ?? info?.feature_names;
  return Array.from({ length: n }, (_, i) => names?.[i] ?? `x${i}`);
}

function downloadCsv(name: string, rows: (string | number)[][]) {
  const text = rows.map((r) => r.map((c) => (typeof c === "string" && /[",\n]/.test(c) ? `"${c.replace(/"/g, '""')}"` : c)).join(",")).join("\n");
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  a.download = name;
  a.click();
}

export function TabularPanel({ st, sample, info }: { st: CellState; sample: Sample; info?: ModelInfo }) {
  const [plot, setPlot] = useState<"waterfall" | "force">("waterfall");
  const [sort, setSort] = useState<{ k: "name" | "value" | "attr"; desc: boolean }>({ k: "attr", desc: true });
  const names = featureNames(sample, info, st.attr);
  const vals = Array.from(st.map!.data);
  const x = Array.from(sample.array!.data);
  const out = st.attr?.output?.[0]?.[st.attr?.targets?.[0] ?? 0] as number | undefined;
  const total = vals.reduce((a, b) => a + b, 0);
  const base = out !== undefined ? out - total : 0;
  const order = vals.map((_, i) => i).sort((a, b) => Math.abs(vals[b]) - Math.abs(vals[a]));
  const top = order.slice(0, 12);
  const rest = order.slice(12).reduce((a, i) => a + vals[i], 0);
  const wNames = [...top.map((i) => `${names[i]} = ${fmt(x[i])}`), ...(order.length > 12 ? [`${order.length - 12} other features`] : [])];
  const wVals = [...top.map((i) => vals[i]), ...(order.length > 12 ? [rest] : [])];
  const option = useMemo(() => (plot === "waterfall" ? waterfallOption(base, wNames, wVals) : forceOption(wNames, wVals)), [plot, st]);
  const rows = vals.map((v, i) => ({ i, name: names[i], value: x[i], attr: v }));
  rows.sort((a, b) => {
    const d = sort.k === "name" ? a.name.localeCompare(b.name) : sort.k === "value" ? a.value - b.value : Math.abs(a.attr) - Math.abs(b.attr);
    return sort.desc ? -d : d;
  });
  const head = (k: "name" | "value" | "attr", label: string) => (
    <th aria-sort={sort.k === k ? (sort.desc ? "descending" : "ascending") : "none"}>
      <button type="button" onClick={() => setSort({ k, desc: sort.k === k ? !sort.desc : true })}>{label}</button></th>
  );
  return (
    <div data-testid="tabular">
      <div role="radiogroup" aria-label="plot" class="chips">
        <button type="button" class="chip" aria-pressed={plot === "waterfall"} onClick={() => setPlot("waterfall")}>waterfall</button>
        <button type="button" class="chip" aria-pressed={plot === "force"} onClick={() => setPlot("force")}>force</button>
      </div>
      <Chart option={option} height={plot === "waterfall" ? 30 + 18 * (wNames.length + 2) : 90}
             label={`${plot} plot: base value ${base.toPrecision(4)}, output ${out?.toPrecision(4) ?? "?"}; largest: ${wNames.slice(0, 3).join(", ")}`} />
      <details><summary>Table ({vals.length} features)</summary>
        <button type="button" onClick={() => downloadCsv("attributions.csv", [["feature", "value", "attribution"], ...rows.map((r) => [r.name, r.value, r.attr])])}>CSV</button>
        <table data-testid="feature-table">
          <thead><tr>{head("name", "feature")}{head("value", "value")}{head("attr", "attribution")}</tr></thead>
          <tbody>{rows.map((r) => <tr><td>{r.name}</td><td>{fmt(r.value)}</td><td style={{ color: r.attr >= 0 ? "#b2182b" : "#2166ac" }}>{r.attr.toPrecision(4)}</td></tr>)}</tbody>
        </table>
      </details>
    </div>
  );
}

const fmt = (v: number) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toPrecision(3) : String(Math.round(v * 1000) / 1000));

/** Edit a feature's value: the prediction and the cheap explanations follow. */
export function WhatIfTable({ sample, info, onChange }: { sample: Sample; info?: ModelInfo; onChange: (s: Sample) => void }) {
  const names = featureNames(sample, info);
  const a = sample.array!;
  return (
    <details open data-testid="whatif-table"><summary>Feature values (edit for what-if)</summary>
      <div style={{ maxHeight: "320px", overflow: "auto" }}>
        <table><tbody>
          {names.map((n, i) => (
            <tr><td><label for={`wf-${i}`}>{n}</label></td>
              <td><input id={`wf-${i}`} type="number" step="any" value={a.data[i]} style={{ width: "7em" }}
                         onChange={(e) => {
                           const data = Float32Array.from(a.data);
                           data[i] = Number((e.target as HTMLInputElement).value);
                           const arr = { shape: a.shape, data };
                           onChange({ ...sample, ref: sample.ref + "*", input: arrayInput(arr), array: arr });
                         }} /></td></tr>
          ))}
        </tbody></table>
      </div>
    </details>
  );
}

/** The global surrogate tree (`surrogate_tree`) fitted on the whole table this row comes from: its
 *  if-then rules with coverage and fidelity, and the tree's overall fidelity to the model. */
export function SurrogateRules({ model, dataId }: { model: string; dataId: string }) {
  const [st, setSt] = useState<{ status: string; extra?: any; error?: string }>({ status: "idle" });
  const go = async () => {
    setSt({ status: "running" });
    try {
      let j = await api.explain({ model, input: { data: dataId }, method: "surrogate_tree" });
      while (j.state === "queued" || j.state === "running") { await new Promise((r) => setTimeout(r, 200)); j = await api.job(j.id); }
      if (j.state !== "done") throw new Error(j.error ?? j.state);
      const a: any = await api.result(j.result ?? j.key);
      setSt({ status: "done", extra: a.extra });
    } catch (e: any) { setSt({ status: "error", error: String(e.message ?? e) }); }
  };
  const rules = (st.extra?.rules ?? []) as { rule: string; coverage: number; fidelity: number; samples: number }[];
  return (
    <div class="card" data-testid="surrogate">
      <h3>Global surrogate rules</h3>
      <button type="button" onClick={go} disabled={st.status === "running"}>Fit a surrogate tree on {dataId}</button>
      {st.status === "running" && <span class="muted"> fitting…</span>}
      {st.error && <p class="error" role="alert">{st.error}</p>}
      {st.extra && <>
        <p>The tree agrees with the model on <b>{(100 * st.extra.fidelity).toFixed(1)}%</b> of the rows (depth {st.extra.depth}, {st.extra.leaves} leaves).</p>
        <table data-testid="rules"><thead><tr><th scope="col">rule</th><th scope="col">coverage</th><th scope="col">fidelity</th><th scope="col">rows</th></tr></thead>
          <tbody>{rules.slice().sort((a, b) => b.coverage - a.coverage).map((r) => (
            <tr><td>{r.rule}</td><td>{(100 * r.coverage).toFixed(1)}%</td><td>{(100 * r.fidelity).toFixed(1)}%</td><td>{r.samples}</td></tr>))}</tbody></table>
      </>}
    </div>
  );
}
