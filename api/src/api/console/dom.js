// Small DOM helpers. Text always goes in as text (textContent / text nodes):
// package errors, requirement lines and results are untrusted, so nothing
// here ever parses a string as HTML.

/**
 * el("td", {className: "muted", text: "—"}) or el("ul", {}, child, child...).
 * Props: `text` (textContent), `className`, `dataset` (object), `on<event>`
 * (listener); anything else is set as an attribute (true -> present, false,
 * null and undefined -> absent).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "className") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`the page has no #${id}`);
  return node;
}

/** The first 6 characters of a requirements hash, as people quote it. */
export function shortHash(hash) {
  return hash ? String(hash).slice(0, 6) : "—";
}

/** Shows `message` in `node` (a status or error line); "" hides it. */
export function say(node, message) {
  node.textContent = message || "";
}

/**
 * Replaces the children of `holder`, keeping the keyboard focus on the
 * control of the same accessible label when the focused one is replaced.
 */
export function replaceKeepingFocus(holder, ...children) {
  const focused = document.activeElement;
  const label = holder.contains(focused) ? focused.getAttribute("aria-label") : null;
  holder.replaceChildren(...children);
  if (!label) return;
  const again = [...holder.querySelectorAll("[aria-label]")]
    .find((node) => node.getAttribute("aria-label") === label);
  again?.focus();
}

/** A table from column titles and rows of cells (nodes or text). */
export function table(caption, columns, rows) {
  return el("table", {},
    el("caption", { className: "visually-hidden", text: caption }),
    el("thead", {}, el("tr", {}, columns.map((title) => el("th", { scope: "col", text: title })))),
    el("tbody", {}, rows));
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 10) return `${ms.toFixed(2)} ms`;  // sub-millisecond work shows as such
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

export function formatTime(value) {
  if (value === null || value === undefined || value === "") return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

/** Resident memory in MB as people read it: "77 MB", "3.4 MB"; "—" when not known. */
export function formatMb(mb) {
  if (mb === null || mb === undefined || !Number.isFinite(Number(mb))) return "—";
  const value = Number(mb);
  return `${value >= 10 ? Math.round(value) : value.toFixed(1)} MB`;
}

/** How long ago `seconds` (a Unix time) was: "just now", "5 min ago", "3 h ago", "2 days ago". */
export function formatAgo(seconds, now = Date.now()) {
  const ago = Math.max(0, Math.round(now / 1000 - Number(seconds)));
  if (!Number.isFinite(ago)) return "—";
  if (ago < 60) return "just now";
  if (ago < 3600) return `${Math.floor(ago / 60)} min ago`;
  if (ago < 86400) return `${Math.floor(ago / 3600)} h ago`;
  const days = Math.floor(ago / 86400);
  return `${days} day${days === 1 ? "" : "s"} ago`;
}

/** The installer's last line that is not a hint: where its reason usually is. */
export function gist(error) {
  const lines = String(error ?? "").split("\n").map((line) => line.trim()).filter(Boolean);
  const reasons = lines.filter((line) => !line.startsWith("hint:"));
  return reasons.at(-1) ?? lines.at(-1) ?? "no error text";
}

/** Calls `fn` once, `ms` after the last of a burst of calls. */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/** Normalized distribution name (PEP 503): "Foo_Bar.baz" -> "foo-bar-baz". */
export function canonicalName(name) {
  return String(name).toLowerCase().replace(/[-_.]+/g, "-");
}

/** The distribution name a requirement line starts with ("" when none). */
export function lineName(line) {
  const match = /^\s*([A-Za-z0-9][A-Za-z0-9._-]*)/.exec(line);
  return match ? match[1] : "";
}
