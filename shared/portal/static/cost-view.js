// The Cost tab, the landing view for every role: money over time from the Cost Management
// Query route (POST .../providers/Microsoft.CostManagement/query), which reads the ledger of
// charges; nothing here computes money, it only adds up the API's whole minor units.
//
// One request per figure, sent at once: the window's daily cost stacked by a dimension, the
// window's total (granularity None: the route's one figure, not a sum of the days; for a
// provider by PricingLevel, which also gives the roll-up's split: retail, wholesale), the
// previous period of the same length, this month's days (month to date and the forecast),
// and the top resources. The forecast is the average of this month's complete days times the
// days of the month (said beside it); today is a partial day, marked on the axis.

import { destroyCharts, stackedBars } from "./charts.js";
import { subscriptionNames } from "./context.js";
import { heading, paragraph, table } from "./dom.js";
import {
  addDays, dayLabel, daysBetween, decimalMinor, isoDay, moneyText, toMinor, usageDateDay,
} from "./format.js";
import { costRows, PageError, readableSubscriptions, setStatus, showProblem } from "./session-api.js";
import { $, state } from "./state.js";

export const DIMENSIONS = {
  SubscriptionId: "Subscription",
  ResourceGroup: "Resource group",
  ServiceName: "Resource provider",
  Meter: "Meter",
};
export const PRESETS = {
  today: "Today",
  last7: "Last 7 days",
  month: "This month",
  lastmonth: "Last month",
  custom: "Custom",
};
const TOP = 10;
// Series drawn one by one in the daily chart; the rest are one "other" series (as Azure's
// cost analysis draws its top groups and "Others").
export const SERIES = 9;
export const OTHER_SERIES = "*other";
// A provider's money, named as the CLI and the roll-up route name it (shared.rating.rollups
// LABELS; tests/unit/test_portal_site.py holds the two to the same words).
const LABELS = {
  directTenantsTotal: "Charged to direct tenants",
  wholesaleTotal: "Wholesale paid for them",
  margin: "Margin",
  resellersTotal: "Wholesale charged to delegated providers",
  grandTotal: "Total billed",
  cloudTotal: "Whole cloud (every tenant once)",
};

function today() {
  return isoDay(new Date());
}

// The window a preset names, as UTC days (both included).
export function costWindow(params) {
  const preset = PRESETS[params.get("preset")] ? params.get("preset") : "month";
  const now = today();
  const first = `${now.slice(0, 7)}-01`;
  if (preset === "today") return { preset, from: now, to: now };
  if (preset === "last7") return { preset, from: addDays(now, -6), to: now };
  if (preset === "lastmonth") {
    const from = `${addDays(first, -1).slice(0, 7)}-01`;
    return { preset, from, to: addDays(first, -1) };
  }
  if (preset === "custom") {
    const from = params.get("from") || first;
    const to = params.get("to") || now;
    return { preset, from, to: to > now ? now : to };
  }
  return { preset, from: first, to: now };
}

function definition(from, to, { daily = false, grouping = [], filter = null } = {}) {
  const dataset = {
    granularity: daily ? "Daily" : "None",
    aggregation: { totalCost: { name: "Cost", function: "Sum" } },
    grouping: grouping.map((name) => ({ type: "Dimension", name })),
  };
  if (filter) dataset.filter = filter;
  return {
    type: "ActualCost", timeframe: "Custom",
    timePeriod: { from: `${from}T00:00:00Z`, to: `${to}T00:00:00Z` }, dataset,
  };
}

function filterOf(context, params) {
  const parts = [];
  if (context.route === "provider" && context.subscriber) {
    parts.push({ dimensions: { name: "SubscriptionId", operator: "In", values: [context.subscriber] } });
  }
  const dimension = params.get("fdim");
  const value = (params.get("fval") || "").trim();
  if (DIMENSIONS[dimension] && value) {
    parts.push({ dimensions: { name: dimension, operator: "In", values: [value] } });
  }
  if (!parts.length) return null;
  return parts.length === 1 ? parts[0] : { and: parts };
}

