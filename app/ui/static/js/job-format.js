// What the job, jobs, compare and model pages show the same way: status badges, short ids, durations, and
// which recorded metric goes on which chart.

import { el } from "./api.js";

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
export const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];

export function statusBadge(status) {
  return el("span", { class: `badge badge-${status}`, "data-status": status }, status);
}

export function shortId(id) {
  return String(id).slice(0, 8);
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

// The charts a run has, and which metric names feed each. Losses and the learning rate are per step;
// validation figures come once per evaluation, so they are drawn per epoch.
export const CHARTS = [
  {
    key: "loss",
    title: "Training losses",
    xLabel: "step",
    x: "step",
    yLabel: "loss",
    // The final layer's loss terms; the `_l0` ones (first decoder layer) would only crowd the chart.
    accepts: (name) => name.startsWith("loss") && !name.endsWith("_l0"),
  },
  { key: "lr", title: "Learning rate", xLabel: "step", x: "step", yLabel: "lr", accepts: (name) => name === "lr" },
  {
    key: "ap",
    title: "Validation AP per epoch",
    xLabel: "epoch",
    x: "epoch",
    yLabel: "AP",
    accepts: (name) => /^valid_(segm|bbox)_AP(50)?$/.test(name),
  },
];

export function chartFor(name) {
  return CHARTS.find((c) => c.accepts(name)) || null;
}

// The summary metrics a model is judged by, in the order tables show them.
export const SUMMARY_METRICS = [
  ["segm_AP", "mask AP"],
  ["segm_AP50", "mask AP50"],
  ["segm_AP75", "mask AP75"],
  ["bbox_AP", "box AP"],
  ["bbox_AP50", "box AP50"],
  ["bbox_AP75", "box AP75"],
];

export function fixed3(v) {
  return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(3);
}

// A table of base (zero-shot) vs fine-tuned test metrics; null when there are none yet.
export function baseVsTuned(base, tuned, baseName) {
  if (!base && !tuned) return null;
  const rows = SUMMARY_METRICS.filter(([key]) => (base && key in base) || (tuned && key in tuned)).map(
    ([key, label]) => {
      const b = base ? base[key] : null;
      const t = tuned ? tuned[key] : null;
      const better = b !== null && b !== undefined && t !== null && t !== undefined && t > b;
      return el(
        "tr",
        {},
        el("th", { scope: "row" }, label),
        el("td", { class: "num" }, base ? fixed3(b) : "not evaluated"),
        el("td", { class: `num${better ? " metric-better" : ""}` }, fixed3(t)),
      );
    },
  );
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      { class: "test-metrics" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          el("th", { scope: "col" }, "test split"),
          el("th", { scope: "col", class: "num" }, `base: ${baseName} (zero-shot)`),
          el("th", { scope: "col", class: "num" }, "fine-tuned"),
        ),
      ),
      el("tbody", {}, rows),
    ),
  );
}
