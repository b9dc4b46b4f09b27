// The Packages panel: each requirement line with its locked version and
// what every host installed, the add form, a remove button per line, and
// the outdated list with its upgrade buttons. Every write starts a progress
// bar for the hash it returns.

import { api, errorsByField, explain } from "./api.js";
import {
  byId, canonicalName, el, lineName, replaceKeepingFocus, say, shortHash, table,
} from "./dom.js";
import { track } from "./progress.js";
import { applyReadOnly, release } from "./readonly.js";

const ADD_FIELDS = { package: "package-name", version: "package-version" };

export function setUpPackages() {
  byId("add-form").addEventListener("submit", addPackage);
  byId("outdated-check").addEventListener("click", checkOutdated);
  byId("upgrade-all").addEventListener("click", (event) => upgrade(null, event.currentTarget));
}

export async function refreshPackages() {
  const status = byId("packages-status");
  try {
    renderPackages(await api.get("/api/packages"));
    if (status.dataset.kind === "load-error") say(status, "");
  } catch (error) {
    status.dataset.kind = "load-error";
    say(status, `Could not load the packages: ${explain(error)}`);
  }
}

// --- the list ---------------------------------------------------------------

/** "name==version" lines -> Map(canonical name -> version). */
function pinsByName(pins) {
  const versions = new Map();
  for (const pin of pins ?? []) {
    const [name, version] = String(pin).split("==");
    versions.set(canonicalName(name), version ?? "");
  }
  return versions;
}

function renderPackages(listing) {
  const holder = byId("packages-table");
  const lines = listing.requirements ?? [];
  if (!lines.length) {
    holder.replaceChildren(el("p", { className: "empty", text: "No packages yet" }));
    return;
  }
  const locked = pinsByName(listing.lock);
  const hosts = (listing.hosts ?? []).map((host) => ({
    ...host,
    versions: new Map((host.installed ?? []).map((d) => [canonicalName(d.name), d.version])),
  }));
  const columns = ["Requirement", "Locked", ...hosts.map((h) => `On ${h.host}`), ""];
  const rows = lines.map((line) => packageRow(line, locked, hosts));
  replaceKeepingFocus(holder, table("Requirements, locked and installed versions", columns, rows));
  applyReadOnly(holder);
}

function packageRow(line, locked, hosts) {
  const name = lineName(line);
  const key = canonicalName(name);
  const installedCells = hosts.map((host) => {
    const version = host.versions.get(key);
    const differs = version !== undefined && locked.has(key) && version !== locked.get(key);
    return el("td", { className: differs ? "warning" : "", text: version ?? "not installed" });
  });
  return el("tr", { dataset: { testid: "package-row", name: key } },
    el("td", {}, el("code", { text: line })),
    el("td", { text: locked.get(key) ?? "—" }),
    installedCells,
    el("td", {}, name ? el("button", {
      type: "button", className: "secondary small", "aria-label": `Remove ${name}`,
      "data-write": true,
      text: "Remove", onclick: (event) => removePackage(name, event.currentTarget),
    }) : null));
}

// --- writes -------------------------------------------------------------------

function clearAddErrors() {
  for (const id of Object.values(ADD_FIELDS)) {
    byId(id).removeAttribute("aria-invalid");
    say(byId(`${id}-error`), "");
  }
}

/** A refused install names the text it refused: the version's, or the name's. */
function showAddErrors(error, version = "") {
  const fieldOfLine = (line) => (version && line.text === version ? "version" : "package");
  const found = errorsByField(error, Object.keys(ADD_FIELDS), "package", fieldOfLine);
  for (const [field, messages] of found) {
    const id = ADD_FIELDS[field];
    byId(id).setAttribute("aria-invalid", "true");
    say(byId(`${id}-error`), messages.join("\n"));
  }
}

async function addPackage(event) {
  event.preventDefault();
  clearAddErrors();
  const name = byId("package-name").value.trim();
  const version = byId("package-version").value.trim();
  if (!name) {
    showAddErrors(new Error("Enter a package name."));
    return;
  }
  const body = version ? { package: name, version } : { package: name };
  const label = version ? `Add ${name} ${version}` : `Add ${name}`;
  await write(byId("add-button"), `Resolving ${name}…`, label, async () => {
    const answer = await api.post("/api/packages/install", body);
    event.target.reset();
    return answer;
  }, (error) => {
    // The read-only token's refusal is no fault of the fields: the status line says it.
    if (!error.readOnly) showAddErrors(error, version);
  });
}

async function removePackage(name, button) {
  await write(button, `Removing ${name}…`, `Remove ${name}`,
    () => api.delete(`/api/packages/${encodeURIComponent(name)}`));
}

async function upgrade(name, button) {
  const body = name ? { package: name } : {};
  await write(button, name ? `Upgrading ${name}…` : "Upgrading every package…",
    name ? `Upgrade ${name}` : "Upgrade all", () => api.post("/api/packages/upgrade", body));
  await checkOutdated();
}

/**
 * Runs one write with `button` disabled and a status line; a new hash starts
 * a progress bar. Errors go to `onError` (a form's fields) or the status line.
 */
async function write(button, doing, label, call, onError = null) {
  const status = byId("packages-status");
  delete status.dataset.kind;
  button.disabled = true;
  say(status, doing);
  try {
    const answer = await call();
    if (answer.changed === false) {
      say(status, `${label}: nothing to change.`);
    } else {
      say(status, `${label}: saved as ${shortHash(answer.hash)}; the workers are being replaced.`);
      track(answer.hash, label);
    }
    await refreshPackages();
  } catch (error) {
    say(status, `${label} failed: ${explain(error)}`);
    if (onError) onError(error);
  } finally {
    release(button);
  }
}

// --- outdated -------------------------------------------------------------------

async function checkOutdated() {
  const status = byId("outdated-status");
  const holder = byId("outdated-table");
  say(status, "Asking the package index…");
  try {
    const rows = await api.get("/api/packages/outdated");
    say(status, "");
    holder.replaceChildren(rows.length ? outdatedTable(rows)
      : el("p", { className: "empty", text: "No packages yet" }));
    applyReadOnly(holder);
  } catch (error) {
    say(status, `Could not check for updates: ${explain(error)}`);
  }
}

function outdatedTable(rows) {
  const columns = ["Requirement", "Locked", "Newest allowed", "Newest", ""];
  return table("Newer versions", columns, rows.map((row) => {
    const canUpgrade = row.newest_allowed && row.newest_allowed !== row.locked;
    return el("tr", { dataset: { testid: "outdated-row" } },
      el("td", {}, el("code", { text: row.line })),
      el("td", { text: row.locked ?? "—" }),
      el("td", { text: row.newest_allowed ?? "—" }),
      el("td", { text: row.newest ?? "—" }),
      el("td", {}, canUpgrade ? el("button", {
        type: "button", className: "secondary small", "aria-label": `Upgrade ${row.name}`,
        "data-write": true,
        text: "Upgrade", onclick: (event) => upgrade(row.name, event.currentTarget),
      }) : el("span", { className: "muted", text: "up to date" })));
  }));
}
