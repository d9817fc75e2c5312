// Evaluate: `candela evaluate` on a data set from the UI; method × metric table with 95%
// intervals and ranks; best and worst samples per cell, a click away from the explain view.
import { useEffect, useRef, useState } from "preact/hooks";
import { parseNpy, row } from "./npy";
import { arrayImage, toCanvas } from "./render";
import { api, Job } from "./api";
import { url, set, announce } from "./state";
import { useAsync, ModelPicker } from "./data";
import { methodsP } from "./explain";
import { isInputFile, labelsFor, masksFor, fileOf } from "./samples";
import { Chart, curveOption } from "./charts";

interface Summary { [metric: string]: { higher_is_better: boolean; methods: Record<string, { mean: number; ci95: number[]; n: number; rank: number; curve?: number[] }> } }

export function EvaluateView() {
  const u = url.value;
  const [data] = useAsync(api.data, []);
  const [methods] = useAsync(() => methodsP, []);
  const [metrics] = useAsync(api.metrics, []);
  const [form, setForm] = useState({ data: "", labels: "", masks: "", methods: ["saliency", "integrated_gradients"], metrics: ["deletion", "sparseness"], max: 16 });
  const [job, setJob] = useState<Job | null>(null);
  const [err, setErr] = useState("");
  const npys = (data ?? []).filter((e) => e.kind === "npy");
  useEffect(() => {
    if (!data || form.data) return;
    const first = (data ?? []).find((e) => e.kind === "npy" && isInputFile(e));
    if (first) setForm((f) => ({ ...f, data: first.id, labels: labelsFor(first.id, data) ?? "", masks: masksFor(first.id, data) ?? "" }));
  }, [data]);
  const toggle = (k: "methods" | "metrics", n: string) => setForm((f) => ({ ...f, [k]: f[k].includes(n) ? f[k].filter((x) => x !== n) : [...f[k], n] }));
  const submit = async () => {
    setErr("");
    try {
      let j = await api.evaluate({ model: u.model, data: form.data, ...(form.labels ? { labels: form.labels } : {}), ...(form.masks ? { masks: form.masks } : {}),
                                   methods: form.methods, metrics: form.metrics, max_samples: form.max });
      setJob(j);
      while (j.state === "queued" || j.state === "running") {
        await new Promise((r) => setTimeout(r, 250));
        j = await api.job(j.id);
        setJob(j);
      }
      announce(`evaluation ${j.state}`);
      if (j.state === "done") set({ ev: j.result ?? j.key });
      else setErr(j.error ?? j.state);
    } catch (e: any) { setErr(String(e.message ?? e)); }
  };
  const sel = (k: "data" | "labels" | "masks", label: string, optional: boolean) => (
    <label>{label}{" "}
      <select value={form[k]} onChange={(e) => {
        const v = (e.target as HTMLSelectElement).value;
        setForm((f) => (k === "data" ? { ...f, data: v, labels: labelsFor(v, data ?? []) ?? "", masks: masksFor(v, data ?? []) ?? "" } : { ...f, [k]: v }));
      }}>
        {optional && <option value="">none</option>}
        {npys.map((e) => <option value={e.id}>{e.id}</option>)}
      </select></label>
  );
  return (
    <section aria-labelledby="ev-h">
      <h2 id="ev-h">Evaluate</h2>
      <div class="card col">
        <div class="row"><ModelPicker />{sel("data", "Data", false)}{sel("labels", "Labels", true)}{sel("masks", "Ground-truth masks", true)}
          <label>Samples <input type="number" min={1} max={10000} value={form.max} style={{ width: "5em" }} onChange={(e) => setForm({ ...form, max: Number((e.target as HTMLInputElement).value) })} /></label></div>
        <fieldset><legend>Methods</legend><div class="chips">
          {(methods ?? []).filter((m) => m.family !== "global").map((m) => <button type="button" class="chip" aria-pressed={form.methods.includes(m.name)} onClick={() => toggle("methods", m.name)}>{m.name}</button>)}
        </div></fieldset>
        <fieldset><legend>Metrics</legend><div class="chips">
          {(metrics ?? []).map((m) => <button type="button" class="chip" aria-pressed={form.metrics.includes(m.name)} title={m.description}
                                              onClick={() => toggle("metrics", m.name)}>{m.name}{m.needs_masks ? " (masks)" : ""}</button>)}
        </div></fieldset>
        <div class="row">
          <button type="button" class="primary" onClick={submit} data-testid="evaluate-run" disabled={!u.model || !form.data}>Evaluate</button>
          {job && (job.state === "queued" || job.state === "running") && <>
            <progress max={1} value={job.progress?.fraction ?? 0} aria-label="evaluation progress" />
            <span class="muted">{job.progress?.stage} {job.eta_seconds ? `${job.eta_seconds.toFixed(0)} s left` : ""}</span>
            <button type="button" onClick={() => api.cancel(job.id)}>Cancel</button></>}
        </div>
        {err && <p class="error" role="alert">{err}</p>}
      </div>
      {u.ev && <Results k={u.ev} />}
      <Audit model={u.model} data={form.data} labels={form.labels} method={form.methods.includes("integrated_gradients") || !form.methods.length ? "integrated_gradients" : form.methods[0]} max={form.max} />
    </section>
  );
}

