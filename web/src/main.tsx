import { render } from "preact";
import { url, set, flush, announcement } from "./state";
import { DataView } from "./data";
import { ExplainView } from "./explain";
import { EvaluateView } from "./evaluate";
import { JobsView } from "./jobs";
import "./style.css";

const TABS: [string, string][] = [["data", "Models & data"], ["explain", "Explain"], ["evaluate", "Evaluate"], ["jobs", "Jobs"]];

function App() {
  const view = url.value.view;
  return (
    <>
      <header>
        <h1>Candela</h1>
        <nav aria-label="Views">
          {TABS.map(([v, label]) => (
            <a href={`#/${v}`} aria-current={view === v ? "page" : undefined}
               onClick={(e) => { e.preventDefault(); set({ view: v }); }}>{label}</a>
          ))}
        </nav>
        <button type="button" class="link" onClick={() => { flush(); navigator.clipboard?.writeText(location.href).catch(() => {}); }}
                title="Copy a link that reproduces this view">Copy permalink</button>
      </header>
      <div class="sr-only" role="status" aria-live="polite" data-testid="announcer">{announcement.value}</div>
      <main>
        {view === "data" && <DataView />}
        {view === "explain" && <ExplainView />}
        {view === "evaluate" && <EvaluateView />}
        {view === "jobs" && <JobsView />}
      </main>
    </>
  );
}

performance.mark("candela-start");
render(<App />, document.getElementById("app")!);
