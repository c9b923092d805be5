// Model page: what it was trained from and with, base vs fine-tuned test metrics per class, download, and
// "try it": send an image with prompts to POST .../predict and draw the returned polygons over it, with the
// equivalent curl command beside the form.

import { api, classColour, copyText, el, formatDate, setText, showError, clearError } from "./api.js";
import { baseVsTuned, fixed3 } from "./job-format.js";

const root = document.getElementById("model");
const modelId = root.dataset.modelId;
const imageInput = document.getElementById("try-image");
const promptsInput = document.getElementById("try-prompts");
const confidenceInput = document.getElementById("try-confidence");
const canvas = document.getElementById("try-canvas");
let model = null;

function fact(term, ...value) {
  return [el("dt", {}, term), el("dd", {}, ...value)];
}

function prompts() {
  return promptsInput.value
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean);
}

// Single-quoted for a POSIX shell: nothing inside is expanded.
function shellQuote(text) {
  return `'${String(text).replaceAll("'", "'\\''")}'`;
}

function curlCommand() {
  const file = imageInput.files && imageInput.files[0] ? imageInput.files[0].name : "photo.jpg";
  const lines = [
    `curl -s -X POST ${shellQuote(`${window.location.origin}/api/v1/models/${modelId}/predict`)}`,
    `  -H "Authorization: Bearer $SAMTUNE_API_KEY"`,
    `  -F image=@${shellQuote(file)}`,
    ...prompts().map((p) => `  -F prompts=${shellQuote(p)}`),
    `  -F confidence=${Number(confidenceInput.value).toFixed(2)}`,
  ];
  return lines.join(" \\\n");
}

function updateCurl() {
  document.getElementById("curl").textContent = curlCommand();
  document.getElementById("try-confidence-value").textContent = Number(confidenceInput.value).toFixed(2);
}

function perClassTable(base, tuned) {
  const names = [...new Set([...Object.keys((base && base.per_class) || {}), ...Object.keys((tuned && tuned.per_class) || {})])];
  if (!names.length) return el("p", { class: "muted" }, "No per-class figures were recorded.");
  const cell = (result, name, key) => {
    const c = result && result.per_class ? result.per_class[name] : null;
    return el("td", { class: "num" }, c ? fixed3(c[key]) : "–");
  };
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      { class: "per-class" },
      el("thead", {}, el("tr", {},
        el("th", { scope: "col" }, "class"),
        el("th", { scope: "col", class: "num" }, "base mask AP"),
        el("th", { scope: "col", class: "num" }, "fine-tuned mask AP"),
        el("th", { scope: "col", class: "num" }, "base mask AP50"),
        el("th", { scope: "col", class: "num" }, "fine-tuned mask AP50"),
      )),
      el("tbody", {}, names.map((name) =>
        el("tr", { "data-class": name }, el("th", { scope: "row" }, name),
          cell(base, name, "segm_AP"), cell(tuned, name, "segm_AP"), cell(base, name, "segm_AP50"), cell(tuned, name, "segm_AP50")),
      )),
    ),
  );
}

