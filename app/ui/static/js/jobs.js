// Jobs list: every training job, filterable by status (kept in the URL), refreshed while any is active;
// tick two or more to compare them.

import { api, el, formatDate, showError, clearError } from "./api.js";
import { TERMINAL, shortId, statusBadge } from "./job-format.js";
import { offsetFromUrl, pageQuery, renderPager } from "./pager.js";

const filter = document.getElementById("status-filter");
const compareButton = document.getElementById("compare-selected");
const picked = new Set();
let timer = null;

function progressText(job) {
  const p = job.progress || {};
  if (job.status === "queued") return job.queue_position ? `queued, position ${job.queue_position}` : "queued";
  return p.total_steps ? `${p.step || 0} / ${p.total_steps} steps` : `${p.step || 0} steps`;
}

function updateCompare() {
  compareButton.disabled = picked.size < 2;
  compareButton.textContent = picked.size ? `Compare selected (${picked.size})` : "Compare selected";
}

function rowFor(job) {
  const box = el("input", {
    type: "checkbox",
    value: job.id,
    "aria-label": `Compare job ${shortId(job.id)}`,
    checked: picked.has(job.id),
  });
  box.addEventListener("change", () => {
    if (box.checked) picked.add(job.id);
    else picked.delete(job.id);
    updateCompare();
  });
  return el(
    "tr",
    { "data-job": job.id },
    el("td", {}, box),
    el("td", {}, el("a", { href: `/jobs/${job.id}`, class: "mono" }, shortId(job.id))),
    el("td", {}, statusBadge(job.status)),
    el("td", {}, el("a", { href: `/versions/${job.version_id}` }, job.version_name)),
    el("td", { class: "mono small" }, job.base_model),
    el("td", {}, progressText(job)),
    el("td", {}, formatDate(job.created_at)),
    el("td", {}, job.model_id ? el("a", { href: `/models/${job.model_id}` }, "model") : el("span", { class: "muted" }, "–")),
  );
}

async function load() {
  const status = filter.value;
  try {
    const page = await api(`/api/v1/jobs?${pageQuery(offsetFromUrl(), { status })}`);
    const jobs = page.items;
    clearError("jobs-error");
    document.getElementById("jobs-loading").hidden = true;
    document.getElementById("jobs-empty").hidden = !(page.total === 0 && !status);
    document.getElementById("jobs-none-match").hidden = !(page.total === 0 && status);
    document.getElementById("jobs-table").hidden = jobs.length === 0;
    renderPager("jobs-pager", page, { noun: status ? `${status} jobs` : "jobs" });
    document.getElementById("jobs-body").replaceChildren(...jobs.map(rowFor));
    clearTimeout(timer);
    if (jobs.some((j) => !TERMINAL.has(j.status))) timer = setTimeout(load, 4000);
  } catch (err) {
    document.getElementById("jobs-loading").hidden = true;
    showError("jobs-error", err);
  }
}

filter.addEventListener("change", () => {
  const url = new URL(window.location.href);
  if (filter.value) url.searchParams.set("status", filter.value);
  else url.searchParams.delete("status");
  url.searchParams.delete("offset"); // another filter: its first page
  window.history.replaceState(null, "", url);
  load();
});

compareButton.addEventListener("click", () => {
  window.location.assign(`/compare?jobs=${[...picked].join(",")}`);
});

const initial = new URLSearchParams(window.location.search).get("status") || "";
if ([...filter.options].some((o) => o.value === initial)) filter.value = initial;
updateCompare();
load();
