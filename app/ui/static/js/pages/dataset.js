import { api, bdi, classColour, clearError, el, formatBytes, formatDate, setText, showError, upload } from "../api.js";
import { paintImage } from "../masks.js";
import { offsetFromUrl, pageQuery, renderPager } from "../pager.js";

const datasetId = document.getElementById("main").dataset.datasetId;
const base = `/api/v1/datasets/${datasetId}`;
const PAGE = 24;
const state = { dataset: null, offset: 0, total: 0, charts: {} };

// ---- summary -------------------------------------------------------------------------------------

async function loadDataset() {
  const d = await api(base);
  state.dataset = d;
  document.title = `${d.name} · samtune`;
  setText("dataset-name", d.name);
  const splits = Object.entries(d.splits)
    .map(([s, c]) => `${s} ${c.images}`)
    .join(", ");
  document.getElementById("dataset-summary").textContent =
    `${d.image_count} images (${splits || "none yet"}), ${d.annotation_count} annotations, ` +
    `${d.classes.length} classes`;
  const select = document.getElementById("filter-class");
  const chosen = select.value;
  select.replaceChildren(
    el("option", { value: "" }, "All classes"),
    ...d.classes.map((c) => el("option", { value: c.name, selected: c.name === chosen }, c.name)),
  );
  document.getElementById("legend").replaceChildren(
    ...d.classes.map((c) => {
      const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
      swatch.style.background = classColour(c.class_id);
      return el("li", {}, swatch, c.name);
    }),
  );
  return d;
}

// ---- health --------------------------------------------------------------------------------------

function figure(label, value) {
  return el("div", {}, el("dt", {}, label), el("dd", {}, value));
}

function range(stats, unit = "") {
  if (!stats) return "–";
  return stats.min === stats.max ? `${stats.min}${unit}` : `${stats.min}–${stats.max}${unit} (median ${stats.median})`;
}

function barChart(id, labels, values, colours, label) {
  if (state.charts[id]) state.charts[id].destroy();
  if (!window.Chart) return;
  state.charts[id] = new window.Chart(document.getElementById(id), {
    type: "bar",
    data: { labels, datasets: [{ label, data: values, backgroundColor: colours }] },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      plugins: { legend: { display: false } },
      scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
    },
  });
}

async function loadHealth() {
  try {
    const h = await api(`${base}/health`);
    const images = Object.values(h.splits).reduce((n, s) => n + s.images, 0);
    document.getElementById("health-empty").hidden = images > 0;
    document.getElementById("health").hidden = images === 0;
    if (!images) return;
    const without = Object.values(h.images_without_annotations).reduce((n, v) => n + v, 0);
    const instances = h.classes.reduce((n, c) => n + c.instances, 0);
    document.getElementById("health-figures").replaceChildren(
      figure("Images", images),
      figure("Instances", instances),
      figure("Classes", h.classes.length),
      figure("Images without annotations", without),
      figure("Width (px)", range(h.image_width)),
      figure("Height (px)", range(h.image_height)),
      figure("Instances per image", h.instances_per_image ? `${h.instances_per_image.mean.toFixed(1)} mean` : "–"),
      figure(`Tiny at 1008 px (< ${h.tiny_threshold_px} px)`, h.tiny_at_1008),
    );
    document.getElementById("health-warnings").replaceChildren(
      ...h.warnings.map((w) => el("li", { class: "warning" }, w)),
    );
    barChart(
      "class-chart",
      h.classes.map((c) => c.name),
      h.classes.map((c) => c.instances),
      h.classes.map((c) => classColour(c.class_id)),
      "instances",
    );
    const hist = h.instances_per_image_histogram;
    barChart("count-chart", Object.keys(hist), Object.values(hist), classColour(0, 0.8), "images");
    document.getElementById("class-table").replaceChildren(
      ...h.classes.map((c) => {
        const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
        swatch.style.background = classColour(c.class_id);
        return el(
          "tr",
          {},
          el("td", {}, swatch, c.name),
          el("td", { class: "num" }, c.instances),
          el("td", { class: "num" }, c.images),
        );
      }),
    );
  } catch (err) {
    showError("health-error", err);
  }
}