function render() {
  document.getElementById("model-loading").hidden = true;
  document.getElementById("model-body").hidden = false;
  setText("model-title", "Model ", model.version_name);
  document.title = `Model ${model.version_name} · samtune`;
  document.getElementById("model-base").replaceChildren(
    el("p", {}, "Fine-tuned from base model ", el("strong", { id: "base-model-name" }, model.base_model), " · ", model.base_model_description),
  );
  // Its lineage, nearest first; the base is a link when it is a model of this workspace.
  document.getElementById("model-lineage").replaceChildren("Lineage: this model",
    ...model.lineage.flatMap((name, i) => [" ← ", i === 0 && model.base_model_id
      ? el("a", { href: `/models/${model.base_model_id}` }, name) : el("span", {}, name)]));
  document.getElementById("model-facts").replaceChildren(
    ...fact("Roboflow-style id", el("code", { id: "roboflow-id" }, model.version_name),
      el("span", { class: "muted small" }, " · model_id for Roboflow's clients; the newest model of this data version answers to it, " +
        "unless it scored below its base and was not promoted")),
    ...fact("Model id", el("code", {}, model.id)),
    ...fact("Data version", el("a", { href: `/versions/${model.version_id}` }, model.version_name)),
    ...fact("Training job", el("a", { href: `/jobs/${model.job_id}`, class: "mono" }, model.job_id.slice(0, 8))),
    ...fact("Mode", model.requested_mode === "auto" ? `auto → ${model.resolved_mode}` : model.resolved_mode),
    ...fact("Classes", model.classes.join(", ")),
    ...fact("Checkpoint sha256", el("code", { class: "small" }, model.checkpoint_sha256)),
    ...fact("Created", formatDate(model.created_at)),
  );
  renderRegression();
  const { base, fine_tuned: tuned } = model.test;
  const summary = baseVsTuned(base && base.summary, tuned && tuned.summary, model.base_model);
  document.getElementById("model-metrics").replaceChildren(summary || el("p", { class: "muted" }, "No test metrics were recorded (the version has no test split?)."));
  document.getElementById("model-classes").replaceChildren(perClassTable(base, tuned));
  document.getElementById("model-hp").replaceChildren(
    ...Object.entries(model.hyperparameters).map(([name, r]) => {
      const value = r && typeof r === "object" && "value" in r ? r.value : r;
      return el("tr", {}, el("td", { class: "mono" }, name), el("td", { class: "mono" }, typeof value === "string" ? value : JSON.stringify(value)),
        el("td", { class: "muted" }, r && r.reason ? r.reason : ""));
    }),
  );
  promptsInput.value = model.classes.join(", ");
  updateCurl();
}

// A model that scored below its base on the test split is not what its version's Roboflow-style id names
// until it is promoted: say so, with both figures, and offer the promotion.
function renderRegression() {
  const box = document.getElementById("model-regression");
  if (!model.regression) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  const { base, fine_tuned: tuned } = model.test;
  const ap = (result) => (result && result.summary ? fixed3(result.summary.segm_AP) : "–");
  const figures = el("p", {},
    el("strong", {}, "This model scored below its base model on the test split: "),
    "mask AP ", el("span", { id: "regression-tuned", class: "mono" }, ap(tuned)),
    ", against ", el("span", { id: "regression-base", class: "mono" }, ap(base)), ` for ${model.base_model}.`);
  if (model.promoted) {
    box.replaceChildren(figures, el("p", { id: "regression-state" },
      `It was promoted on ${formatDate(model.promoted_at)}: `, el("code", {}, model.version_name),
      " names this model (until a newer model of this version that did not regress, or another promotion)."));
  } else {
    const button = el("button", { type: "button", id: "promote" }, "Promote");
    button.addEventListener("click", promote);
    box.replaceChildren(figures, el("p", { id: "regression-state" },
      el("code", {}, model.version_name), " keeps naming the previous model of this data version, and answers 404 if " +
      "there is none. Promote this one to serve it by that name anyway; its own id always works."),
      el("div", { id: "promote-error", hidden: true }), button);
  }
  box.hidden = false;
}

async function promote(event) {
  const button = event.currentTarget;
  button.disabled = true;
  clearError("promote-error");
  try {
    model = await api(`/api/v1/models/${modelId}/promote`, { method: "POST" });
    renderRegression();
  } catch (err) {
    showError("promote-error", err);
    button.disabled = false;
  }
}