function total(rows, currency) {
  return rows.reduce((sum, row) => sum + toMinor(row.Cost, currency), 0);
}

function label(dimension, key) {
  if (!key) return dimension === "Meter" ? "Adjustments and credits" : "(none)";
  if (dimension === "SubscriptionId") return subscriptionNames().get(key.toLowerCase()) || key;
  return key;
}

function card(title, value, note, id) {
  const box = document.createElement("div");
  box.className = "card";
  if (id) box.id = id;
  const figure = document.createElement("div");
  figure.className = "value";
  figure.textContent = value;
  box.append(paragraph(title), figure, Object.assign(paragraph(note || "\u00a0"), { className: "hint" }));
  return box;
}

function fillForm(span, by, params) {
  $("cost-preset").value = span.preset;
  $("cost-from").value = span.from;
  $("cost-to").value = span.to;
  $("cost-custom").hidden = span.preset !== "custom";
  $("cost-by").value = by;
  $("cost-fdim").value = DIMENSIONS[params.get("fdim")] ? params.get("fdim") : "";
  $("cost-fval").value = params.get("fval") || "";
}

export async function showCost(context, params) {
  const view = $("cost-view");
  const span = costWindow(params);
  const by = DIMENSIONS[params.get("by")] ? params.get("by") : (context.route === "provider" ? "SubscriptionId" : "Meter");
  fillForm(span, by, params);
  // Old content never stays: every area is emptied (its placeholder keeps its size) first.
  const generation = ++state.generation;
  view.dataset.state = "loading";
  delete view.dataset.hash;
  view.setAttribute("aria-busy", "true");
  destroyCharts();
  for (const id of ["cost-table", "cost-top", "cost-summary"]) $(id).replaceChildren();
  placeholderCards();
  $("cost-chart").dataset.series = "[]";
  $("cost-caption").textContent = "Daily cost: loading…";
  if (span.from > span.to) {
    showProblem(new PageError("Choose a period whose first day is not after its last."), null, view);
    view.removeAttribute("aria-busy");
    return;
  }
  const retry = () => showCost(context, params);
  const filter = filterOf(context, params);
  const days = daysBetween(span.from, span.to);
  const previousTo = addDays(span.from, -1);
  const previousFrom = addDays(span.from, -days.length);
  const now = today();
  const monthFirst = `${now.slice(0, 7)}-01`;
  try {
    setStatus("Loading cost…");
    const provider = context.route === "provider";
    const [series, period, previous, month, top, kind] = await Promise.all([
      costRows(context, definition(span.from, span.to, { daily: true, grouping: [by], filter })),
      costRows(context, definition(span.from, span.to, { grouping: provider ? ["PricingLevel"] : [], filter })),
      costRows(context, definition(previousFrom, previousTo, { filter })),
      costRows(context, definition(monthFirst, now, { daily: true, filter })),
      costRows(context, definition(span.from, span.to, { grouping: ["ResourceId"], filter })),
      provider ? providerKind(context.id) : Promise.resolve(null),
    ]);
    if (generation !== state.generation) return; // a newer view was asked for meanwhile
    const currency = [...period, ...series, ...month, ...previous].find((row) => row.Currency)?.Currency || "";
    const retail = total(period.filter((row) => (row.PricingLevel || "retail") === "retail"), currency);
    drawCards(span, retail, previous, month, currency, monthFirst, now);
    drawSeries(span, days, series, by, currency, now);
    drawTop(top, currency, params);
    if (provider) {
      const wholesale = total(period.filter((row) => row.PricingLevel === "wholesale"), currency);
      drawSummary(span, kind, retail, wholesale, currency);
    }
    view.dataset.window = `${span.from}/${span.to}`;
    view.dataset.hash = location.hash;
    view.dataset.state = "ready";
    setStatus(`Cost from ${span.from} to ${span.to} (both included), by ${DIMENSIONS[by].toLowerCase()}.`);
  } catch (error) {
    if (generation !== state.generation) return;
    $("cost-caption").textContent = "";
    $("cost-cards").replaceChildren();
    showProblem(error, retry, view);
  } finally {
    if (generation === state.generation) view.removeAttribute("aria-busy");
  }
}

