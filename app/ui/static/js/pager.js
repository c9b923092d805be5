// Paging for the list pages. The page's offset lives in the address (?offset=N, or a name of the list's own when a
// page holds two lists), so Previous and Next are plain links: a reload stays on the page, Back goes back a page.

import { el } from "./api.js";

export const PAGE_SIZE = 20;

export function offsetFromUrl(param = "offset") {
  const value = Number.parseInt(new URLSearchParams(window.location.search).get(param) || "0", 10);
  return Number.isFinite(value) && value > 0 ? value : 0;
}

// "limit=20&offset=N" for the API, with the list's own filters (`extra`) beside them.
export function pageQuery(offset, extra = {}) {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(offset) });
  for (const [key, value] of Object.entries(extra)) if (value) params.set(key, value);
  return params;
}

function linkTo(param, offset) {
  const url = new URL(window.location.href);
  if (offset > 0) url.searchParams.set(param, String(offset));
  else url.searchParams.delete(param);
  return url.pathname + url.search;
}

// Fill `target` (an element or its id) with "Showing a–b of N <noun>" and Previous/Next links for `page`, an API
// answer {items, total, limit, offset}. Hidden when everything fits on the first page.
export function renderPager(target, page, { param = "offset", noun = "items" } = {}) {
  const nav = typeof target === "string" ? document.getElementById(target) : target;
  const { items, total, limit, offset } = page;
  nav.hidden = total <= limit && offset === 0;
  if (nav.hidden) {
    nav.replaceChildren();
    return;
  }
  const first = items.length ? offset + 1 : 0;
  const last = offset + items.length;
  const shown = items.length ? `Showing ${first}–${last} of ${total} ${noun}` : `Nothing here: ${total} ${noun} in all`;
  // Past the end (rows deleted since the link was made): Previous leads to the last page that has rows.
  const lastStart = Math.max(0, Math.floor((total - 1) / limit) * limit);
  const previous = offset > 0 ? el("a", { href: linkTo(param, Math.min(Math.max(0, offset - limit), lastStart)), rel: "prev", class: "button button-quiet" }, "Previous") : null;
  const next = last < total ? el("a", { href: linkTo(param, offset + limit), rel: "next", class: "button button-quiet" }, "Next") : null;
  nav.replaceChildren(el("span", { class: "muted small", "aria-live": "polite" }, shown), previous, next);
}
