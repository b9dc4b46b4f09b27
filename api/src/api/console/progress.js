// One progress bar per change to requirements.txt: "3/4 workers ready on
// 1a2b3c", and every package that failed to install with the installer's
// own words. The first value comes from GET /api/packages/progress; after
// that, `progress` events for that hash move the bar.

import { api, describeDetail } from "./api.js";
import { byId, el, gist, say, shortHash } from "./dom.js";

const MOST_CHANGES_SHOWN = 5;

/** hash -> {hash, card, parts, heardEvent, labelWeight} */
const changes = new Map();

/** How much a label says: the page's own words beat an event's, which beat none. */
export const LABEL = { unknown: 0, event: 1, page: 2 };

/**
 * Shows the change that made `hash` (one card per hash; a later call with a
 * more telling label only renames it).
 */
export function track(hash, label, weight = LABEL.page) {
  if (!hash) return;
  const known = changes.get(hash);
  if (known) {
    if (weight > known.labelWeight) rename(known, label, weight);
    return;
  }
  const change = { hash, heardEvent: false, labelWeight: weight, ...buildCard(hash, label) };
  changes.set(hash, change);
  byId("progress").prepend(change.card);
  dropOldest();
  fetchProgress(change);
}

/**
 * A `progress` event. A change not shown yet that is still under way (the
 * page opened in the middle of it) gets a card of its own.
 */
export function showProgress(progress) {
  if (!progress?.hash) return;
  if (!changes.has(progress.hash) && !progress.done && progress.hash === progress.current_hash) {
    track(progress.hash, "Change in progress", LABEL.unknown);
  }
  const change = changes.get(progress.hash);
  if (!change) return;
  change.heardEvent = true;
  render(change, progress);
}

function rename(change, label, weight) {
  change.labelWeight = weight;
  change.parts.title.textContent = label;
}

/** Reads every unfinished change afresh (after a reconnect or a reset). */
export function refetchUnfinished() {
  for (const change of changes.values()) {
    if (change.card.dataset.done !== "true") fetchProgress(change);
  }
}

async function fetchProgress(change) {
  change.heardEvent = false;
  try {
    const progress = await api.get(`/api/packages/progress?hash=${encodeURIComponent(change.hash)}`);
    // An event that came while this was on its way is newer: keep it.
    if (!change.heardEvent) render(change, progress);
  } catch (error) {
    say(change.parts.status, `Could not read the progress: ${describeDetail(error.detail ?? error.message)}`);
  }
}

function buildCard(hash, label) {
  const id = `change-${hash.slice(0, 12)}`;
  const parts = {
    title: el("h3", { text: label }),
    bar: el("progress", { max: 1, value: 0, "aria-labelledby": `${id}-text` }),
    text: el("p", { id: `${id}-text`, className: "progress-text", dataset: { testid: "progress-text" } }),
    status: el("p", { className: "muted" }),
    failures: el("ul", { className: "failures", dataset: { testid: "progress-failures" } }),
  };
  const card = el("article", { className: "change card", dataset: { testid: "change", hash } },
    parts.title, parts.bar, parts.text, parts.status, parts.failures);
  say(parts.text, `Waiting for workers on ${shortHash(hash)}…`);
  return { card, parts };
}

function render(change, progress) {
  const { bar, text, status, failures } = change.parts;
  const total = Number(progress.total) || 0;
  const ready = Number(progress.ready) || 0;
  bar.max = Math.max(total, 1);
  bar.value = Math.min(ready, bar.max);
  say(text, `${ready}/${total} workers ready on ${shortHash(progress.hash)}`);
  say(status, statusLine(progress));
  change.card.dataset.done = String(Boolean(progress.done));
  change.card.classList.toggle("has-failures", (progress.failed ?? []).length > 0);
  // Rebuilt only when they change: an "Installer output" someone opened stays open.
  const failed = JSON.stringify(progress.failed ?? []);
  if (failures.dataset.shown !== failed) {
    failures.dataset.shown = failed;
    failures.replaceChildren(...groupFailures(progress.failed ?? []).map(failureItem));
  }
}

function statusLine(progress) {
  const parts = [];
  if (progress.installing) parts.push(`${progress.installing} installing`);
  if (progress.current_hash && progress.current_hash !== progress.hash) {
    parts.push(`superseded by ${shortHash(progress.current_hash)}`);
  }
  if (progress.done) parts.push((progress.failed ?? []).length ? "done, with failures" : "done");
  if (!progress.total && !progress.done) parts.push("no worker has reported yet");
  return parts.join(" · ");
}

/** Failures of the same package with the same error, as one entry. */
function groupFailures(failed) {
  const groups = new Map();
  for (const failure of failed) {
    const key = `${failure.package}\n${failure.error}`;
    const group = groups.get(key) ?? { ...failure, workers: [] };
    group.workers.push(failure.host ? `${failure.worker} on ${failure.host}` : failure.worker);
    groups.set(key, group);
  }
  return [...groups.values()];
}

/** The gist of the installer's words, and all of them on demand. */
function failureItem(group) {
  const count = group.workers.length;
  return el("li", { dataset: { testid: "progress-failure" } },
    el("strong", { className: "package", text: group.package }),
    ` failed to install on ${count} worker${count === 1 ? "" : "s"}: `,
    el("span", { className: "error-text", text: gist(group.error) }),
    el("details", {},
      el("summary", { text: "Installer output" }),
      el("pre", { className: "installer-output", text: group.error })),
    el("p", { className: "muted small", text: group.workers.join(", ") }));
}

function dropOldest() {
  const cards = [...changes.values()];
  for (const change of cards.slice(0, Math.max(0, cards.length - MOST_CHANGES_SHOWN))) {
    change.card.remove();
    changes.delete(change.hash);
  }
}
