// The Executions panel: the run form (module, function, JSON parameters),
// the outcome of the last run (polled until it ends) and the recent list.

import { Unreachable, api, errorsByField, explain } from "./api.js";
import { byId, el, formatDuration, formatMb, formatTime, say, sleep, table } from "./dom.js";
import { release } from "./readonly.js";

const RUN_FIELDS = { module: "run-module", function: "run-function", parameters: "run-parameters" };
const FINAL_STATUSES = new Set(["Success", "Failed", "Timeout"]);
const POLL_MS = 400;

let stopPolling = new AbortController();

export function setUpExecutions() {
  byId("run-form").addEventListener("submit", run);
  byId("executions-refresh").addEventListener("click", refreshExecutions);
}

export function stopExecutions() {
  stopPolling.abort();
}

export async function refreshExecutions() {
  const status = byId("executions-status");
  try {
    const answer = await api.get("/api/executions?limit=50");
    say(status, "");
    renderExecutions(answer.executions ?? []);
  } catch (error) {
    say(status, `Could not list the executions: ${explain(error)}`);
  }
}

function renderExecutions(executions) {
  const holder = byId("executions-table");
  if (!executions.length) {
    holder.replaceChildren(el("p", { className: "empty", text: "No executions yet" }));
    return;
  }
  const columns = ["Created", "Function", "Status", "Duration", "Peak memory", "Worker", "Error"];
  holder.replaceChildren(table("Recent executions, newest first", columns, executions.map((run) =>
    el("tr", { dataset: { testid: "execution-row", id: run.id } },
      el("td", { text: formatTime(run.created_at) }),
      el("td", {}, el("code", { text: `${run.module}:${run.function}` })),
      el("td", {}, el("span", { className: `badge run-${run.status}`, text: run.status })),
      el("td", { text: formatDuration(run.duration_ms) }),
      el("td", { dataset: { testid: "execution-peak" }, text: formatMb(run.peak_rss_mb) }),
      el("td", {}, el("code", { text: run.worker_id ?? "—" })),
      el("td", { className: "error-cell", text: run.error ?? "" })))));
}

// --- running one ------------------------------------------------------------------

function clearRunErrors() {
  say(byId("run-error"), "");
  for (const id of Object.values(RUN_FIELDS)) {
    byId(id).removeAttribute("aria-invalid");
    say(byId(`${id}-error`), "");
  }
}

function showFieldError(field, message) {
  const id = RUN_FIELDS[field];
  byId(id).setAttribute("aria-invalid", "true");
  say(byId(`${id}-error`), message);
}

/** The parameters textarea as an object, or null after saying what is wrong. */
function readParameters() {
  const text = byId("run-parameters").value.trim() || "{}";
  let parameters;
  try {
    parameters = JSON.parse(text);
  } catch (error) {
    showFieldError("parameters", `Not valid JSON: ${error.message}`);
    return null;
  }
  if (parameters === null || typeof parameters !== "object" || Array.isArray(parameters)) {
    showFieldError("parameters", "Parameters must be a JSON object, like {\"name\": \"Ada\"}.");
    return null;
  }
  return parameters;
}

async function run(event) {
  event.preventDefault();
  clearRunErrors();
  const parameters = readParameters();
  if (parameters === null) return;
  const body = {
    module: byId("run-module").value.trim(),
    function: byId("run-function").value.trim(),
    parameters,
  };
  const button = byId("run-button");
  button.disabled = true;
  try {
    const { id } = await api.post("/api/executions", body);
    showOutcome({ id, status: "Pending" });
    stopPolling.abort();
    stopPolling = new AbortController();
    await follow(id, stopPolling.signal);
  } catch (error) {
    if (error.readOnly) {
      // Nothing wrong with the fields: the token may not run anything.
      say(byId("run-error"), explain(error));
      return;
    }
    for (const [field, messages] of errorsByField(error, Object.keys(RUN_FIELDS), "module")) {
      showFieldError(field, messages.join("\n"));
    }
  } finally {
    release(button);
  }
}

/** Polls one execution until its status is final (or polling is stopped). */
async function follow(id, signal) {
  while (!signal.aborted) {
    let record;
    try {
      record = await api.get(`/api/executions/${encodeURIComponent(id)}`);
    } catch (error) {
      if (!(error instanceof Unreachable)) throw error;
      await sleep(POLL_MS * 5, signal); // the banner says so; keep following
      continue;
    }
    if (signal.aborted) return;
    showOutcome(record);
    if (FINAL_STATUSES.has(record.status)) {
      refreshExecutions();
      return;
    }
    await sleep(POLL_MS, signal);
  }
}

function showOutcome(record) {
  const parts = [
    el("p", {},
      el("span", { className: `badge run-${record.status}`, dataset: { testid: "run-status" },
        text: record.status }),
      ` execution `, el("code", { text: record.id }),
      record.duration_ms !== undefined && record.duration_ms !== null
        ? ` in ${formatDuration(record.duration_ms)}` : "",
      record.peak_rss_mb !== undefined && record.peak_rss_mb !== null
        ? `, peak memory ${formatMb(record.peak_rss_mb)}` : ""),
  ];
  if (record.status === "Success") {
    parts.push(el("p", { className: "label", text: "Result" }),
      el("pre", { dataset: { testid: "run-output" }, text: JSON.stringify(record.result, null, 2) }));
  } else if (record.error) {
    parts.push(el("p", { className: "label", text: "Error" }),
      el("pre", { className: "installer-output", dataset: { testid: "run-output" }, text: record.error }));
  }
  for (const note of record.notes ?? []) parts.push(el("p", { className: "muted", text: note }));
  // What it printed: the last part of each stream (the record says how much came before).
  for (const stream of ["stdout", "stderr"]) {
    if (record[stream]) {
      parts.push(el("p", { className: "label", text: stream }),
        el("pre", { className: "installer-output", dataset: { testid: `run-${stream}` },
          text: record[stream] }));
    }
  }
  byId("run-result").replaceChildren(...parts);
}
