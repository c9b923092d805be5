// Models list: version name (the Roboflow-style id), base model, classes, and the lift on the test split.

import { api, el, formatDate, showError } from "./api.js";
import { fixed3 } from "./job-format.js";
import { offsetFromUrl, pageQuery, renderPager } from "./pager.js";

function lift(model) {
  const base = model.test.base && model.test.base.summary;
  const tuned = model.test.fine_tuned && model.test.fine_tuned.summary;
  if (!tuned) return "not evaluated";
  return `${base ? fixed3(base.segm_AP50) : "–"} → ${fixed3(tuned.segm_AP50)}`;
}

async function load() {
  try {
    const page = await api(`/api/v1/models?${pageQuery(offsetFromUrl())}`);
    const models = page.items;
    document.getElementById("models-loading").hidden = true;
    document.getElementById("models-empty").hidden = page.total > 0;
    document.getElementById("models-table").hidden = models.length === 0;
    renderPager("models-pager", page, { noun: "models" });
    document.getElementById("models-body").replaceChildren(
      ...models.map((m) =>
        el(
          "tr",
          { "data-model": m.id },
          el("td", {}, el("a", { href: `/models/${m.id}`, class: "mono" }, m.version_name), el("span", { class: "muted small" }, ` · ${m.id.slice(0, 8)}`)),
          el("td", { class: "mono small" }, m.base_model),
          el("td", {}, m.classes.join(", ")),
          el("td", { class: "num" }, lift(m)),
          el("td", {}, formatDate(m.created_at)),
        ),
      ),
    );
  } catch (err) {
    document.getElementById("models-loading").hidden = true;
    showError("models-error", err);
  }
}

load();
