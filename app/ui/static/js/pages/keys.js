import { api, clearError, copyText, el, formatDate, showError } from "../api.js";
import { offsetFromUrl, pageQuery, renderPager } from "../pager.js";

const currentPrefix = document.getElementById("main").dataset.currentPrefix;
const body = document.getElementById("keys-body");

function revokeButton(key) {
  const mine = key.prefix === currentPrefix;
  const button = el("button", { type: "button", class: "button-danger" }, "Revoke");
  let armed = false;
  let timer = null;
  // Two steps instead of a confirm() dialog: the first click says what will happen, the second does it.
  button.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      button.textContent = mine ? "Revoke and sign out?" : "Confirm revoke";
      timer = setTimeout(() => {
        armed = false;
        button.textContent = "Revoke";
      }, 6000);
      return;
    }
    clearTimeout(timer);
    button.disabled = true;
    try {
      await api(`/api/v1/keys/${key.id}`, { method: "DELETE" });
      if (mine) {
        window.location.assign("/signin");
        return;
      }
      await load();
    } catch (err) {
      showError("list-error", err);
      button.disabled = false;
    }
  });
  return button;
}

async function load() {
  try {
    const page = await api(`/api/v1/keys?${pageQuery(offsetFromUrl())}`);
    const keys = page.items;
    renderPager("keys-pager", page, { noun: "keys" });
    body.replaceChildren(
      ...keys.map((k) =>
        el(
          "tr",
          { dataset: { keyId: k.id } },
          el("td", {}, k.name || el("span", { class: "muted" }, "(no label)")),
          el("td", {}, el("code", {}, `${k.prefix}…`), k.prefix === currentPrefix ? el("span", { class: "small muted" }, " this session") : null),
          el("td", {}, formatDate(k.created_at)),
          el("td", {}, k.last_used_at ? formatDate(k.last_used_at) : el("span", { class: "muted" }, "never")),
          el("td", {}, k.revoked_at
            ? el("span", { class: "badge badge-failed" }, `revoked ${formatDate(k.revoked_at)}`)
            : el("span", { class: "badge badge-ready" }, "active")),
          el("td", {}, k.revoked_at ? "" : revokeButton(k)),
        ),
      ),
    );
  } catch (err) {
    showError("list-error", err);
  }
}

document.getElementById("create-key").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("key-name");
  const button = event.target.querySelector("button");
  clearError("create-error");
  button.disabled = true;
  try {
    const created = await api("/api/v1/keys", { method: "POST", json: { name: input.value.trim() } });
    document.getElementById("new-key-value").textContent = created.key;
    document.getElementById("copy-state").textContent = "";
    document.getElementById("new-key").hidden = false;
    input.value = "";
    await load();
    document.getElementById("copy-key").focus();
  } catch (err) {
    showError("create-error", err);
  } finally {
    button.disabled = false;
  }
});

document.getElementById("copy-key").addEventListener("click", async () => {
  const value = document.getElementById("new-key-value");
  const copied = await copyText(value.textContent, value);
  document.getElementById("copy-state").textContent = copied ? "Copied." : "Selected: press Ctrl+C to copy.";
});

load();
