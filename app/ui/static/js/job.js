// Job page: status, queue position, base model, progress and ETA, live charts, events, logs, stop/cancel.
//
// The charts first load every recorded point (GET .../metrics), then follow the event stream
// (EventSource on GET .../events, authenticated by the session cookie). A fresh stream replays the job's
// events from its start, and the charts keep one value per (series, x), so the replay fills any gap
// between the history and the live feed without drawing anything twice. When the connection drops,
// EventSource reconnects by itself with Last-Event-ID and the server sends only what was missed; after the
// final status the page closes the stream (a later reconnect would be answered 204, which ends it too).

import { ApiError, api, clearError, el, formatDate, showError } from "./api.js";
import { LineChart, formatValue } from "./charts.js";
import { CHARTS, TERMINAL, baseVsTuned, chartFor, duration, statusBadge } from "./job-format.js";

const root = document.getElementById("job");
const jobId = root.dataset.jobId;
const live = document.getElementById("live");
const LOG_LINES = 300;
const LOG_PAGE = 1000;

const charts = Object.fromEntries(
  CHARTS.map((c) => [
    c.key,
    new LineChart(document.getElementById(`chart-${c.key}`), {
      title: c.title,
      xLabel: c.xLabel,
      yLabel: c.yLabel,
      // Losses span orders of magnitude (the total is the weighted sum of the terms): a log axis shows all.
      logY: c.key === "loss",
      emptyText: c.key === "ap" ? "Appears after the first validation (end of an epoch)." : "Appears with the first logged steps.",
    }),
  ]),
);

let job = null;
let source = null;
let lastLogId = 0;
let logLines = [];
let refreshTimer = null;
let refreshing = false;

function addPoint(name, step, epoch, value) {
  const spec = chartFor(name);
  if (!spec) return;
  charts[spec.key].add(name, spec.x === "epoch" ? epoch : step, value);
}

function setLive(state, text) {
  live.dataset.state = state;
  live.textContent = text;
}

let lastProgress = { step: 0 };
// What the job page calls each phase before training (progress.phase.name).
const PHASES = { caching: "caching image embeddings", downloading: "downloading the base model" };
// A phase's count as shown: bytes for a download, items for the rest.
function phaseCount(ph) {
  if (ph.name !== "downloading") return `${ph.done}/${ph.total}`;
  const gb = (n) => ((n || 0) / 1e9).toFixed(2);
  return `${gb(ph.done)}/${gb(ph.total)} GB`;
}

function showProgress(update) {
  // Snapshots (total, ETA, speed) come every few seconds and lag the metric points, which also tell the
  // step: keep what each knows, and never show a step older than one already drawn.
  const u = update || {};
  const p = { ...lastProgress, ...u, step: Math.max(u.step || 0, lastProgress.step || 0) };
  lastProgress = p;
  const bar = document.getElementById("job-progress");
  const running = p.phase && job && job.status === "running";
  document.getElementById("progress-text").dataset.phase = running ? p.phase.name : "";
  if (running) {
    // A phase before step 0 (the base model's download, decoder mode's caching): its own count and ETA.
    const ph = p.phase;
    bar.max = Math.max(1, ph.total || 0);
    bar.value = Math.min(ph.done || 0, bar.max);
    const text = [`${PHASES[ph.name] || ph.name} ${phaseCount(ph)}`];
    if (ph.eta_seconds !== null && ph.eta_seconds !== undefined) text.push(`about ${duration(ph.eta_seconds)} left`);
    text.push("training starts after it");
    document.getElementById("progress-text").textContent = text.join(" · ");
    return;
  }
  const total = p.total_steps || 0;
  bar.max = Math.max(1, total);
  bar.value = Math.min(p.step || 0, bar.max);
  const parts = [total ? `step ${p.step || 0} of ${total}` : `step ${p.step || 0}`];
  if (p.epoch) parts.push(`epoch ${Number(p.epoch).toFixed(1)}`);
  if (job && !TERMINAL.has(job.status) && p.eta_seconds !== null && p.eta_seconds !== undefined) {
    parts.push(`about ${duration(p.eta_seconds)} left`);
  }
  if (p.steps_per_second) parts.push(`${Number(p.steps_per_second).toFixed(2)} steps/s`);
  document.getElementById("progress-text").textContent = parts.join(" · ");
}

function fact(term, ...value) {
  return [el("dt", {}, term), el("dd", {}, ...value)];
}

