import { api, classColour, clearError, el, setText, showError } from "../api.js";
import { paintImage } from "../masks.js";

const datasetId = document.getElementById("main").dataset.datasetId;
const base = `/api/v1/datasets/${datasetId}`;
const form = document.getElementById("version-form");
let classes = [];

// ---- reading the form into a spec ---------------------------------------------------------------

function setPath(target, path, value) {
  const keys = path.split(".");
  let node = target;
  for (const key of keys.slice(0, -1)) node = node[key] ??= {};
  node[keys[keys.length - 1]] = value;
}

function groupEnabled(path) {
  const toggle = form.querySelector(`[data-enable="${path}"]`);
  return !toggle || toggle.checked;
}

function classMap() {
  const mapping = {};
  for (const row of document.querySelectorAll("#class-map-body tr[data-class]")) {
    const name = row.dataset.class;
    const drop = row.querySelector("input[type=checkbox]").checked;
    const rename = row.querySelector("input[type=text]").value.trim();
    if (drop) mapping[name] = null;
    else if (rename && rename !== name) mapping[name] = rename;
  }
  return mapping;
}

function readSpec() {
  const spec = { preprocessing: {}, split: {}, augmentation: {} };
  for (const toggle of form.querySelectorAll("[data-enable]")) {
    if (!toggle.checked) setPath(spec, toggle.dataset.enable, null);
  }
  for (const input of form.querySelectorAll("[data-path]")) {
    const { path, kind } = input.dataset;
    const group = path.split(".").slice(0, -1).join(".");
    if (group && !groupEnabled(group)) continue;
    if (kind === "bool") setPath(spec, path, input.checked);
    else if (kind === "choice") setPath(spec, path, input.value);
    else if (kind === "class_map") setPath(spec, path, classMap());
    else if (input.value.trim() !== "") {
      // An unparseable number is sent as typed, so the API's error names the field.
      const n = Number(input.value);
      setPath(spec, path, Number.isFinite(n) ? n : input.value);
    }
  }
  return spec;
}

// ---- errors in place ----------------------------------------------------------------------------

function clearFieldErrors() {
  for (const p of form.querySelectorAll(".field-error")) {
    p.hidden = true;
    p.textContent = "";
  }
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  clearError("form-error");
}

function fieldFor(path) {
  return form.querySelector(`[data-path="${path}"]`);
}

function showProblem(err) {
  showError("form-error", err);
  const located = [];
  for (const e of (err.problem && err.problem.errors) || []) {
    const loc = e.loc.filter((p) => p !== "body");
    // The deepest field the location names (a model-level error names its group, e.g. split).
    for (let n = loc.length; n > 0; n -= 1) {
      const input = fieldFor(loc.slice(0, n).join("."));
      if (input) {
        located.push([input, e.msg]);
        break;
      }
    }
  }
  if (err.source && fieldFor(err.source)) located.push([fieldFor(err.source), err.message]);
  for (const [input, message] of located) {
    input.setAttribute("aria-invalid", "true");
    const box = document.getElementById(`${input.id}-err`);
    if (box) {
      box.textContent = message;
      box.hidden = false;
    }
  }
  if (located.length) located[0][0].focus();
}

// ---- dependent fields ---------------------------------------------------------------------------

function syncEnabled() {
  for (const toggle of form.querySelectorAll("[data-enable]")) {
    for (const input of form.querySelectorAll(`[data-path^="${toggle.dataset.enable}."]`)) {
      input.disabled = !toggle.checked;
    }
  }
  const ratio = fieldFor("split.mode").value === "ratio";
  for (const key of ["train", "valid", "test", "seed"]) fieldFor(`split.${key}`).disabled = !ratio;
}
form.addEventListener("change", syncEnabled);

function resetForm() {
  for (const input of form.querySelectorAll("[data-path][data-default]")) {
    if (input.dataset.kind === "bool") input.checked = input.dataset.default === "true";
    else input.value = input.dataset.default;
  }
  for (const toggle of form.querySelectorAll("[data-enable]")) toggle.checked = false;
  for (const row of document.querySelectorAll("#class-map-body tr[data-class]")) {
    row.querySelector("input[type=text]").value = "";
    row.querySelector("input[type=checkbox]").checked = false;
  }
  clearFieldErrors();
  syncEnabled();
}
document.getElementById("reset-button").addEventListener("click", resetForm);

// ---- preview and build --------------------------------------------------------------------------

function renderPreview(preview) {
  const grid = document.getElementById("preview-grid");
  document.getElementById("preview-legend").replaceChildren(
    ...preview.classes.map((name, i) => {
      const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
      swatch.style.background = classColour(i);
      return el("li", {}, swatch, name);
    }),
  );
  grid.replaceChildren(
    ...preview.images.map((im) => {
      const canvas = el("canvas", {
        width: 180,
        height: 180,
        role: "img",
        "aria-label": `${im.augmented ? "augmented copy" : "original"} ${im.file_name}: ${im.instances.length} instances`,
      });
      paintImage(canvas, im.image, im.instances, im.width, im.height, { maxSide: 384 });
      return el(
        "li",
        { dataset: { augmented: String(im.augmented) } },
        el(
          "figure",
          {},
          canvas,
          el("figcaption", {}, im.augmented ? "augmented copy" : "original, resized", el("br"),
            el("span", { class: "muted" }, `${im.width}×${im.height} · ${im.instances.length} inst.`)),
        ),
      );
    }),
  );
  const copies = preview.images.filter((im) => im.augmented).length;
  document.getElementById("preview-status").textContent = preview.augmentation_enabled
    ? `${preview.images.length - copies} training images and ${copies} augmented copies, as the build would write them.`
    : `${preview.images.length} training images as the build would write them. Augmentation is off: ` +
      "set outputs per training image above 1 to add random copies.";
}

document.getElementById("preview-button").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  clearFieldErrors();
  button.disabled = true;
  document.getElementById("preview-status").textContent = "Making the preview…";
  try {
    renderPreview(await api(`${base}/versions/preview?images=3`, { method: "POST", json: readSpec() }));
  } catch (err) {
    document.getElementById("preview-status").textContent = "No preview: fix the problem above.";
    showProblem(err);
  } finally {
    button.disabled = false;
  }
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = document.getElementById("build-button");
  clearFieldErrors();
  button.disabled = true;
  try {
    const version = await api(`${base}/versions`, { method: "POST", json: readSpec() });
    window.location.assign(`/versions/${version.id}`);
  } catch (err) {
    showProblem(err);
    button.disabled = false;
  }
});

// ---- start: the dataset's name and classes ------------------------------------------------------

(async () => {
  syncEnabled();
  try {
    const dataset = await api(base);
    classes = dataset.classes;
    setText("dataset-name", dataset.name);
    document.title = `New version of ${dataset.name} · samtune`;
    const body = document.getElementById("class-map-body");
    if (!classes.length) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: "3", class: "muted" }, "No classes yet: upload annotated images first.")));
      return;
    }
    body.replaceChildren(
      ...classes.map((c, i) => {
        const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
        swatch.style.background = classColour(c.class_id);
        return el(
          "tr",
          { dataset: { class: c.name } },
          el("td", {}, swatch, c.name),
          el("td", {}, el("input", { type: "text", id: `rename-${i}`, placeholder: c.name, "aria-label": `New name for ${c.name}` })),
          el("td", {}, el("input", { type: "checkbox", id: `drop-${i}`, "aria-label": `Drop ${c.name}` })),
        );
      }),
    );
  } catch (err) {
    showError("page-error", err);
  }
})();