const CARDS = [
  ["cost-total", "Cost of the period"], ["cost-previous", "Previous period (same length)"],
  ["cost-mtd", "Month to date"], ["cost-forecast", "Forecast to month end"],
];

// Four cards of their final size, saying they are loading (no layout shift when filled).
function placeholderCards() {
  $("cost-cards").replaceChildren(...CARDS.map(([id, title]) => card(title, "…", "\u00a0", `${id}-pending`)));
}

function drawCards(span, shown, previous, month, currency, monthFirst, now) {
  const before = total(previous, currency);
  const monthToDate = total(month, currency);
  const complete = month.filter((row) => usageDateDay(row.UsageDate) < now);
  const completeDays = daysBetween(monthFirst, now).length - 1;
  const monthDays = daysBetween(monthFirst, addDays(`${addDays(monthFirst, 40).slice(0, 7)}-01`, -1)).length;
  const cards = $("cost-cards");
  const area = card("Cost of the period", moneyText(shown, currency), `${span.from} to ${span.to}`, "cost-total");
  area.dataset.totalMinor = String(shown);
  area.dataset.total = decimalMinor(shown, currency);
  const change = before ? `${shown >= before ? "+" : ""}${(((shown - before) / Math.abs(before)) * 100).toFixed(1)}%` : "no cost before";
  const prior = card("Previous period (same length)", moneyText(before, currency), change, "cost-previous");
  prior.dataset.totalMinor = String(before);
  const mtd = card("Month to date", moneyText(monthToDate, currency), "today is partial", "cost-mtd");
  mtd.dataset.totalMinor = String(monthToDate);
  let forecastText = "-";
  let note = "after this month's first day";
  if (completeDays > 0) {
    const forecast = Math.round((total(complete, currency) / completeDays) * monthDays);
    forecastText = moneyText(forecast, currency);
    note = `${completeDays} complete day${completeDays === 1 ? "" : "s"}' average × ${monthDays}`;
  }
  cards.replaceChildren(area, prior, mtd, card("Forecast to month end", forecastText, note, "cost-forecast"));
}

function drawSeries(span, days, rows, by, currency, now) {
  // A continuous axis: every day of the window, zero where nothing was charged.
  const keys = [...new Set(rows.map((row) => row[by] || ""))];
  const byKey = new Map(keys.map((key) => [key, new Map()]));
  for (const row of rows) {
    const day = usageDateDay(row.UsageDate);
    const values = byKey.get(row[by] || "");
    values.set(day, (values.get(day) || 0) + toMinor(row.Cost, currency));
  }
  const ranked = keys
    .map((key) => ({ key, label: label(by, key), minor: days.map((day) => byKey.get(key).get(day) || 0) }))
    .sort((a, b) => b.minor.reduce((x, y) => x + y, 0) - a.minor.reduce((x, y) => x + y, 0));
  const datasets = ranked.length > SERIES + 1 ? [...ranked.slice(0, SERIES), others(ranked.slice(SERIES), by)] : ranked;
  const labels = days.map((day) => (day === now ? `${dayLabel(day)} (today, partial)` : dayLabel(day)));
  $("cost-values").replaceChildren(...keys.filter(Boolean).map((key) => new Option(label(by, key), key)));
  const figure = $("cost-chart");
  figure.dataset.series = JSON.stringify(datasets.map((d) => ({
    key: d.key, label: d.label, totalMinor: d.minor.reduce((x, y) => x + y, 0),
  })));
  figure.dataset.days = JSON.stringify(days);
  $("cost-caption").textContent = `Daily cost (${currency || "no currency"}) by ${DIMENSIONS[by].toLowerCase()}`;
  stackedBars($("cost-canvas"), labels, datasets.map((d) => ({
    key: d.key, label: d.label, data: d.minor.map((m) => m / 100),
  })), { yTitle: currency, xTitle: "usage day (UTC)" });
  const dayRows = [];
  for (const d of datasets) {
    d.minor.forEach((minor, index) => {
      if (minor) {
        dayRows.push({
          cells: [days[index], d.label, moneyText(minor, currency)],
          sort: [days[index], d.label, minor],
          data: { day: days[index], key: d.key, minor: String(minor) },
        });
      }
    });
  }
  dayRows.sort((a, b) => a.sort[0].localeCompare(b.sort[0]) || b.sort[2] - a.sort[2]);
  $("cost-table").append(table(`${dayRows.length} day and ${DIMENSIONS[by].toLowerCase()} amounts; select a heading to sort`,
    ["Day", DIMENSIONS[by], "Cost"], dayRows, ["Cost"]));
}

