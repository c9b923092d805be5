import { api, clearError, el, formatDate, showError } from "../api.js";
import { offsetFromUrl, pageQuery, renderPager } from "../pager.js";

const body = document.getElementById("datasets-body");

async function load() {
  try {
    const page = await api(`/api/v1/datasets?${pageQuery(offsetFromUrl())}`);
    const datasets = page.items;
    document.getElementById("datasets-loading").hidden = true;
    document.getElementById("datasets-empty").hidden = page.total > 0;
    document.getElementById("datasets-table").hidden = datasets.length === 0;
    renderPager("datasets-pager", page, { noun: "datasets" });
    body.replaceChildren(
      ...datasets.map((d) =>
        el(
          "tr",
          {},
          el("td", {}, el("a", { href: `/datasets/${d.id}` }, d.name)),
          el("td", { class: "num" }, d.image_count),
          el("td", { class: "num" }, d.annotation_count),
          el("td", {}, d.classes.map((c) => c.name).join(", ") || el("span", { class: "muted" }, "none yet")),
          el("td", {}, formatDate(d.created_at)),
        ),
      ),
    );
  } catch (err) {
    document.getElementById("datasets-loading").hidden = true;
    showError("list-error", err);
  }
}

document.getElementById("create-dataset").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("dataset-name");
  const button = event.target.querySelector("button");
  clearError("create-error");
  input.removeAttribute("aria-invalid");
  if (!input.value.trim()) {
    input.setAttribute("aria-invalid", "true");
    showError("create-error", "Give the dataset a name.");
    input.focus();
    return;
  }
  button.disabled = true;
  try {
    const created = await api("/api/v1/datasets", { method: "POST", json: { name: input.value } });
    window.location.assign(`/datasets/${created.id}`);
  } catch (err) {
    input.setAttribute("aria-invalid", "true");
    showError("create-error", err);
    button.disabled = false;
    input.focus();
  }
});

load();