async function draw(file, result) {
  const bitmap = await createImageBitmap(file);
  // Small images are drawn enlarged, so that masks and labels stay legible; coordinates stay in image pixels.
  const scale = Math.max(1, Math.ceil(560 / Math.max(bitmap.width, bitmap.height)));
  canvas.width = bitmap.width * scale;
  canvas.height = bitmap.height * scale;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  ctx.scale(scale, scale);
  const line = Math.max(2, Math.round(Math.max(bitmap.width, bitmap.height) / 300)) / scale;
  ctx.lineWidth = line;
  ctx.font = `${Math.max(12 / scale, line * 6)}px system-ui, sans-serif`;
  for (const p of result.predictions) {
    const colour = classColour(p.class_id);
    if (p.points && p.points.length > 2) {
      ctx.beginPath();
      ctx.moveTo(p.points[0].x, p.points[0].y);
      for (const pt of p.points.slice(1)) ctx.lineTo(pt.x, pt.y);
      ctx.closePath();
      ctx.fillStyle = classColour(p.class_id, 0.4);
      ctx.fill();
      ctx.strokeStyle = colour;
      ctx.stroke();
    }
    const x0 = p.x - p.width / 2;
    const y0 = p.y - p.height / 2;
    const label = `${p.class} ${p.confidence.toFixed(2)}`;
    ctx.fillStyle = colour;
    ctx.fillRect(x0, Math.max(0, y0 - line * 7), ctx.measureText(label).width + line * 2, line * 7);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x0 + line, Math.max(line * 6, y0 - line));
  }
  canvas.hidden = false;
  canvas.dataset.masks = String(result.predictions.filter((p) => p.points && p.points.length > 2).length);
}

document.getElementById("try-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError("try-error");
  const file = imageInput.files && imageInput.files[0];
  if (!file) {
    showError("try-error", "Choose an image first.");
    imageInput.focus();
    return;
  }
  const form = new FormData();
  form.append("image", file, file.name);
  for (const p of prompts()) form.append("prompts", p);
  form.append("confidence", String(confidenceInput.value));
  const button = document.getElementById("try-run");
  button.disabled = true;
  document.getElementById("try-summary").textContent = "Segmenting… (the first request loads the model)";
  try {
    // The server keeps recent images' vision embeddings by their hash: the same image asked again with new
    // prompts skips SAM 3's image encoder, and Server-Timing says so.
    let embedding = "";
    const result = await api(`/api/v1/models/${modelId}/predict`, {
      method: "POST",
      body: form,
      onResponse: (response) => {
        const timing = response.headers.get("Server-Timing") || "";
        embedding = (timing.match(/embedding;desc="?(\w+)/) || [])[1] || "";
      },
    });
    await draw(file, result);
    const n = result.predictions.length;
    const summary = document.getElementById("try-summary");
    summary.dataset.embedding = embedding;
    summary.textContent =
      `${n} instance${n === 1 ? "" : "s"} found in ${result.time.toFixed(2)} s (${result.image.width}×${result.image.height} px).` +
      (embedding === "reused" ? " Same image as before: its encoding was reused, only the new prompts ran." : "");
    document.getElementById("try-predictions").replaceChildren(
      ...result.predictions.map((p) => {
        const swatch = el("span", { class: "swatch" });
        swatch.style.background = classColour(p.class_id);
        return el("li", { "data-class": p.class }, swatch, `${p.class} · confidence ${p.confidence.toFixed(2)} · box ${Math.round(p.width)}×${Math.round(p.height)} at (${Math.round(p.x)}, ${Math.round(p.y)})`);
      }),
    );
  } catch (err) {
    document.getElementById("try-summary").textContent = "";
    showError("try-error", err);
  } finally {
    button.disabled = false;
  }
});

for (const input of [imageInput, promptsInput, confidenceInput]) input.addEventListener("input", updateCurl);
imageInput.addEventListener("change", updateCurl);

document.getElementById("copy-curl").addEventListener("click", async () => {
  const ok = await copyText(curlCommand(), document.getElementById("curl"));
  document.getElementById("copy-state").textContent = ok ? "Copied." : "Selected: press Ctrl+C (or ⌘C) to copy.";
});

async function init() {
  try {
    model = await api(`/api/v1/models/${modelId}`);
    render();
  } catch (err) {
    document.getElementById("model-loading").hidden = true;
    document.getElementById("download").hidden = true;
    showError("model-error", err);
  }
}

init();
