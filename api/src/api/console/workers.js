// The Workers panel: every live worker, grouped by host then pool, with its
// status, requirements hash, what its last install did and its resident
// memory. Memory changes send no event, so the list is re-read every
// REFRESH_MS while the panel is in view.

import { api, explain } from "./api.js";
import { byId, el, formatDuration, formatMb, formatTime, say, shortHash, table } from "./dom.js";
import { release } from "./readonly.js";

const REFRESH_MS = 5000;

export function setUpWorkers() {
  byId("recycle-all").addEventListener("click", recycleAll);
}

/** Re-reads the workers every REFRESH_MS while their panel shows, until `signal` aborts. */
export function followWorkers(signal) {
  const timer = setInterval(() => {
    if (!byId("panel-workers").hidden) refreshWorkers();
  }, REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer), { once: true });
}

export async function refreshWorkers() {
  const summary = byId("workers-summary");
  try {
    const fleet = await api.get("/api/workers");
    say(summary, summaryLine(fleet.summary ?? {}));
    renderWorkers(fleet.workers ?? [], fleet.summary?.current_hash ?? null);
  } catch (error) {
    say(summary, `Could not load the workers: ${explain(error)}`);
  }
}

function summaryLine(summary) {
  if (!summary.total) return "No workers are running.";
  return `${summary.ready}/${summary.total} workers ready on ${shortHash(summary.current_hash)}.`;
}

async function recycleAll(event) {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    await api.post("/api/workers/recycle-all");
    say(byId("workers-summary"), "Recycling every pool: new workers are starting.");
  } catch (error) {
    say(byId("workers-summary"), `Recycle failed: ${explain(error)}`);
  } finally {
    release(button);
  }
}

/** `<host>-<pool pid>-w<slot>.<generation>` -> `<host>-<pool pid>`, for APIs without pool_id. */
function poolOf(worker) {
  return worker.pool_id ?? String(worker.worker_id).split("-w").slice(0, -1).join("-w");
}

/** Map(host -> Map(pool -> [workers])), in name order. */
function groupByHostAndPool(workers) {
  const hosts = new Map();
  const sorted = [...workers].sort((a, b) =>
    `${a.host}\n${poolOf(a)}\n${a.worker_id}`.localeCompare(`${b.host}\n${poolOf(b)}\n${b.worker_id}`));
  for (const worker of sorted) {
    const pools = hosts.get(worker.host) ?? new Map();
    pools.set(poolOf(worker), [...(pools.get(poolOf(worker)) ?? []), worker]);
    hosts.set(worker.host, pools);
  }
  return hosts;
}

function renderWorkers(workers, currentHash) {
  const holder = byId("workers-list");
  if (!workers.length) {
    holder.replaceChildren(el("p", { className: "empty", text: "No workers are running" }));
    return;
  }
  // Failure details someone opened stay open when the list is redrawn.
  const opened = new Set([...holder.querySelectorAll("details[open]")].map((d) => d.dataset.worker));
  const sections = [];
  for (const [host, pools] of groupByHostAndPool(workers)) {
    sections.push(el("section", { className: "host", dataset: { testid: "host", host } },
      el("h3", { text: `Host ${host}` }),
      [...pools].map(([pool, members]) => el("div", { className: "pool" },
        el("h4", { text: `Pool ${pool}` }),
        el("div", { className: "table-wrap" }, workersTable(members, currentHash))))));
  }
  holder.replaceChildren(...sections);
  for (const details of holder.querySelectorAll("details")) {
    details.open = opened.has(details.dataset.worker);
  }
}

function workersTable(workers, currentHash) {
  const columns = ["Worker", "Status", "Requirements", "Install", "Memory", "Started"];
  return table("Workers of this pool", columns, workers.map((worker) =>
    el("tr", { dataset: { testid: "worker-row", status: worker.status } },
      el("td", {}, el("code", { text: worker.worker_id })),
      el("td", {}, statusBadge(worker)),
      el("td", {}, hashCell(worker.requirements_hash, currentHash)),
      el("td", {}, installCell(worker.install, worker.worker_id)),
      el("td", { dataset: { testid: "worker-memory" } }, memoryCell(worker)),
      el("td", { text: formatTime(worker.started_at) }))));
}

const known = (value) => value !== null && value !== undefined;

/** The worker's resident memory; while busy its execution's; the last execution's peak. */
function memoryCell(worker) {
  const lines = [el("span", {
    className: known(worker.rss_mb) ? "" : "muted",
    title: "Resident memory of the worker and its template process",
    text: formatMb(worker.rss_mb),
  })];
  if (known(worker.execution_rss_mb)) {
    lines.push(el("span", { className: "memory-line", dataset: { testid: "execution-memory" },
      text: `running execution: ${formatMb(worker.execution_rss_mb)}` }));
  }
  if (known(worker.last_execution_peak_rss_mb)) {
    lines.push(el("span", { className: "memory-line muted", dataset: { testid: "last-peak" },
      text: `last execution peak: ${formatMb(worker.last_execution_peak_rss_mb)}` }));
  }
  return lines;
}

function statusBadge(worker) {
  const badge = el("span", { className: `badge status-${worker.status}`, text: worker.status });
  return worker.retiring ? [badge, " ", el("span", { className: "badge", text: "retiring" })] : badge;
}

function hashCell(hash, currentHash) {
  if (!hash) return el("span", { className: "muted", text: "—" });
  const current = hash === currentHash;
  return [el("code", { text: shortHash(hash) }),
    el("span", { className: current ? "muted" : "warning", text: current ? " current" : " previous" })];
}

function installCell(install, workerId) {
  if (!install) return el("span", { className: "muted", text: "not yet" });
  const took = formatDuration(install.duration_ms);
  const failed = install.failed ?? [];
  if (!failed.length) {
    const what = install.skipped ? "reused the environment"
      : `installed ${(install.installed ?? []).length} package(s)`;
    return el("span", { text: `ok: ${what} in ${took}` });
  }
  return el("details", { className: "install-failures", dataset: { worker: workerId } },
    el("summary", { className: "error-text",
      text: `failed: ${failed.map((f) => f.package).join(", ")} (${took})` }),
    el("ul", {}, failed.map((f) => el("li", {},
      el("strong", { text: f.package }), el("pre", { className: "installer-output", text: f.error })))));
}
