// Jobs: every job of the server with its progress, ETA and errors; cancel the running ones.
import { useEffect, useState } from "preact/hooks";
import { api, Job } from "./api";

export function JobsView() {
  const [jobs, setJobs] = useState<Job[]>([]);
  const [err, setErr] = useState("");
  useEffect(() => {
    let live = true;
    const tick = async () => {
      try { const j = await api.jobs(); if (live) setJobs(j); setErr(""); } catch (e: any) { setErr(String(e.message ?? e)); }
      if (live) setTimeout(tick, 1000);
    };
    tick();
    return () => { live = false; };
  }, []);
  return (
    <section aria-labelledby="jobs-h">
      <h2 id="jobs-h">Jobs</h2>
      {err && <p class="error" role="alert">{err}</p>}
      <table data-testid="jobs">
        <thead><tr><th scope="col">job</th><th scope="col">kind</th><th scope="col">model</th><th scope="col">method</th><th scope="col">state</th><th scope="col">progress</th><th scope="col"><span class="sr-only">actions</span></th></tr></thead>
        <tbody>{jobs.map((j) => (
          <tr>
            <td><code>{j.id}</code></td><td>{j.kind}</td><td>{j.model}</td><td>{j.method ?? ""}</td>
            <td class={j.state === "error" ? "error" : ""}>{j.state}{j.cached ? " (cached)" : ""}{j.error ? `: ${j.error}` : ""}</td>
            <td>{(j.state === "running" || j.state === "queued") && <><progress max={1} value={j.progress?.fraction ?? 0} aria-label={`job ${j.id} progress`} /> {j.eta_seconds ? `${j.eta_seconds.toFixed(1)} s left` : ""}</>}</td>
            <td>{(j.state === "running" || j.state === "queued") && <button type="button" onClick={() => api.cancel(j.id)}>Cancel</button>}</td>
          </tr>
        ))}</tbody>
      </table>
    </section>
  );
}
