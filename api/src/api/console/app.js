// The Bifrost console: sign-in, the three sections, the live event stream,
// the "API unreachable" banner and read-only mode. Each section lives in a module of its
// own; this one wires them together.

import { followAlerts, refreshAlerts } from "./alerts.js";
import { on, send, session } from "./api.js";
import { byId, debounce, say } from "./dom.js";
import { refreshEditor, requirementsChanged, setUpEditor } from "./editor.js";
import { followEvents } from "./events.js";
import { refreshExecutions, setUpExecutions, stopExecutions } from "./executions.js";
import { refreshPackages, setUpPackages } from "./packages.js";
import { LABEL, refetchUnfinished, showProgress, track } from "./progress.js";
import { enterReadOnly, showReadOnly } from "./readonly.js";
import { followWorkers, refreshWorkers, setUpWorkers } from "./workers.js";

const SIGNED_OUT_REASON = "bifrost.signedOutReason";
const HEALTH_RETRY_MS = 3000;
const REFRESH_DELAY_MS = 300;
// Alerts follow the installs: one read after a burst of events is enough.
const ALERTS_DELAY_MS = 1000;

/** Aborts everything the signed-in session started (the event stream). */
let signedIn = null;
let healthTimer = null;

const refreshPackagesSoon = debounce(refreshPackages, REFRESH_DELAY_MS);
const refreshWorkersSoon = debounce(refreshWorkers, REFRESH_DELAY_MS);
const refreshAlertsSoon = debounce(refreshAlerts, ALERTS_DELAY_MS);

function refreshAll() {
  refreshAlerts();
  refreshPackages();
  refreshWorkers();
  refreshExecutions();
  refreshEditor();
  refetchUnfinished();
}

// --- signing in and out -----------------------------------------------------------

/** "ok", or what is wrong with `token`, in words for the sign-in form. */
async function checkToken(token) {
  let response;
  try {
    response = await send("/api/requirements", { headers: { Authorization: `Bearer ${token}` } });
  } catch {
    return "API unreachable: is Bifrost running? Try again in a moment.";
  }
  if (response.status === 401) {
    return "Wrong token: the API refused it (401). Check the token and try again.";
  }
  return response.ok ? "ok" : `The API answered ${response.status}; try again.`;
}

