// The Health tab (the service admin only): the pipeline's objectives and, over the last days,
// collection lag and billing latency per hour, from the admin status route
// (GET /providers/Microsoft.Commerce.Admin/pipelineStatus, what `ops status` prints).

import { destroyCharts, stackedBars } from "./charts.js";
import { heading, paragraph, table } from "./dom.js";
import { api, setStatus, showProblem } from "./session-api.js";
import { $, API_VERSION } from "./state.js";

const STATUS_URL = `/providers/Microsoft.Commerce.Admin/pipelineStatus?api-version=${API_VERSION}`;

function minutes(value) {
  return value === null || value === undefined ? "-" : `${Math.round(value)} min`;
}

export async function showHealth() {
  const view = $("health-view");
  view.dataset.state = "loading";
  view.setAttribute("aria-busy", "true");
  destroyCharts();
  for (const id of ["health-cards", "health-table", "health-objectives"]) $(id).replaceChildren();
  try {
    setStatus("Loading the pipeline's status…");
    const status = (await (await api(STATUS_URL)).json()).properties;
    const cards = $("health-cards");
    const verdict = document.createElement("div");
    verdict.className = `card ${status.healthy ? "ok" : "bad"}`;
    verdict.id = "health-state";
    verdict.append(paragraph("Objectives"), Object.assign(document.createElement("div"), {
      className: "value",
      textContent: status.healthy ? "All met" : `Breached: ${status.breached.join(", ")}`,
    }));
    cards.append(verdict);
    for (const [title, value] of [
      ["Collected through", status.collectedThrough || "-"],
      ["Billed through", status.billing.billedThrough || "-"],
      ["Rated through", status.statements.ratedThrough || "-"],
      ["Statements final through", status.statements.finalThrough || "-"],
    ]) {
      const box = document.createElement("div");
      box.className = "card";
      box.append(paragraph(title), Object.assign(document.createElement("div"), { className: "value small", textContent: value }));
      cards.append(box);
    }
    const series = status.series || [];
    const labels = series.map((point) => `${point.hour.slice(5, 10)} ${point.hour.slice(11, 16)}`);
    $("health-chart").dataset.points = String(series.length);
    stackedBars($("health-canvas"), labels, [
      { key: "lag", label: "Collection lag (worst, minutes)", data: series.map((p) => p.lagMinutes ?? 0) },
      { key: "billing", label: "Billing latency (worst, minutes)", data: series.map((p) => p.billingLatencyMinutes ?? 0) },
    ], { yTitle: "minutes", xTitle: "hour (UTC)", stacked: false });
    $("health-table").append(table(`${series.length} hours; "-" where nothing was observed`,
      ["Hour (UTC)", "Collection lag", "Billing latency"],
      series.map((point) => ({
        cells: [point.hour.slice(0, 16).replace("T", " "), minutes(point.lagMinutes), minutes(point.billingLatencyMinutes)],
        sort: [point.hour, point.lagMinutes ?? -1, point.billingLatencyMinutes ?? -1],
        data: { hour: point.hour },
      })),
      ["Collection lag", "Billing latency"]));
    const objectives = $("health-objectives");
    objectives.append(heading(3, "Objectives"));
    objectives.append(table("Each objective now, and how often it was met over the last 24 hours and 30 days",
      ["Objective", "State", "Now", "Target", "Met, 24 h", "Met, 30 days"],
      status.objectives.map((o) => ({
        cells: [o.name, o.state, o.value === null ? "-" : `${o.value} ${o.unit || ""}`.trim(), o.target,
          o.last24h.metShare === null ? "-" : `${(o.last24h.metShare * 100).toFixed(1)}%`,
          o.last30d.metShare === null ? "-" : `${(o.last30d.metShare * 100).toFixed(1)}%`],
        data: { objective: o.name, state: o.state },
      }))));
    view.dataset.state = "ready";
    setStatus(status.healthy ? "The pipeline meets its objectives." : "Some objectives are breached.");
  } catch (error) {
    showProblem(error, () => showHealth(), view);
  } finally {
    view.removeAttribute("aria-busy");
  }
}