function Results({ k }: { k: string }) {
  const [res, err] = useAsync(() => api.result<{ summary: Summary; settings: any }>(k), [k]);
  const [meta] = useAsync(() => fetch(`/api/results/${k}/meta`).then((r) => r.json()), [k]);
  const [csv] = useAsync(() => fetch(`/api/results/${k}/files/results.csv`).then((r) => (r.ok ? r.text() : "")), [k]);
  if (err) return <p class="error">{err}</p>;
  if (!res) return <p class="muted">loading the results…</p>;
  const metrics = Object.keys(res.summary);
  const methods = res.settings.methods as string[];
  const dataId = meta?.request?.data as string | undefined;
  const perSample: Record<string, { s: number; v: number }[]> = {};
  for (const line of (csv ?? "").split("\n").slice(1)) {
    const [s, m, me, v] = line.split(",");
    if (v !== undefined) (perSample[`${m}|${me}`] ??= []).push({ s: Number(s), v: Number(v) });
  }
  return (
    <div class="card" data-testid="evaluate-results">
      <h3>Results ({res.settings.data?.samples} samples)</h3>
      <table>
        <caption class="sr-only">Mean of each metric per method with its 95% interval and rank</caption>
        <thead><tr><th scope="col">method</th>{metrics.map((m) => <th scope="col">{m} {res.summary[m].higher_is_better ? "↑" : "↓"}</th>)}</tr></thead>
        <tbody>{methods.map((me) => (
          <tr><th scope="row">{me}</th>{metrics.map((m) => {
            const c = res.summary[m].methods[me];
            if (!c) return <td>—</td>;
            const samples = (perSample[`${me}|${m}`] ?? []).slice().sort((a, b) => b.v - a.v);
            const hib = res.summary[m].higher_is_better;
            const best = hib ? samples.slice(0, 2) : samples.slice(-2).reverse(), worst = hib ? samples.slice(-2).reverse() : samples.slice(0, 2);
            const link = (x: { s: number }, what: string) => typeof dataId === "string"
              ? <a href="#" onClick={(e) => { e.preventDefault(); set({ view: "explain", sample: `d:${dataId}#${x.s}`, methods: me, targets: "" }); }}>{what} #{x.s}</a> : null;
            return <td class={c.rank === 1 ? "best" : ""}>{c.mean.toPrecision(3)} [{c.ci95[0].toPrecision(3)}, {c.ci95[1].toPrecision(3)}] · rank {c.rank}
              <div class="muted">{best.map((x) => link(x, "best"))} {worst.map((x) => link(x, "worst"))}</div></td>;
          })}</tr>
        ))}</tbody>
      </table>
      {metrics.filter((m) => methods.some((me) => res.summary[m].methods[me]?.curve)).map((m) => {
        const series = methods.filter((me) => res.summary[m].methods[me]?.curve).map((me) => ({ name: me, values: res.summary[m].methods[me].curve! }));
        return (
          <div data-testid={`curve-${m}`}>
            <h4>{m}: mean curve over the samples</h4>
            <Chart option={curveOption(series, m === "insertion" ? "fraction inserted" : "fraction removed")} height={200}
                   label={`${m} curves: ${series.map((x) => `${x.name} from ${x.values[0].toFixed(3)} to ${x.values[x.values.length - 1].toFixed(3)}`).join("; ")}`} />
          </div>
        );
      })}
      <p><a href={`/api/results/${k}/files/results.csv`} download>results.csv</a> · <a href={`/api/results/${k}`} target="_blank" rel="noopener">results.json</a></p>
    </div>
  );
}