async function signIn(event) {
  event.preventDefault();
  const input = byId("token");
  const message = byId("sign-in-error");
  const token = input.value.trim();
  if (!token) {
    say(message, "Enter the admin token or the read-only token.");
    return;
  }
  say(message, "Checking the token…");
  const verdict = await checkToken(token);
  if (verdict !== "ok") {
    say(message, verdict);
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  session.signIn(token);
  input.value = "";
  input.removeAttribute("aria-invalid");
  say(message, "");
  enterConsole();
}

/** Forgets the token and starts again from a fresh page. */
function signOut(reason = "") {
  session.signOut();
  signedIn?.abort();
  stopExecutions();
  if (reason) sessionStorage.setItem(SIGNED_OUT_REASON, reason);
  location.reload();
}

function enterConsole() {
  byId("sign-in").hidden = true;
  byId("console").hidden = false;
  byId("sign-out").hidden = false;
  signedIn = new AbortController();
  showReadOnly(); // a tab that learnt it holds the read-only token, reloaded
  refreshAll();
  followAlerts(signedIn.signal);
  followWorkers(signedIn.signal);
  // A reconnect resumes after the last event seen (the server replays what
  // was missed, or sends `reset` when it no longer can), so nothing is
  // refetched here; the banner going away refetches everything anyway.
  followEvents({
    signal: signedIn.signal,
    onEvent: handleEvent,
    onState: (state) => {
      say(byId("connection"), state === "live" ? "Live" : "Reconnecting to live events…");
    },
  });
}

async function resumeSession() {
  const verdict = await checkToken(session.token());
  if (verdict.startsWith("Wrong token")) {
    session.signOut();
    say(byId("sign-in-error"), verdict);
    return;
  }
  enterConsole(); // unreachable now: the banner says so and the page catches up later
}

// --- live events --------------------------------------------------------------------

function describeChange(change) {
  const parts = [];
  if (change.added?.length) parts.push(`Added ${change.added.join(", ")}`);
  if (change.removed?.length) parts.push(`Removed ${change.removed.join(", ")}`);
  return parts.join("; ") || "requirements.txt changed";
}

const eventHandlers = {
  requirements(change) {
    track(change.hash, describeChange(change), LABEL.event);
    requirementsChanged(change.hash);
    refreshPackagesSoon();
    refreshWorkersSoon();
    refreshAlertsSoon();
  },
  worker() {
    refreshWorkersSoon();
    refreshPackagesSoon();
    refreshAlertsSoon();
  },
  progress(progress) {
    showProgress(progress);
    refreshAlertsSoon();
  },
  reset() {
    refreshAll();
  },
  // `unavailable`: the server ends the stream (its Redis failed); the
  // stream reconnects by itself.
};

function handleEvent(event) {
  // Where the stream would resume from (a test hook; event ids are no secret).
  if (event.id) byId("connection").dataset.lastEventId = event.id;
  eventHandlers[event.type]?.(event.data);
}

// --- the API unreachable banner ---------------------------------------------------

function showUnreachable() {
  byId("unreachable").hidden = false;
  healthTimer ??= setInterval(checkHealth, HEALTH_RETRY_MS);
}

function hideUnreachable() {
  if (byId("unreachable").hidden) return;
  byId("unreachable").hidden = true;
  clearInterval(healthTimer);
  healthTimer = null;
  if (signedIn) refreshAll();
}

async function checkHealth() {
  try {
    await send("/health"); // any answer at all: the API is back
  } catch {
    // still down: the banner stays and the next tick tries again
  }
}

// --- tabs ---------------------------------------------------------------------------

const TAB_OPENED = { workers: refreshWorkers, executions: refreshExecutions };

function tabs() {
  return [...document.querySelectorAll('[role="tab"]')];
}

function selectTab(tab) {
  for (const other of tabs()) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    byId(other.getAttribute("aria-controls")).hidden = !selected;
  }
  const name = tab.id.replace(/^tab-/, "");
  history.replaceState(null, "", `#${name}`);
  if (signedIn) TAB_OPENED[name]?.();
}

/** Arrow keys, Home and End move between tabs (the WAI-ARIA tabs pattern). */
function moveBetweenTabs(event) {
  const all = tabs();
  const here = all.indexOf(event.currentTarget);
  const targets = {
    ArrowRight: all[(here + 1) % all.length],
    ArrowLeft: all[(here - 1 + all.length) % all.length],
    Home: all[0],
    End: all[all.length - 1],
  };
  const next = targets[event.key];
  if (!next) return;
  event.preventDefault();
  selectTab(next);
  next.focus();
}

function setUpTabs() {
  for (const tab of tabs()) {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", moveBetweenTabs);
  }
  const wanted = tabs().find((tab) => tab.id === `tab-${location.hash.slice(1)}`);
  if (wanted) selectTab(wanted);
}

// --- start ----------------------------------------------------------------------------

function start() {
  setUpTabs();
  setUpPackages();
  setUpEditor();
  setUpWorkers();
  setUpExecutions();
  byId("sign-in-form").addEventListener("submit", signIn);
  byId("sign-out").addEventListener("click", () => signOut());
  on("unauthorized", () => signOut("The API refused the token (401): sign in again."));
  on("unreachable", showUnreachable);
  on("reachable", hideUnreachable);
  on("readonly", enterReadOnly);

  const reason = sessionStorage.getItem(SIGNED_OUT_REASON);
  sessionStorage.removeItem(SIGNED_OUT_REASON);
  if (reason) say(byId("sign-in-error"), reason);
  if (session.token()) resumeSession();
  else byId("token").focus();
}

start();
