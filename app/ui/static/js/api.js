// The pages' one way to talk to the REST API: same-origin fetch with the session cookie, the CSRF
// header on unsafe methods, and RFC 9457 problem+json errors turned into ApiError for showing in place.

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

export class ApiError extends Error {
  constructor(status, problem) {
    const detail = (problem && (problem.detail || problem.title)) || `request failed (HTTP ${status})`;
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem || {};
    this.source = this.problem.source || null;
  }
}

function signInAgain() {
  const next = window.location.pathname + window.location.search;
  window.location.assign(`/signin?next=${encodeURIComponent(next)}`);
}

async function problemOf(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }
  const text = await response.text().catch(() => "");
  return text ? { detail: text.slice(0, 500) } : null;
}

// api("/api/v1/datasets", {method: "POST", json: {name}}) -> parsed JSON (or null for 204).
// onResponse(response): to read the answer's headers before its body is parsed.
export async function api(path, { method = "GET", json, body, headers = {}, signal, onResponse } = {}) {
  const h = new Headers(headers);
  h.set("Accept", "application/json");
  if (UNSAFE.has(method.toUpperCase())) h.set("X-CSRF-Token", csrfToken());
  let payload = body;
  if (json !== undefined) {
    h.set("Content-Type", "application/json");
    payload = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers: h, body: payload, credentials: "same-origin", signal });
  if (response.status === 401) {
    signInAgain();
    throw new ApiError(401, await problemOf(response));
  }
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  if (onResponse) onResponse(response);
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

// Upload one file as multipart/form-data with progress (fetch has no upload progress events).
// onProgress(fraction in 0..1, loaded bytes, total bytes). Resolves with the parsed JSON answer.
export function upload(path, file, { field = "file", onProgress, extra = {} } = {}) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const [k, v] of Object.entries(extra)) form.append(k, v);
    form.append(field, file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("X-CSRF-Token", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => {
      if (onProgress && e.lengthComputable) onProgress(e.loaded / e.total, e.loaded, e.total);
    });
    xhr.addEventListener("load", () => {
      let parsed = null;
      try {
        parsed = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        parsed = xhr.responseText ? { detail: xhr.responseText.slice(0, 500) } : null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(parsed);
      else {
        if (xhr.status === 401) signInAgain();
        reject(new ApiError(xhr.status, parsed));
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, { detail: "the connection failed during the upload" })));
    xhr.addEventListener("abort", () => reject(new ApiError(0, { detail: "the upload was cancelled" })));
    xhr.send(form);
  });
}

// Elements whose text cannot hold markup: their strings stay plain text (a <select> is a box of its own, so an
// option's text cannot reorder anything around it).
const PLAIN_TEXT = new Set(["option", "textarea", "title", "script", "style"]);

// Text from the API (dataset, class and key names, file names, errors) inside <bdi>: bidirectional isolation,
// so a name holding U+202E (RIGHT-TO-LEFT OVERRIDE), as in "ok\u202etxt.exe", cannot reorder the text around it
// (issue 20). Static labels pass through here too, which costs nothing: isolating left-to-right text changes
// nothing on screen.
export function bdi(text) {
  const node = document.createElement("bdi");
  node.textContent = String(text);
  return node;
}

// Replace what `target` (an element or its id) shows with `parts`: strings isolated as bdi() does, nodes as they are.
export function setText(target, ...parts) {
  const node = typeof target === "string" ? document.getElementById(target) : target;
  node.replaceChildren(...parts.flat().filter((p) => p !== undefined && p !== null).map((p) => (p instanceof Node ? p : bdi(p))));
  return node;
}

// Small DOM builder: el("a", {href: "/x", class: "button"}, "text", child). Never uses innerHTML, so API
// text (dataset names, error details) cannot inject markup; every string child is isolated (bdi above).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    if (child instanceof Node) node.append(child);
    else if (PLAIN_TEXT.has(tag)) node.append(document.createTextNode(String(child)));
    else node.append(bdi(child));
  }
  return node;
}

// Show an error in place: inside `target` (an element or its id), replacing what was there.
export function showError(target, error) {
  const box = typeof target === "string" ? document.getElementById(target) : target;
  if (!box) return;
  const message = error instanceof Error ? error.message : String(error);
  // The culprit (a file in the zip, a field) is the user's own text: isolated apart from the message.
  const source = error && error.source ? [" (", error.source, ")"] : [];
  box.replaceChildren(el("p", { class: "error", role: "alert" }, message, ...source));
  box.hidden = false;
}

export function clearError(target) {
  const box = typeof target === "string" ? document.getElementById(target) : target;
  if (box) {
    box.replaceChildren();
    box.hidden = true;
  }
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function formatDate(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

// Tableau 10, the same palette app/datasets/preview.py draws with, so a class has one colour everywhere.
export const PALETTE = [
  [78, 121, 167], [242, 142, 43], [225, 87, 89], [118, 183, 178], [89, 161, 79],
  [237, 201, 72], [176, 122, 161], [255, 157, 167], [156, 117, 95], [186, 176, 172],
];

export function classColour(classId, alpha = 1) {
  const [r, g, b] = PALETTE[((classId % PALETTE.length) + PALETTE.length) % PALETTE.length];
  return alpha === 1 ? `rgb(${r}, ${g}, ${b})` : `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

// Copy text with the Clipboard API; falls back to selecting it for the user to copy by hand.
export async function copyText(text, selectTarget) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (selectTarget) {
      const range = document.createRange();
      range.selectNodeContents(selectTarget);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
    return false;
  }
}

// The largest page the API's lists give (app/core/pagination.py MAX_LIMIT).
export const MAX_PAGE = 500;

// Every item of a paginated list ({items, total, limit, offset}), page after page: for the pages that offer a
// whole list to choose from (Train's versions and models, Compare's jobs), not for a table a person pages through.
export async function apiAll(path) {
  const items = [];
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(`${path}${sep}limit=${MAX_PAGE}&offset=${items.length}`);
    items.push(...page.items);
    if (page.items.length === 0 || items.length >= page.total) return items;
  }
}
