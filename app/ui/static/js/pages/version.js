import { api, classColour, el, formatDate, setText, showError } from "../api.js";

const versionId = document.getElementById("main").dataset.versionId;
const POLL_MS = 1000;
const DROPPED_LABELS = {
  instances_dropped_by_class_map: "Instances of dropped classes",
  null_images_filtered: "Images without annotations left out",
  instances_vanished_or_too_small: "Instances lost in resizing or too small",
};

function render(v) {
  document.title = `${v.name} · samtune`;
  setText("version-name", "Version ", v.name);
  const back = document.getElementById("back-link");
  back.href = `/datasets/${v.dataset_id}`;
  setText(back, "← Dataset ", v.name.split("/")[0]);
  const badge = document.getElementById("version-status");
  badge.textContent = v.status;
  badge.className = `badge badge-${v.status}`;
  document.getElementById("version-spec").textContent = JSON.stringify(v.spec, null, 2);

  document.getElementById("building").hidden = v.status !== "building";
  document.getElementById("ready").hidden = v.status !== "ready";
  const failed = document.getElementById("failed");
  failed.hidden = v.status !== "failed";
  if (v.status === "failed") {
    setText(failed, "The build failed: ", v.error || "no reason was recorded", ". Change the spec and build a new version.");
  }
  if (v.status === "building") {
    document.getElementById("build-progress").value = v.progress;
    document.getElementById("build-percent").textContent = `${Math.round(v.progress * 100)}%`;
  }
  if (v.status === "ready") {
    document.getElementById("export-link").href = `/api/v1/versions/${v.id}/export`;
    document.getElementById("train-link").href = `/train?version_id=${encodeURIComponent(v.id)}`;
    const rows = ["train", "valid", "test"]
      .filter((s) => v.splits[s])
      .map((s) =>
        el("tr", {}, el("th", { scope: "row" }, s), el("td", { class: "num" }, v.splits[s].images),
          el("td", { class: "num" }, v.splits[s].annotations)),
      );
    const total = Object.values(v.splits).reduce((a, c) => [a[0] + c.images, a[1] + c.annotations], [0, 0]);
    rows.push(el("tr", {}, el("th", { scope: "row" }, "total"), el("td", { class: "num" }, total[0]), el("td", { class: "num" }, total[1])));
    document.getElementById("split-counts").replaceChildren(...rows);
    document.getElementById("dropped").replaceChildren(
      ...Object.entries(v.dropped).map(([k, n]) =>
        el("div", { dataset: { key: k } }, el("dt", {}, DROPPED_LABELS[k] || k.replaceAll("_", " ")), el("dd", {}, n)),
      ),
    );
    document.getElementById("version-classes").replaceChildren(
      ...v.classes.map((name, i) => {
        const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
        swatch.style.background = classColour(i);
        return el("li", {}, swatch, name);
      }),
    );
    document.getElementById("content-hash").textContent = `${v.content_hash} (ready ${formatDate(v.ready_at)})`;
  }
}

async function poll() {
  try {
    const v = await api(`/api/v1/versions/${versionId}`);
    render(v);
    if (v.status === "building") setTimeout(poll, POLL_MS);
  } catch (err) {
    showError("page-error", err);
    // A dropped connection is not the end of the build: keep following it, more slowly.
    if (!err.status || err.status >= 500) setTimeout(poll, POLL_MS * 5);
  }
}

poll();