// ---- versions ------------------------------------------------------------------------------------

async function loadVersions() {
  try {
    const page = await api(`${base}/versions?${pageQuery(offsetFromUrl("versions_offset"))}`);
    const versions = page.items;
    document.getElementById("versions-empty").hidden = page.total > 0;
    document.getElementById("versions-table").hidden = versions.length === 0;
    renderPager("versions-pager", page, { param: "versions_offset", noun: "versions" });
    const count = (v, s) => (v.splits[s] ? v.splits[s].images : "–");
    document.getElementById("versions-body").replaceChildren(
      ...versions.map((v) =>
        el(
          "tr",
          {},
          el("td", {}, el("a", { href: `/versions/${v.id}` }, v.name)),
          el("td", {}, el("span", { class: `badge badge-${v.status}` }, v.status)),
          el("td", { class: "num" }, count(v, "train")),
          el("td", { class: "num" }, count(v, "valid")),
          el("td", { class: "num" }, count(v, "test")),
          el("td", {}, formatDate(v.created_at)),
        ),
      ),
    );
    // A build in progress: look again until it is done, so its status does not go stale here.
    if (versions.some((v) => v.status === "building")) setTimeout(loadVersions, 2000);
  } catch (err) {
    showError("versions-error", err);
  }
}

// ---- image grid ----------------------------------------------------------------------------------

function tile(image) {
  const canvas = el("canvas", {
    width: 180,
    height: 180,
    role: "img",
    "aria-label": `${image.file_name}: ${image.annotation_count} instances${image.classes.length ? ` (${image.classes.join(", ")})` : ""}`,
  });
  const caption = el(
    "figcaption",
    {},
    el("span", {}, image.file_name),
    el("br"),
    el("span", { class: "muted" }, `${image.split} · ${image.width}×${image.height} · ${image.annotation_count} inst.`),
  );
  const item = el("li", { dataset: { imageId: image.id, split: image.split } }, el("figure", {}, canvas, caption));
  api(`${base}/images/${image.id}`)
    .then((detail) =>
      paintImage(canvas, `${base}/images/${image.id}/file`, detail.annotations, image.width, image.height),
    )
    .catch((err) => {
      caption.append(el("span", { class: "error" }, err.message));
    });
  return item;
}

async function loadImages() {
  const split = document.getElementById("filter-split").value;
  const cls = document.getElementById("filter-class").value;
  const params = new URLSearchParams({ limit: String(PAGE), offset: String(state.offset) });
  if (split) params.set("split", split);
  if (cls) params.set("class", cls);
  clearError("images-error");
  try {
    const page = await api(`${base}/images?${params}`);
    state.total = page.total;
    const grid = document.getElementById("image-grid");
    grid.replaceChildren(...page.items.map(tile));
    const empty = document.getElementById("images-empty");
    empty.hidden = page.total > 0;
    if (!page.total) {
      empty.replaceChildren(
        el(
          "p",
          {},
          split || cls
            ? "No image matches these filters. Choose another split or class, or All."
            : "No images yet. Drop a zip in the upload box above; its images appear here with their masks.",
        ),
      );
    }
    const first = page.total ? state.offset + 1 : 0;
    const last = state.offset + page.items.length;
    document.getElementById("images-count").textContent = `${first}–${last} of ${page.total} images`;
    document.getElementById("pager").hidden = page.total <= PAGE;
    document.getElementById("prev-page").disabled = state.offset === 0;
    document.getElementById("next-page").disabled = last >= page.total;
  } catch (err) {
    showError("images-error", err);
  }
}

