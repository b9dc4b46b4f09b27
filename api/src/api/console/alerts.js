// Install failures (GET /api/alerts): one alert per package that failed to
// install, per requirements hash, with every host that saw it fail, the
// installer's words and how its webhook delivery went. Open ones are listed
// at the top of the Packages panel; resolved ones are only counted. The card
// is hidden while there has never been an alert.

import { api, explain } from "./api.js";
import {
  byId, canonicalName, el, formatAgo, formatTime, gist, lineName, say, shortHash,
} from "./dom.js";

const REFRESH_MS = 15000;
// A delivery about to happen is read again soon: it settles within seconds.
const SETTLING_MS = 2000;
const SETTLING = new Set(["pending", "sending"]);

let settlingTimer = null;

/** Re-reads the alerts every REFRESH_MS until `signal` aborts. */
export function followAlerts(signal) {
  const timer = setInterval(refreshAlerts, REFRESH_MS);
  signal.addEventListener("abort", () => {
    clearInterval(timer);
    clearTimeout(settlingTimer);
  }, { once: true });
}

export async function refreshAlerts() {
  let answer;
  try {
    answer = await api.get("/api/alerts");
  } catch (error) {
    say(byId("alerts-status"), `Could not load the install failures: ${explain(error)}`);
    return;
  }
  const alerts = answer.alerts ?? [];
  renderAlerts(alerts);
  clearTimeout(settlingTimer);
  const settling = alerts.some((alert) => !alert.resolved && SETTLING.has(alert.delivery?.status));
  settlingTimer = settling ? setTimeout(refreshAlerts, SETTLING_MS) : null;
}

function renderAlerts(alerts) {
  const card = byId("alerts");
  const list = byId("alerts-list");
  const open = alerts.filter((alert) => !alert.resolved);
  const resolved = alerts.length - open.length;
  card.hidden = alerts.length === 0;
  card.classList.toggle("has-failures", open.length > 0);
  say(byId("alerts-status"), summaryLine(open.length, resolved));
  // Installer output someone opened stays open when the list is redrawn.
  const opened = new Set([...list.querySelectorAll("details[open]")].map((d) => d.dataset.alert));
  list.replaceChildren(...open.map(alertItem));
  for (const details of list.querySelectorAll("details")) {
    details.open = opened.has(details.dataset.alert);
  }
}

function summaryLine(open, resolved) {
  const done = resolved ? ` · ${resolved} resolved` : "";
  if (!open) return `No open alerts${done}.`;
  const packages = open === 1 ? "1 package failed" : `${open} packages failed`;
  return `${packages} to install on the workers${done}.`;
}

function alertItem(alert) {
  const hosts = alert.hosts ?? [];
  return el("li", {
    className: "alert",
    dataset: { testid: "alert", name: canonicalName(lineName(alert.package)), hash: alert.hash },
  },
  el("p", { className: "alert-title" },
    el("strong", { className: "package", text: alert.package }),
    " failed to install for requirements ",
    el("code", { title: alert.hash, text: shortHash(alert.hash) })),
  el("p", { dataset: { testid: "alert-hosts" } },
    `On ${hosts.length === 1 ? "host" : "hosts"} `,
    el("span", { className: "hosts", text: hosts.join(", ") || "—" }),
    ` · ${alert.count} ${alert.count === 1 ? "report" : "reports"}`),
  el("p", { className: "error-text", text: gist(alert.error) }),
  el("details", { dataset: { alert: alert.id } },
    el("summary", { text: "Installer output" }),
    el("pre", { className: "installer-output", text: alert.error })),
  el("p", { className: "muted small" },
    "First seen ", when(alert.first_seen), " · last seen ", when(alert.last_seen), " · ",
    el("span", { dataset: { testid: "alert-delivery" }, text: deliveryText(alert.delivery) })));
}

/** "5 min ago", with the local date and time on hover and for machines. */
function when(seconds) {
  const date = new Date(Number(seconds) * 1000);
  const valid = !Number.isNaN(date.getTime());
  return el("time", {
    datetime: valid ? date.toISOString() : null,
    title: formatTime(seconds),
    text: formatAgo(seconds),
  });
}

function deliveryText(delivery) {
  if (!delivery) return "webhook: unknown";
  const attempts = delivery.attempts === 1 ? "1 attempt" : `${delivery.attempts} attempts`;
  switch (delivery.status) {
    case "no webhook": return "no webhook set";
    case "sent": return "webhook: sent";
    case "failed": {
      const why = delivery.last_error ? ` (${delivery.last_error})` : "";
      return `webhook: failed after ${attempts}${why}`;
    }
    default:
      return `webhook: ${delivery.status}${delivery.attempts ? ` (${attempts})` : ""}`;
  }
}
