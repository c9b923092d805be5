// Train page: choose a ready version and a base model, see the automatic hyperparameters with their
// reasons (POST /api/v1/jobs/preview), override any, start (POST /api/v1/jobs) and go to the job's page.

import { api, apiAll, clearError, el, setText, showError } from "./api.js";

const root = document.getElementById("train");
const form = document.getElementById("train-form");
const versionSelect = document.getElementById("version");
const baseSelect = document.getElementById("base-model");
const modeSelect = document.getElementById("mode");
const hpBody = document.getElementById("hp-body");
const extraName = document.getElementById("extra-name");
const extraValue = document.getElementById("extra-value");
const overridable = JSON.parse(root.dataset.overridable || "[]");

// Derived or chosen elsewhere on the form: shown, not typed into.
const READ_ONLY = new Set(["total_steps"]);

const state = {
  baseModels: [],
  workspaceModels: [], // ready models of this workspace, as bases (asBase)
  baseNote: false, // the note that a linked base model is not available is shown
  overrides: {}, // name -> value the user set
  preview: null,
  seq: 0, // the latest preview request; older answers are dropped
  timer: null,
};

// "12" -> 12, "true" -> true, "[1, 2]" -> [1, 2], "fp32" -> "fp32": what a person types, as the API takes it.
function parseValue(text) {
  const t = text.trim();
  if (t === "") return "";
  try {
    return JSON.parse(t);
  } catch {
    return t;
  }
}