for (const id of ["filter-split", "filter-class"]) {
  document.getElementById(id).addEventListener("change", () => {
    state.offset = 0;
    loadImages();
  });
}
document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
document.getElementById("prev-page").addEventListener("click", () => {
  state.offset = Math.max(0, state.offset - PAGE);
  loadImages();
});
document.getElementById("next-page").addEventListener("click", () => {
  state.offset += PAGE;
  loadImages();
});

// ---- uploads -------------------------------------------------------------------------------------

function describeResult(r) {
  const added = Object.entries(r.added)
    .map(([s, c]) => `${s}: ${c.images} images, ${c.annotations} annotations`)
    .join("; ");
  const parts = [`Added (${r.layout}) ${added || "nothing new"}.`];
  if (r.duplicates_skipped) parts.push(`${r.duplicates_skipped} duplicates skipped.`);
  const out = [parts.join(" ")];
  // Class names are the upload's own text: each isolated, apart from the sentence around them.
  if (r.classes_added.length) out.push(" New classes: ", ...r.classes_added.flatMap((c, i) => (i ? [", ", bdi(c)] : [bdi(c)])), ".");
  return out;
}

async function uploadOne(file) {
  const bar = el("progress", { max: "1", value: "0", "aria-label": `Upload of ${file.name}` });
  const status = el("span", { class: "upload-state" }, "Waiting…");
  const errorBox = el("div", { hidden: true });
  const item = el(
    "li",
    { dataset: { file: file.name } },
    el("div", { class: "upload-head" }, el("span", { class: "upload-name" }, file.name), el("span", { class: "muted small" }, formatBytes(file.size))),
    bar,
    status,
    errorBox,
  );
  document.getElementById("uploads").prepend(item);
  status.textContent = "Uploading…";
  try {
    const result = await upload(`${base}/uploads`, file, {
      onProgress: (fraction) => {
        bar.value = fraction;
        status.textContent = fraction < 1 ? `Uploading… ${Math.round(fraction * 100)}%` : "Checking the zip…";
      },
    });
    bar.value = 1;
    status.replaceChildren(...describeResult(result));
    status.classList.add("done");
    item.dataset.state = "done";
    if (result.warnings.length) {
      item.append(el("ul", { class: "list-plain" }, ...result.warnings.map((w) => el("li", { class: "warning" }, w))));
    }
    return true;
  } catch (err) {
    status.textContent = "Rejected: nothing from this file was added.";
    item.dataset.state = "error";
    showError(errorBox, err);
    return false;
  }
}

async function uploadAll(files) {
  const zips = Array.from(files);
  if (!zips.length) return;
  // One at a time: each upload is validated and merged in one transaction; in parallel they would
  // only compete for the same disk and database.
  let anyAdded = false;
  for (const file of zips) anyAdded = (await uploadOne(file)) || anyAdded;
  if (anyAdded) {
    state.offset = 0;
    await loadDataset();
    await Promise.all([loadHealth(), loadImages()]);
  }
}

const dropzone = document.getElementById("dropzone");
const input = document.getElementById("file-input");
input.addEventListener("change", () => {
  const files = Array.from(input.files);
  input.value = "";
  uploadAll(files);
});
for (const type of ["dragenter", "dragover"]) {
  dropzone.addEventListener(type, (e) => {
    e.preventDefault();
    dropzone.classList.add("dragover");
  });
}
for (const type of ["dragleave", "dragend"]) {
  dropzone.addEventListener(type, () => dropzone.classList.remove("dragover"));
}
dropzone.addEventListener("drop", (e) => {
  e.preventDefault();
  dropzone.classList.remove("dragover");
  uploadAll(e.dataTransfer.files);
});

// ---- start ---------------------------------------------------------------------------------------

(async () => {
  try {
    await loadDataset();
  } catch (err) {
    showError("page-error", err);
    return;
  }
  await Promise.all([loadHealth(), loadVersions(), loadImages()]);
})();