function render() {
  document.getElementById("job-loading").hidden = true;
  document.getElementById("job-body").hidden = false;
  document.getElementById("job-status").replaceChildren(statusBadge(job.status));
  document.getElementById("job-base").replaceChildren(
    el("p", {}, "Base model: ", el("strong", { id: "base-model-name" }, job.base_model), " · ", job.base_model_description),
  );

  const facts = [
    ...fact("Status", job.status, job.queue_position ? ` · position ${job.queue_position} in the queue` : "",
      job.stop_requested && !TERMINAL.has(job.status) ? " · stop requested" : "",
      job.cancel_requested && !TERMINAL.has(job.status) ? " · cancel requested" : ""),
    ...fact("Data version", el("a", { href: `/versions/${job.version_id}` }, job.version_name)),
    ...fact("Mode", job.mode === "auto" ? `auto → ${job.resolved_mode}` : job.mode),
    ...fact("Attempt", `${job.attempt} (restarts allowed: ${job.max_restarts})`),
    ...fact("Created", formatDate(job.created_at)),
  ];
  facts.push(...fact("Compare", el("a", { href: `/compare?jobs=${job.id}` }, "compare this run with others")));
  if (job.started_at) facts.push(...fact("Started", formatDate(job.started_at)));
  if (job.finished_at) facts.push(...fact("Finished", formatDate(job.finished_at)));
  const best = Object.entries(job.best_valid || {}).filter(([k]) => k.startsWith("segm_AP"));
  if (best.length) facts.push(...fact("Best validation", best.map(([k, v]) => `${k} ${formatValue(v)}`).join(" · ")));
  document.getElementById("job-facts").replaceChildren(...facts);
  showProgress(job.progress);
  if (job.status === "queued") {
    document.getElementById("progress-text").textContent = job.queue_position
      ? `Waiting for a worker: position ${job.queue_position} in the queue.`
      : "Waiting for a worker.";
  }

  const outcome = [];
  if (job.status === "succeeded" && job.model_id) {
    outcome.push(el("p", { class: "notice" }, "Finished: ", el("a", { href: `/models/${job.model_id}`, id: "model-link" }, "open the model"),
      " to try it and download it."));
  }
  if (job.error) outcome.push(el("p", { class: "error", role: "alert" }, "Error: ", job.error));
  document.getElementById("job-outcome").replaceChildren(...outcome);

  const active = !TERMINAL.has(job.status);
  document.getElementById("job-actions").hidden = !active;
  document.getElementById("stop-job").disabled = job.stop_requested || job.cancel_requested || job.status === "queued";
  document.getElementById("cancel-job").disabled = job.cancel_requested;

  const { base, fine_tuned: tuned } = job.test;
  const table = baseVsTuned(base && base.summary, tuned && tuned.summary, job.base_model);
  document.getElementById("test-section").hidden = !table;
  if (table) document.getElementById("test-metrics").replaceChildren(table);

  document.getElementById("job-events").replaceChildren(
    ...job.events.map((e) =>
      el("li", { "data-kind": e.kind }, el("span", { class: "kind" }, e.kind), e.message,
        el("span", { class: "muted small" }, ` · attempt ${e.attempt} · ${formatDate(e.created_at)}`)),
    ),
  );
  document.getElementById("job-hp").replaceChildren(
    ...Object.entries(job.hyperparameters).map(([name, r]) =>
      el("tr", {}, el("td", { class: "mono" }, name), el("td", { class: "mono" }, typeof r.value === "string" ? r.value : JSON.stringify(r.value)), el("td", { class: "muted" }, r.reason)),
    ),
  );
}

let refreshAgain = false;

async function refresh() {
  if (refreshing) {
    refreshAgain = true; // news arrived during a refresh: its answer may predate it, so ask once more
    return;
  }
  refreshing = true;
  try {
    job = await api(`/api/v1/jobs/${jobId}`);
    render();
    clearError("job-error");
    if (TERMINAL.has(job.status)) {
      if (source) source.close();
      source = null;
      setLive("ended", `Job ${job.status}.`);
      clearInterval(refreshTimer);
      // Draw the final points (the last validation arrives with the end) and the last log lines.
      await Promise.all([loadHistory(), pollLogs()]);
    }
  } catch (err) {
    showError("job-error", unreachable(err));
  } finally {
    refreshing = false;
  }
  if (refreshAgain) {
    refreshAgain = false;
    await refresh();
  }
}

let refreshSoon = null;
function scheduleRefresh() {
  clearTimeout(refreshSoon);
  refreshSoon = setTimeout(refresh, 300);
}