/** `candela audit`: the image region most explanations lean on, drawn on the samples that lean
 *  on it most. */
function Audit({ model, data, labels, method, max }: { model: string; data: string; labels: string; method: string; max: number }) {
  const [st, setSt] = useState<{ status: string; fraction?: number; audit?: any; error?: string }>({ status: "idle" });
  const go = async () => {
    setSt({ status: "queued" });
    try {
      let j = await api.audit({ model, data, ...(labels ? { labels } : {}), method, max_samples: max });
      while (j.state === "queued" || j.state === "running") {
        setSt({ status: j.state, fraction: j.progress?.fraction });
        await new Promise((r) => setTimeout(r, 250));
        j = await api.job(j.id);
      }
      if (j.state !== "done") throw new Error(j.error ?? j.state);
      const audit = await api.result(j.result ?? j.key);
      setSt({ status: "done", audit });
      announce(`audit: ${(audit as any).suspected ? "a suspected shortcut" : "no shortcut found"}`);
    } catch (e: any) { setSt({ status: "error", error: String(e.message ?? e) }); }
  };
  return (
    <div class="card" data-testid="audit" style={{ marginTop: ".6rem" }}>
      <h3>Shortcut audit</h3>
      <button type="button" onClick={go} disabled={!model || !data || st.status === "queued" || st.status === "running"}>
        Audit {data || "the data"} with {method}</button>
      {(st.status === "queued" || st.status === "running") && <progress max={1} value={st.fraction ?? 0} aria-label="audit progress" />}
      {st.error && <p class="error" role="alert">{st.error}</p>}
      {st.audit && <>
        <p data-testid="audit-verdict"><b>{st.audit.suspected ? "⚠ Suspected shortcut" : "No shortcut found"}</b>: {st.audit.evidence}</p>
        <AuditSamples data={data} audit={st.audit} />
      </>}
    </div>
  );
}

function AuditSamples({ data, audit }: { data: string; audit: any }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    let live = true;
    (async () => {
      if (!data.endsWith(".npy")) return;
      const a = parseNpy(await fileOf(data));
      const shares: number[] = audit.sample_shares ?? [];
      const top = shares.map((v, i) => [v, i]).sort((x, y) => y[0] - x[0]).slice(0, 6);
      const w = audit.window;
      const nodes = top.map(([v, i]) => {
        const c = toCanvas(arrayImage(row(a, i)));
        const big = document.createElement("canvas");
        const k = Math.max(1, Math.floor(128 / c.width));
        big.width = c.width * k; big.height = c.height * k;
        const ctx = big.getContext("2d")!;
        ctx.imageSmoothingEnabled = false;
        ctx.drawImage(c, 0, 0, big.width, big.height);
        ctx.strokeStyle = "#e11d48"; ctx.lineWidth = 2;
        ctx.strokeRect(w.x0 * k, w.y0 * k, (w.x1 - w.x0) * k, (w.y1 - w.y0) * k);
        big.setAttribute("role", "img");
        big.setAttribute("aria-label", `sample ${i}: ${(100 * v).toFixed(1)}% of the relevance in the flagged window`);
        const fig = document.createElement("figure");
        const cap = document.createElement("figcaption");
        cap.textContent = `#${i}: ${(100 * v).toFixed(1)}%`;
        fig.append(big, cap);
        return fig;
      });
      if (live && box.current) box.current.replaceChildren(...nodes);
    })();
    return () => { live = false; };
  }, [data, audit]);
  return <div ref={box} class="row" data-testid="audit-samples" />;
}
