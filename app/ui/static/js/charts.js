// Line charts for training curves, on Chart.js (loaded as a classic script from /static/vendor/, so it is
// window.Chart). A series is a map x -> y: a point that arrives twice (the metrics history, then the event
// stream replaying it after a reload or reconnect) is kept once, so charts never show doubled curves.
// Each chart's <figure> carries data-points / data-first-x / data-last-x: what it holds, for the tests and
// for anyone inspecting the page.

import { el } from "./api.js";

export const LINE_COLOURS = [
  "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
];

const REDRAW_MS = 400;

export class LineChart {
  // figure: an element to fill; options: {title, xLabel, yLabel, logY, emptyText}
  constructor(figure, { title, xLabel, yLabel = "", logY = false, emptyText = "No points yet." } = {}) {
    this.figure = figure;
    this.logY = logY;
    this.series = new Map(); // label -> {points: Map(x -> y), colour}
    this.pending = null;
    const canvas = el("canvas", { role: "img", "aria-label": `${title}: chart of ${yLabel || "values"} by ${xLabel}` });
    this.empty = el("p", { class: "chart-empty" }, emptyText);
    this.summary = el("p", { class: "small muted", "aria-live": "off" });
    figure.replaceChildren(el("figcaption", {}, title), el("div", { class: "chart-box" }, canvas), this.empty, this.summary);
    figure.dataset.points = "0";
    this.chart = new window.Chart(canvas, {
      type: "line",
      data: { datasets: [] },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        parsing: false,
        normalized: true,
        interaction: { mode: "nearest", intersect: false },
        scales: {
          x: { type: "linear", title: { display: true, text: xLabel } },
          y: {
            type: logY ? "logarithmic" : "linear",
            title: { display: Boolean(yLabel), text: yLabel },
            ticks: { callback: (value) => formatValue(Number(value)), maxTicksLimit: 7 },
          },
        },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      },
    });
  }

  ensure(label, colour) {
    let s = this.series.get(label);
    if (!s) {
      s = { points: new Map(), colour: colour || LINE_COLOURS[this.series.size % LINE_COLOURS.length] };
      this.series.set(label, s);
    }
    return s;
  }

  add(label, x, y, colour) {
    if (!Number.isFinite(x) || !Number.isFinite(y)) return;
    if (this.logY && y <= 0) return; // a log axis cannot place it
    this.ensure(label, colour).points.set(x, y);
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = setTimeout(() => {
      this.pending = null;
      this.draw();
    }, REDRAW_MS);
  }

  draw() {
    const datasets = [];
    let count = 0;
    let first = Infinity;
    let last = -Infinity;
    const latest = [];
    for (const [label, s] of this.series) {
      const data = [...s.points].sort((a, b) => a[0] - b[0]).map(([x, y]) => ({ x, y }));
      count += data.length;
      if (data.length) {
        first = Math.min(first, data[0].x);
        last = Math.max(last, data[data.length - 1].x);
        latest.push(`${label} ${formatValue(data[data.length - 1].y)}`);
      }
      datasets.push({
        label,
        data,
        borderColor: s.colour,
        backgroundColor: s.colour,
        borderWidth: 2,
        pointRadius: data.length > 40 ? 0 : 2,
        tension: 0,
      });
    }
    this.chart.data.datasets = datasets;
    this.chart.update("none");
    this.empty.hidden = count > 0;
    this.summary.textContent = latest.length ? `Latest: ${latest.join(" · ")}` : "";
    this.figure.dataset.points = String(count);
    if (count) {
      this.figure.dataset.firstX = String(first);
      this.figure.dataset.lastX = String(last);
    }
  }

  clear() {
    this.series.clear();
    this.draw();
  }
}

export function formatValue(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e5) return v.toExponential(2);
  return v.toFixed(a < 1 ? 4 : a < 100 ? 3 : 1).replace(/\.?0+$/, "");
}