async function loadHistory() {
  const points = await api(`/api/v1/jobs/${jobId}/metrics`);
  for (const p of points) addPoint(p.name, p.step, p.epoch, p.value);
  for (const chart of Object.values(charts)) chart.draw();
}

let polling = false;
let pollAgain = false;

async function pollLogs() {
  if (polling) {
    pollAgain = true; // two polls at once would both read after the same id and show lines twice
    return;
  }
  polling = true;
  try {
    // Pages of lines oldest first, until caught up: the box shows the newest LOG_LINES of them.
    let added = 0;
    for (let page = 0; page < 50; page += 1) {
      const lines = await api(`/api/v1/jobs/${jobId}/logs?after=${lastLogId}&limit=${LOG_PAGE}`);
      clearError("job-error");
      if (!lines.length) break;
      added += lines.length;
      lastLogId = lines[lines.length - 1].id;
      logLines = logLines.concat(lines.map((l) => `${new Date(l.time).toLocaleTimeString()}  ${l.message}`)).slice(-LOG_LINES);
      if (lines.length < LOG_PAGE) break;
    }
    if (!added) return;
    const box = document.getElementById("job-logs");
    const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    box.textContent = logLines.join("\n");
    if (atEnd) box.scrollTop = box.scrollHeight;
  } catch (err) {
    showError("job-error", unreachable(err));
  } finally {
    polling = false;
  }
  if (pollAgain) {
    pollAgain = false;
    await pollLogs();
  }
}

// fetch rejects with a bare TypeError when the server cannot be reached: say that, and that it goes on.
function unreachable(err) {
  return err instanceof ApiError ? err : "The server is not answering; the page keeps trying.";
}

function follow() {
  source = new EventSource(`/api/v1/jobs/${jobId}/events`);
  setLive("connecting", "Connecting to the live feed…");
  source.addEventListener("open", () => {
    setLive("live", "Live");
    clearError("job-error");
  });
  source.addEventListener("metrics", (e) => {
    const d = JSON.parse(e.data);
    for (const [name, value] of Object.entries(d.metrics)) addPoint(name, d.step, d.epoch, value);
    // Progress snapshots come every few seconds; a metric point is news of a step too, and steps mean any
    // phase before them is over.
    if (d.step > (lastProgress.step || 0) || lastProgress.phase) showProgress({ step: d.step, epoch: d.epoch, phase: null });
  });
  source.addEventListener("progress", (e) => {
    if (job && job.status === "queued") scheduleRefresh(); // it started: fetch the new status
    showProgress(JSON.parse(e.data));
  });
  source.addEventListener("status", (e) => {
    const d = JSON.parse(e.data);
    if (TERMINAL.has(d.status)) {
      source.close();
      source = null;
    }
    scheduleRefresh();
  });
  source.addEventListener("event", scheduleRefresh);
  source.addEventListener("error", () => {
    if (!source) return;
    setLive("reconnecting", "Connection lost: reconnecting…");
    if (source.readyState === EventSource.CLOSED) {
      // EventSource gives up on an HTTP error (a proxy's 502, say) or the 204 after the end. Ask the job:
      // if it is still going, open a new stream (its replay is deduplicated by the charts).
      source = null;
      refresh().then(() => {
        if (job && !TERMINAL.has(job.status) && !source) setTimeout(() => source || follow(), 3000);
      });
    }
  });
}

async function confirmAndPost(verb, question) {
  if (!window.confirm(question)) return;
  clearError("actions-error");
  try {
    job = await api(`/api/v1/jobs/${jobId}/${verb}`, { method: "POST" });
    render();
  } catch (err) {
    showError("actions-error", err);
  }
}

document.getElementById("stop-job").addEventListener("click", () =>
  confirmAndPost("stop", "Stop training now? The best checkpoint so far is kept, evaluated and registered as a model."),
);
document.getElementById("cancel-job").addEventListener("click", () =>
  confirmAndPost("cancel", "Cancel this job? What it trained is discarded and no model is registered."),
);

async function init() {
  try {
    job = await api(`/api/v1/jobs/${jobId}`);
  } catch (err) {
    document.getElementById("job-loading").hidden = true;
    showError("job-error", err);
    return;
  }
  render();
  await Promise.all([loadHistory().catch((err) => showError("job-error", err)), pollLogs()]);
  if (TERMINAL.has(job.status)) {
    setLive("ended", `Job ${job.status}.`);
    return;
  }
  follow();
  // Queue position and log lines change without events of their own: poll them gently.
  refreshTimer = setInterval(() => {
    pollLogs();
    if (job && job.status === "queued") refresh();
  }, 3000);
}

init();