function showValue(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function fieldError(name) {
  return document.getElementById(`hp-${name}-error`);
}

async function loadVersions() {
  const datasets = await apiAll("/api/v1/datasets");
  const lists = await Promise.all(datasets.map((d) => apiAll(`/api/v1/datasets/${d.id}/versions`)));
  return lists.flat().filter((v) => v.status === "ready");
}

function describeVersion(v) {
  const n = (split) => (v.splits[split] ? v.splits[split].images : 0);
  return `${v.name} · ${n("train")} train / ${n("valid")} valid / ${n("test")} test images · ${v.classes.length} classes`;
}

// A ready model of this workspace as a base: the job continues from its weights (named by its id).
function asBase(m) {
  const from = (m.lineage || []).slice(1).join(" ← ") || m.base_model;
  return {
    name: m.id,
    label: `${m.version_name} · model ${m.id.slice(0, 8)}${m.regression ? " (scored below its base)" : ""}`,
    description: `your model ${m.id} of ${m.version_name}, fine-tuned from ${from}: the job continues from its weights`,
    available: true,
    default: false,
  };
}

function showBase() {
  const chosen = [...state.baseModels, ...state.workspaceModels].find((m) => m.name === baseSelect.value);
  const box = document.getElementById("base-description");
  if (!chosen) {
    box.replaceChildren();
    return;
  }
  const others = state.baseModels.filter((m) => !m.available);
  box.replaceChildren(
    el("p", {}, "Fine-tunes ", el("strong", { "data-base-model": chosen.name }, chosen.name), chosen.default ? " (this installation's default)" : "", ": ", chosen.description),
    ...others.map((m) => el("p", { class: "small muted" }, `${m.name} is not available here: ${m.unavailable_reason}`)),
  );
}

function body() {
  return {
    version_id: versionSelect.value,
    base_model: baseSelect.value || null,
    mode: modeSelect.value,
    hyperparameters: { ...state.overrides },
  };
}

function schedulePreview(delay = 250) {
  clearTimeout(state.timer);
  state.timer = setTimeout(runPreview, delay);
}

function errorField(err) {
  const source = err && err.source ? String(err.source) : "";
  return source.startsWith("hyperparameters.") ? source.slice("hyperparameters.".length) : null;
}

// Show an API error next to the field it names (or in `fallback`); returns true when a field took it.
function placeError(err, fallback) {
  const name = errorField(err);
  const box = name ? fieldError(name) : null;
  if (box) {
    showError(box, err);
    const input = document.getElementById(`hp-${name}`);
    if (input) input.setAttribute("aria-invalid", "true");
    return true;
  }
  if (err && err.source === "version_id") {
    showError("version-error", err);
    return true;
  }
  if (err && err.source === "base_model") {
    showError("base-error", err);
    return true;
  }
  showError(fallback, err);
  return false;
}

function clearFieldErrors() {
  for (const box of document.querySelectorAll("[id$='-error']")) {
    // The load error stays; the version note stays until another version is chosen.
    if (box.id === "load-error" || box.id === "version-error") continue;
    if (box.id === "base-error" && state.baseNote) continue; // the link's base note, until another is picked
    clearError(box);
  }
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

async function runPreview() {
  if (!versionSelect.value) return;
  const seq = ++state.seq;
  try {
    const preview = await api("/api/v1/jobs/preview", { method: "POST", json: body() });
    if (seq !== state.seq) return;
    state.preview = preview;
    clearFieldErrors();
    renderPlan(preview);
    document.getElementById("start").disabled = false;
  } catch (err) {
    if (seq !== state.seq) return;
    clearFieldErrors();
    if (state.preview) renderPlan(state.preview);
    placeError(err, "preview-error");
    document.getElementById("start").disabled = true;
    document.getElementById("start-note").textContent = "Fix the highlighted value to start.";
  }
}

function inputFor(name, value) {
  const attrs = { id: `hp-${name}`, name, "aria-describedby": `hp-${name}-error`, "data-hp": name };
  if (typeof value === "boolean") {
    const select = el("select", attrs, el("option", { value: "true" }, "true"), el("option", { value: "false" }, "false"));
    select.value = String(value);
    return select;
  }
  if (typeof value === "number") return el("input", { ...attrs, type: "text", inputmode: "decimal", value: String(value) });
  return el("input", { ...attrs, type: "text", value: showValue(value) });
}

function row(name, resolved, { extra = false } = {}) {
  const overridden = name in state.overrides;
  const shown = overridden ? state.overrides[name] : resolved ? resolved.value : "";
  const readOnly = READ_ONLY.has(name);
  const valueCell = readOnly
    ? el("td", { id: `hp-${name}`, "data-hp": name }, showValue(shown))
    : el("td", {}, inputFor(name, shown), el("div", { id: `hp-${name}-error`, hidden: true }));
  const reason = overridden
    ? el("span", {}, "set by you", el("span", { class: "tag" }, "override"), " ",
        el("button", { type: "button", class: "button-quiet small", "data-reset": name, "aria-label": `Use the automatic value of ${name}` }, extra ? "Remove" : "Use auto value"))
    : el("span", {}, resolved ? resolved.reason : "");
  return el(
    "tr",
    { class: overridden ? "overridden" : "", "data-row": name },
    el("td", {}, el("label", { class: "hp-name", for: readOnly ? undefined : `hp-${name}` }, name)),
    valueCell,
    el("td", { class: "reason" }, reason),
  );
}

function renderPlan(preview) {
  const hp = preview.hyperparameters;
  document.getElementById("mode-reason").textContent = hp.mode
    ? `This run: ${hp.mode.value} (${hp.mode.reason}). Device: ${preview.device}.`
    : "";
  const names = Object.keys(hp).filter((n) => n !== "mode");
  const extras = Object.keys(state.overrides).filter((n) => !(n in hp));
  // The answer may arrive while the user types in another field: keep that field, its text and caret.
  const active = document.activeElement;
  const focused = active && active.dataset && hpBody.contains(active) ? active.dataset.hp : null;
  const typed = focused && "value" in active ? { value: active.value, start: active.selectionStart, end: active.selectionEnd } : null;
  hpBody.replaceChildren(...names.map((n) => row(n, hp[n])), ...extras.map((n) => row(n, null, { extra: true })));
  const again = focused ? document.getElementById(`hp-${focused}`) : null;
  if (again && again.focus) {
    if (typed) again.value = typed.value;
    again.focus();
    if (typed && typed.start !== null && again.setSelectionRange) again.setSelectionRange(typed.start, typed.end);
  }
  const left = overridable.filter((n) => !(n in hp) && !(n in state.overrides));
  const picked = extraName.value; // a choice made while the plan was being checked stays chosen
  extraName.replaceChildren(...left.map((n) => el("option", { value: n }, n)));
  if (left.includes(picked)) extraName.value = picked;
  document.getElementById("reset-all").hidden = Object.keys(state.overrides).length === 0;
  const e = preview.estimate;
  setText("estimate", "Plan: ", preview.base_model, " on ", preview.version_name,
    `, ${preview.resolved_mode} mode on ${preview.device}: ` +
    `${e.steps} steps, about ${Math.max(1, Math.round(e.seconds))} s of training (${e.basis}).`);
  document.getElementById("start-note").textContent = "";
}

function autoValue(name) {
  // The value the plan would use without this override: the preview answered with the override applied,
  // so the automatic value is only known when it is not overridden.
  return state.preview && !(name in state.overrides) && state.preview.hyperparameters[name]
    ? state.preview.hyperparameters[name].value
    : undefined;
}

hpBody.addEventListener("change", (event) => {
  const name = event.target.dataset.hp;
  if (!name) return;
  const value = parseValue(event.target.value);
  if (value === "" || JSON.stringify(value) === JSON.stringify(autoValue(name))) delete state.overrides[name];
  else state.overrides[name] = value;
  schedulePreview(0);
});

hpBody.addEventListener("click", (event) => {
  // The click may land on the button's label (a <bdi>, api.js), not the button itself.
  const button = event.target.closest && event.target.closest("[data-reset]");
  const name = button && button.dataset.reset;
  if (!name) return;
  delete state.overrides[name];
  schedulePreview(0);
});

document.getElementById("reset-all").addEventListener("click", () => {
  state.overrides = {};
  schedulePreview(0);
});

document.getElementById("extra-add").addEventListener("click", () => {
  clearError("extra-error");
  const name = extraName.value;
  if (!name) return;
  const value = parseValue(extraValue.value);
  if (value === "") {
    showError("extra-error", `Type a value for ${name}.`);
    extraValue.focus();
    return;
  }
  state.overrides[name] = value;
  extraValue.value = "";
  schedulePreview(0);
});

for (const select of [versionSelect, baseSelect, modeSelect]) {
  select.addEventListener("change", () => {
    if (select === baseSelect) {
      state.baseNote = false;
      clearError("base-error");
      showBase();
    }
    if (select === versionSelect) clearError("version-error");
    schedulePreview(0);
  });
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = document.getElementById("start");
  clearError("start-error");
  button.disabled = true;
  document.getElementById("start-note").textContent = "Starting…";
  try {
    const job = await api("/api/v1/jobs", { method: "POST", json: body() });
    window.location.assign(`/jobs/${job.id}`);
  } catch (err) {
    clearFieldErrors();
    placeError(err, "start-error");
    button.disabled = false;
    document.getElementById("start-note").textContent = "";
  }
});

async function init() {
  try {
    const [versions, baseModels, models] = await Promise.all([
      loadVersions(), api("/api/v1/base-models"), apiAll("/api/v1/models"),
    ]);
    document.getElementById("train-loading").hidden = true;
    if (versions.length === 0) {
      document.getElementById("train-empty").hidden = false;
      return;
    }
    state.baseModels = baseModels;
    versionSelect.replaceChildren(...versions.map((v) => el("option", { value: v.id }, describeVersion(v))));
    const wanted = root.dataset.versionId;
    if (wanted && versions.some((v) => v.id === wanted)) versionSelect.value = wanted;
    else if (wanted) showError("version-error", `Version ${wanted} is not ready (or not in this workspace); pick another.`);
    state.workspaceModels = models
      .filter((m) => m.status === "ready").map(asBase);
    const catalog = baseModels.map((m) =>
      el("option", { value: m.name, disabled: !m.available }, m.available ? m.name : `${m.name} (not available)`),
    );
    const yours = state.workspaceModels.length
      ? [el("optgroup", { label: "Your models (continue from a fine-tune)" },
          ...state.workspaceModels.map((m) => el("option", { value: m.name }, m.label)))]
      : [];
    baseSelect.replaceChildren(el("optgroup", { label: "Base models" }, ...catalog), ...yours);
    const chosen = baseModels.find((m) => m.default && m.available) || baseModels.find((m) => m.available);
    if (chosen) baseSelect.value = chosen.name;
    const askedBase = root.dataset.baseModel;
    if (askedBase && [...baseModels.filter((m) => m.available), ...state.workspaceModels].some((m) => m.name === askedBase)) {
      baseSelect.value = askedBase;
    } else if (askedBase) {
      state.baseNote = true;
      showError("base-error", `Base model ${askedBase} is not available (or not a ready model of this workspace); pick another.`);
    }
    showBase();
    form.hidden = false;
    await runPreview();
  } catch (err) {
    document.getElementById("train-loading").hidden = true;
    showError("load-error", err);
  }
}

init();
