// ECharts through its tree-shaken modules (bar and line charts, canvas renderer), with ECharts'
// aria descriptions on and a text alternative next to each chart.
import * as echarts from "echarts/core";
import { BarChart, LineChart } from "echarts/charts";
import { GridComponent, TooltipComponent, AriaComponent, MarkLineComponent, LegendComponent } from "echarts/components";
import { CanvasRenderer } from "echarts/renderers";
import { useEffect, useRef } from "preact/hooks";

echarts.use([BarChart, LineChart, GridComponent, TooltipComponent, AriaComponent, MarkLineComponent, LegendComponent, CanvasRenderer]);

export type ChartOption = echarts.EChartsCoreOption;

export function Chart({ option, height = 200, label, testid }: { option: ChartOption; height?: number; label: string; testid?: string }) {
  const el = useRef<HTMLDivElement>(null);
  const chart = useRef<echarts.ECharts | null>(null);
  useEffect(() => {
    chart.current = echarts.init(el.current!, undefined, { renderer: "canvas" });
    const ro = new ResizeObserver(() => chart.current?.resize());
    ro.observe(el.current!);
    return () => { ro.disconnect(); chart.current?.dispose(); };
  }, []);
  useEffect(() => {
    chart.current?.setOption({ animation: false, aria: { enabled: true }, ...option }, true);
  }, [option]);
  // ECharts writes its own generated description on the chart's element (aria); ours, in words
  // that name what matters, is the figure's caption for screen readers.
  return (
    <figure style={{ margin: 0 }} data-testid={testid}>
      <div ref={el} style={{ height: `${height}px`, width: "100%" }} />
      <figcaption class="sr-only">{label}</figcaption>
    </figure>
  );
}

/** Horizontal bars (top-k predictions, attributions). */
export function barsOption(names: string[], values: number[], opts: { signed?: boolean; max?: number } = {}): ChartOption {
  return {
    grid: { left: 130, right: 30, top: 8, bottom: 24 },
    tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
    xAxis: { type: "value", max: opts.max },
    yAxis: { type: "category", data: names, inverse: true, axisLabel: { width: 120, overflow: "truncate" } },
    series: [{
      type: "bar", data: values.map((v) => ({ value: v, itemStyle: { color: opts.signed ? (v >= 0 ? "#b2182b" : "#2166ac") : "#4a6fa5" } })),
    }],
  };
}

/** SHAP's waterfall: from the base value, each feature's contribution in order, to f(x). */
export function waterfallOption(base: number, names: string[], values: number[]): ChartOption {
  const cats = ["base value", ...names, "f(x)"];
  const start: number[] = [], up: (number | string)[] = [], down: (number | string)[] = [];
  let acc = base;
  start.push(Math.min(0, base)); up.push(base >= 0 ? base : "-"); down.push(base < 0 ? -base : "-");
  for (const v of values) {
    start.push(v >= 0 ? acc : acc + v);
    up.push(v >= 0 ? v : "-"); down.push(v < 0 ? -v : "-");
    acc += v;
  }
  start.push(Math.min(0, acc)); up.push(acc >= 0 ? acc : "-"); down.push(acc < 0 ? -acc : "-");
  return {
    grid: { left: 150, right: 30, top: 8, bottom: 24 },
    tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
    xAxis: { type: "value", scale: true },
    yAxis: { type: "category", data: cats, inverse: true, axisLabel: { width: 140, overflow: "truncate" } },
    series: [
      { type: "bar", stack: "w", data: start, itemStyle: { color: "transparent" }, silent: true, name: "offset" },
      { type: "bar", stack: "w", data: up, itemStyle: { color: "#b2182b" }, name: "raises" },
      { type: "bar", stack: "w", data: down, itemStyle: { color: "#2166ac" }, name: "lowers" },
    ],
  };
}

/** SHAP's force plot as one stacked bar: pushes up (red) and down (blue) meeting at f(x). */
export function forceOption(names: string[], values: number[]): ChartOption {
  const series = names.map((n, i) => ({
    type: "bar", stack: values[i] >= 0 ? "pos" : "neg", name: n, data: [values[i]],
    itemStyle: { color: values[i] >= 0 ? "#b2182b" : "#2166ac", borderColor: "#fff" },
    label: { show: Math.abs(values[i]) > 0, formatter: n, position: "inside", fontSize: 10 },
  }));
  return {
    grid: { left: 10, right: 10, top: 8, bottom: 24 },
    tooltip: { trigger: "item" },
    xAxis: { type: "value" }, yAxis: { type: "category", data: ["f(x)"], show: false },
    series,
  };
}

export function curveOption(series: { name: string; values: number[] }[], xName = "fraction removed"): ChartOption {
  return {
    grid: { left: 40, right: 10, top: 28, bottom: 30 },
    legend: { top: 0 },
    tooltip: { trigger: "axis" },
    xAxis: { type: "value", min: 0, max: 1, name: xName, nameLocation: "middle", nameGap: 20 },
    yAxis: { type: "value", min: 0, max: 1 },
    series: series.map((s) => ({ type: "line", name: s.name, showSymbol: false, data: s.values.map((v, i) => [i / (s.values.length - 1), v]) })),
  };
}
