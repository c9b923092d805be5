// Compare runs: pick 2+ jobs (kept in the URL as ?jobs=a,b), overlay their curves (one chart per metric,
// one line per job) and set their data versions and hyperparameters side by side, differences marked.

import { api, apiAll, el, showError } from "./api.js";
import { LINE_COLOURS, LineChart, formatValue } from "./charts.js";
import { fixed3, shortId, statusBadge } from "./job-format.js";

const METRICS = [
  { name: "loss", title: "Training loss", x: "step", logY: true },
  { name: "lr", title: "Learning rate", x: "step" },
  { name: "valid_segm_AP", title: "Validation mask AP per epoch", x: "epoch" },
  { name: "valid_segm_AP50", title: "Validation mask AP50 per epoch", x: "epoch" },
];

const charts = Object.fromEntries(
  METRICS.map((m) => [
    m.name,
    new LineChart(document.getElementById(`cmp-${m.name}`), {
      title: m.title,
      xLabel: m.x,
      yLabel: m.name,
      logY: Boolean(m.logY),
      emptyText: "None of these jobs recorded it yet.",
    }),
  ]),
);

const cache = new Map(); // job id -> {job, metrics}
let jobs = [];
let selected = [];

function label(job) {
  return `${shortId(job.id)} · ${job.version_name}`;
}

function selectedFromUrl() {
  const raw = new URLSearchParams(window.location.search).get("jobs") || "";
  return raw.split(",").map((s) => s.trim()).filter(Boolean);
}

function saveUrl() {
  const url = new URL(window.location.href);
  if (selected.length) url.searchParams.set("jobs", selected.join(","));
  else url.searchParams.delete("jobs");
  window.history.replaceState(null, "", url);
}

async function details(id) {
  if (!cache.has(id)) {
    const [job, metrics] = await Promise.all([
      api(`/api/v1/jobs/${id}`),
      api(`/api/v1/jobs/${id}/metrics?${METRICS.map((m) => `name=${encodeURIComponent(m.name)}`).join("&")}`),
    ]);
    cache.set(id, { job, metrics });
  }
  return cache.get(id);
}

function show(value) {
  if (value === undefined) return "–";
  if (typeof value === "number") return formatValue(value);
  return typeof value === "string" ? value : JSON.stringify(value);
}

function diffRows(runs) {
  const hpNames = [...new Set(runs.flatMap((r) => Object.keys(r.job.hyperparameters)))].sort();
  const rows = [
    ["Data version", (j) => j.version_name],
    ["Base model", (j) => j.base_model],
    ["Status", (j) => j.status],
    ["Steps run", (j) => (j.progress ? j.progress.step : undefined)],
    ...hpNames.map((n) => [n, (j) => (j.hyperparameters[n] ? j.hyperparameters[n].value : undefined)]),
    ["Best validation mask AP", (j) => (j.best_valid || {}).segm_AP],
    ["Test mask AP50, fine-tuned", (j) => (j.test.fine_tuned ? j.test.fine_tuned.summary.segm_AP50 : undefined)],
  ];
  return rows.map(([name, get]) => {
    const values = runs.map((r) => get(r.job));
    const shown = values.map((v) => (name.startsWith("Test") || name.startsWith("Best") ? (v === undefined ? "–" : fixed3(v)) : show(v)));
    const differs = new Set(shown).size > 1;
    return el(
      "tr",
      { class: differs ? "differs" : "", "data-row": name, "data-differs": differs ? "true" : "false" },
      el("th", { scope: "row", class: name === name.toLowerCase() ? "mono" : "" }, name, differs ? el("span", { class: "differs-mark" }, "differs") : null),
      ...shown.map((v, i) => el("td", { class: "mono" }, name === "Status" ? statusBadge(values[i]) : v)),
    );
  });
}

function applyOnlyDifferences() {
  const only = document.getElementById("only-differences").checked;
  for (const tr of document.querySelectorAll("#diff-body tr")) tr.hidden = only && tr.dataset.differs !== "true";
}

async function compare() {
  saveUrl();
  const hint = document.getElementById("compare-hint");
  const result = document.getElementById("compare-result");
  if (selected.length < 2) {
    hint.textContent = selected.length ? "Pick one more job." : "Pick two or more jobs.";
    result.hidden = true;
    return;
  }
  hint.textContent = `Comparing ${selected.length} jobs.`;
  let runs;
  try {
    runs = await Promise.all(selected.map(details));
  } catch (err) {
    showError("compare-error", err);
    return;
  }
  for (const chart of Object.values(charts)) chart.clear();
  runs.forEach((run, i) => {
    const colour = LINE_COLOURS[i % LINE_COLOURS.length];
    const name = label(run.job);
    for (const chart of Object.values(charts)) chart.ensure(name, colour);
    for (const p of run.metrics) {
      const spec = METRICS.find((m) => m.name === p.name);
      if (spec) charts[p.name].add(name, spec.x === "epoch" ? p.epoch : p.step, p.value, colour);
    }
  });
  for (const chart of Object.values(charts)) chart.draw();
  document.getElementById("diff-head").replaceChildren(
    el("tr", {}, el("th", { scope: "col" }, "setting"),
      ...runs.map((r, i) => {
        const swatch = el("span", { class: "swatch-line" });
        swatch.style.background = LINE_COLOURS[i % LINE_COLOURS.length];
        return el("th", { scope: "col" }, swatch, el("a", { href: `/jobs/${r.job.id}`, class: "mono" }, shortId(r.job.id)));
      })),
  );
  document.getElementById("diff-body").replaceChildren(...diffRows(runs));
  applyOnlyDifferences();
  result.hidden = false;
}

function renderPicks() {
  document.getElementById("job-picks").replaceChildren(
    ...jobs.map((job) => {
      const box = el("input", { type: "checkbox", value: job.id, checked: selected.includes(job.id) });
      box.addEventListener("change", () => {
        selected = box.checked ? [...selected, job.id] : selected.filter((id) => id !== job.id);
        compare();
      });
      return el("li", {}, el("label", {}, box,
        el("span", {}, el("span", { class: "mono" }, shortId(job.id)), " ", statusBadge(job.status),
          el("br"), el("span", { class: "small" }, job.version_name, " · ", job.base_model))));
    }),
  );
}

document.getElementById("only-differences").addEventListener("change", applyOnlyDifferences);

async function init() {
  try {
    jobs = await apiAll("/api/v1/jobs");
  } catch (err) {
    document.getElementById("compare-loading").hidden = true;
    showError("compare-error", err);
    return;
  }
  document.getElementById("compare-loading").hidden = true;
  if (jobs.length < 2) {
    document.getElementById("compare-empty").hidden = false;
    return;
  }
  const known = new Set(jobs.map((j) => j.id));
  selected = selectedFromUrl().filter((id) => known.has(id));
  document.getElementById("compare-pick").hidden = false;
  renderPicks();
  await compare();
}

init();
