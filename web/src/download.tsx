// "Download report": the same self-contained HTML file as `candela report`, built by the server
// (POST /api/report, a job) from the explain view's model, sample, methods and first target.
import { useState } from "preact/hooks";
import { api, follow, getBuffer, Input } from "./api";
import { announce } from "./state";

export function DownloadReport({ model, input, methods, target, options }: { model: string; input: Input; methods: string[]; target?: number; options: Record<string, Record<string, unknown>> }) {
  const [st, setSt] = useState<{ status: string; fraction?: number; error?: string }>({ status: "idle" });
  // On by default: the report's check randomises every layer at once and explains once more per
  // method (randomisation_mode "full"); the trust panel's per-layer check runs for one result.
  const [randomisation, setRandomisation] = useState(true);
  const busy = st.status === "queued" || st.status === "running";
  const go = async () => {
    setSt({ status: "queued" });
    try {
      const method_options = Object.fromEntries(Object.entries(options).filter(([m]) => methods.includes(m)));
      const j = await follow(await api.report({ model, input, methods, target: target === undefined ? "top1" : String(target), method_options, randomisation }),
                             (j) => setSt({ status: j.state, fraction: j.progress?.fraction }));
      if (j.state !== "done") throw new Error(j.error ?? j.state);
      const bytes = await getBuffer(`/api/results/${j.result ?? j.key}/files/report.html`);
      const a = document.createElement("a");
      a.href = URL.createObjectURL(new Blob([bytes], { type: "text/html" }));
      a.download = `candela-report-${model.replace(/[^A-Za-z0-9_.-]+/g, "_")}.html`;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 60000);
      setSt({ status: "done" });
      announce("report downloaded");
    } catch (e: any) { setSt({ status: "error", error: String(e.message ?? e) }); }
  };
  return (
    <span data-testid="download-report">
      <button type="button" onClick={go} disabled={busy || !methods.length} title="One HTML file with these methods side by side and their trust checks (candela report)">Download report</button>
      <label style={{ marginLeft: ".3rem" }}><input type="checkbox" checked={randomisation} data-testid="report-randomisation"
             onChange={(e) => setRandomisation((e.target as HTMLInputElement).checked)} /> with the randomisation check (one more explanation per method)</label>
      {busy && <progress max={1} value={st.fraction ?? 0} aria-label="report progress" />}
      {st.error && <span class="error" role="alert"> {st.error}</span>}
    </span>
  );
}
