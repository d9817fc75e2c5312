// All view state lives in the URL (location.hash = "#/VIEW?k=v&..."), so a link reproduces a view.
import { signal, computed, effect } from "@preact/signals";

export type View = "data" | "explain" | "evaluate" | "jobs";
const DEFAULTS: Record<string, string> = {
  view: "data", model: "", sample: "", ref: "", methods: "", targets: "", opts: "",
  mode: "overlay", opacity: "0.6", sign: "signed", clip: "98", scale: "shared", smooth: "1", topk: "10",
  filter: "", truth: "", ev: "",
};

function parse(): Record<string, string> {
  const h = location.hash.replace(/^#\/?/, "");
  const [view, q] = h.split("?");
  const p = new URLSearchParams(q ?? "");
  const s: Record<string, string> = { ...DEFAULTS };
  for (const [k, v] of p) if (k in DEFAULTS) s[k] = v;
  if (view && ["data", "explain", "evaluate", "jobs"].includes(view)) s.view = view;
  return s;
}

export const url = signal<Record<string, string>>(parse());
window.addEventListener("hashchange", () => { url.value = parse(); });

export function serialize(s: Record<string, string>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(s)) if (k !== "view" && v !== DEFAULTS[k]) p.set(k, v);
  const q = p.toString();
  return `#/${s.view}${q ? "?" + q : ""}`;
}

/** Sets some keys; the URL follows (replaceState for tweaks, a history entry for a new view). */
let pending: ReturnType<typeof setTimeout> | undefined;
/** Writes the current state into the address bar now (before copying the link). */
export function flush() { clearTimeout(pending); history.replaceState(null, "", serialize(url.value)); }
export function set(patch: Record<string, string>) {
  const next = { ...url.value, ...patch };
  const h = serialize(next);
  clearTimeout(pending);
  if (patch.view && patch.view !== url.value.view) history.pushState(null, "", h);
  // Tweaks (a slider dragged) reach the address bar once they settle: browsers throttle
  // history updates, and the view itself follows the signal at once.
  else pending = setTimeout(() => history.replaceState(null, "", serialize(url.value)), 120);
  url.value = next;
}

export const get = (k: string) => computed(() => url.value[k]);
export const list = (v: string) => (v ? v.split(",").filter(Boolean) : []);

/** Per-method options as JSON in the URL: {"integrated_gradients": {"n_steps": 32}}. */
export const methodOptions = computed<Record<string, Record<string, unknown>>>(() => {
  try { return url.value.opts ? JSON.parse(url.value.opts) : {}; } catch { return {}; }
});

// Announcements for screen readers (one aria-live region in the page).
export const announcement = signal("");
export function announce(text: string) { announcement.value = text; }

export { effect };
