// How maps are drawn (Look) and the one colour scale that maps share: each panel reports its own
// clipped scale and, when shared, all draw with the largest. Used by the explain view and the report.
import { signal } from "@preact/signals";
import type { Mode, Sign } from "./render";

export interface Look { mode: Mode; sign: Sign; opacity: number; clip: number; shared: boolean; smooth: boolean; topk: number }

const scales = signal<Record<string, number>>({});
export function reportScale(k: string, v: number) {
  if (scales.value[k] !== v) scales.value = { ...scales.value, [k]: v };
}
export const sharedScale = () => Math.max(0, ...Object.values(scales.value));