// The series past the largest SERIES, added up into one (their minor units, day by day):
// a whole cloud stacked by subscription would otherwise draw thousands of bars and legend
// entries. The filter and the top table still reach each of them.
function others(rest, by) {
  const minor = rest[0].minor.map((_, index) => rest.reduce((sum, d) => sum + d.minor[index], 0));
  const plural = { SubscriptionId: "subscriptions", ResourceGroup: "resource groups", ServiceName: "resource providers", Meter: "meters" };
  return { key: OTHER_SERIES, label: `${rest.length} other ${plural[by]}`, minor };
}

function drawTop(rows, currency, params) {
  const search = (params.get("q") || "").toLowerCase();
  $("cost-search").value = params.get("q") || "";
  const sorted = rows
    .filter((row) => row.ResourceId && (!search || row.ResourceId.toLowerCase().includes(search)))
    .sort((a, b) => b.Cost - a.Cost);
  const shown = sorted.slice(0, search ? 100 : TOP);
  $("cost-top").append(table(
    search ? `${shown.length} of ${sorted.length} resources matching "${search}"` : `The ${shown.length} costliest of ${rows.length} resources`,
    ["Resource", "Cost"],
    shown.map((row) => ({
      cells: [row.ResourceId, moneyText(toMinor(row.Cost, currency), currency)],
      sort: [row.ResourceId, toMinor(row.Cost, currency)],
      data: { resource: row.ResourceId, minor: String(toMinor(row.Cost, currency)) },
    })),
    ["Cost"]));
}

// A provider's kind (default or delegated: which roll-up figures its money has), from the
// subscriptions list; null when the list cannot say (only the retail figure is then named).
async function providerKind(id) {
  try {
    const found = (await readableSubscriptions()).find((s) => s.subscriptionId.toLowerCase() === id.toLowerCase());
    return found?.tags?.providerKind || null;
  } catch {
    return null;
  }
}

// The roll-up's figures for the period (and filters) shown, from the Query route's retail and
// wholesale totals; margin and total billed are their difference and sum in minor units,
// as the roll-up defines them.
function summaryFigures(kind, admin, retail, wholesale) {
  if (kind === "delegated") {
    return [["directTenantsTotal", retail], ["wholesaleTotal", wholesale], ["margin", retail - wholesale], ["grandTotal", retail]];
  }
  if (kind === "default" && admin) return [["cloudTotal", retail], ["resellersTotal", wholesale]];
  if (kind === "default") {
    return [["directTenantsTotal", retail], ["resellersTotal", wholesale], ["grandTotal", retail + wholesale]];
  }
  return [["directTenantsTotal", retail]];
}

function drawSummary(span, kind, retail, wholesale, currency) {
  const area = $("cost-summary");
  area.append(heading(3, `The provider's money, ${span.from} to ${span.to} (by usage day)`));
  const cards = document.createElement("div");
  cards.className = "cards";
  for (const [key, minor] of summaryFigures(kind, state.session?.admin, retail, wholesale)) {
    const box = card(LABELS[key], moneyText(minor, currency), null, `summary-${key}`);
    box.dataset.amount = decimalMinor(minor, currency);
    cards.append(box);
  }
  area.append(cards);
}
