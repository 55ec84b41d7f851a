// The Usage tab: quantities over time from the usage API, the rows, the CSV.

import { colourFor, destroyCharts } from "./charts.js";
import { cell, table } from "./dom.js";
import { bucketLabel, quantityText, sum, utcDay } from "./format.js";
import { renderSubscribers } from "./context.js";
import { PageError, api, setStatus, showProblem, usageUrl } from "./session-api.js";
import { $, MAX_CHART_PAGES, state } from "./state.js";

// --- usage -------------------------------------------------------------------------------

export function usageWindow(params) {
  const from = params.get("from") || utcDay(-1);
  const to = params.get("to") || from;
  const granularity = params.get("granularity") === "Daily" ? "Daily" : "Hourly";
  const start = new Date(`${from}T00:00:00Z`);
  let end = new Date(`${to}T00:00:00Z`);
  end.setUTCDate(end.getUTCDate() + 1);
  const now = new Date();
  const closed = new Date(now);
  if (granularity === "Daily") closed.setUTCHours(0, 0, 0, 0);
  else closed.setUTCMinutes(0, 0, 0);
  if (end > closed) end = closed;
  return {
    from, to, granularity,
    start: start.toISOString().replace(".000Z", "Z"),
    end: end.toISOString().replace(".000Z", "Z"),
    valid: !Number.isNaN(start.getTime()) && !Number.isNaN(end.getTime()) && start < end,
  };
}

export async function allPages(url, onPage) {
  const rows = [];
  let next = url;
  let pages = 0;
  while (next) {
    if (pages === MAX_CHART_PAGES) {
      throw new PageError(`The window holds more than ${MAX_CHART_PAGES} pages of usage; choose fewer days.`);
    }
    const body = await (await api(next)).json();
    rows.push(...body.value);
    pages += 1;
    onPage(pages, rows.length);
    next = body.nextLink || null;
  }
  return { rows, pages };
}

export async function showUsage(context, params) {
  const view = $("usage-view");
  const span = usageWindow(params);
  const group = params.get("group") === "provider" ? "provider" : "meter";
  const details = params.get("details") === "true";
  $("from").value = span.from;
  $("to").value = span.to;
  $("granularity").value = span.granularity;
  $("group").value = group;
  $("details").checked = details;
  if (!span.valid) {
    view.dataset.state = "error";
    showProblem(new PageError("Choose a window of days that have ended, From before To."), null, view);
    return;
  }
  view.dataset.state = "loading";
  delete view.dataset.window;
  view.setAttribute("aria-busy", "true");
  destroyCharts();
  $("totals").tBodies[0].replaceChildren();
  $("rows").tBodies[0].replaceChildren();
  const retry = () => showUsage(context, params);
  try {
    setStatus("Loading usage…");
    const { rows, pages } = await allPages(usageUrl(context, span, false), (page, count) =>
      setStatus(`Loading usage… page ${page}, ${count} rows`));
    if (context.route === "provider") {
      renderSubscribers(context, rows.map((row) => row.properties.subscriptionId.toLowerCase()));
    }
    drawUsage(rows, span, group);
    state.usageState = { context, span, details, pages: [usageUrl(context, span, details)], index: 0 };
    await showRowsPage();
    view.dataset.window = `${span.start}/${span.end}/${span.granularity}`;
    view.dataset.state = "ready";
    setStatus(`Usage from ${span.start} to ${span.end} (${span.granularity}): ` +
      `${rows.length} aggregated rows in ${pages} API page${pages === 1 ? "" : "s"}.`);
  } catch (error) {
    showProblem(error, retry, view);
  } finally {
    view.removeAttribute("aria-busy");
  }
}

export function seriesKey(row, group) {
  const p = row.properties;
  return group === "provider" ? (p.meterCategory || "Unknown provider") : p.meterId.toLowerCase();
}

export function drawUsage(rows, span, group) {
  // One chart per unit (quantities of different units never share an axis), stacked per
  // meter or per resource provider; the totals table is the same figures in words.
  const buckets = [...new Set(rows.map((row) => row.properties.usageStartTime))].sort();
  const units = new Map(); // unit -> Map(series -> {label, values: Map(bucket -> quantity)})
  const meters = new Map(); // meterId -> {name, category, unit, total}
  for (const row of rows) {
    const p = row.properties;
    const unit = p.unit || "unknown unit";
    const key = seriesKey(row, group);
    if (!units.has(unit)) units.set(unit, new Map());
    const series = units.get(unit);
    if (!series.has(key)) {
      series.set(key, { label: group === "provider" ? key : (p.meterName || p.meterId), values: new Map() });
    }
    const values = series.get(key).values;
    values.set(p.usageStartTime, (values.get(p.usageStartTime) || 0) + p.quantity);
    const meterId = p.meterId.toLowerCase();
    if (!meters.has(meterId)) {
      meters.set(meterId, { id: p.meterId, name: p.meterName || p.meterId, category: p.meterCategory || "", unit, total: 0 });
    }
    meters.get(meterId).total += p.quantity;
  }
  const labels = buckets.map((time) => bucketLabel(time, span.granularity));
  const container = $("charts");
  container.replaceChildren();
  for (const [unit, series] of [...units].sort(([a], [b]) => a.localeCompare(b))) {
    const figure = document.createElement("figure");
    figure.className = "chart";
    figure.dataset.unit = unit;
    const caption = document.createElement("figcaption");
    caption.textContent = `Usage in ${unit}, stacked by ${group === "provider" ? "resource provider" : "meter"}`;
    const holder = document.createElement("div");
    holder.className = "canvas";
    const canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `${caption.textContent}; the figures are in the totals table`);
    holder.append(canvas);
    figure.append(caption, holder);
    container.append(figure);
    const datasets = [...series.entries()]
      .sort(([, a], [, b]) => a.label.localeCompare(b.label))
      .map(([key, s]) => ({
        label: s.label,
        seriesKey: key,
        data: buckets.map((time) => s.values.get(time) || 0),
        backgroundColor: colourFor(key),
        stack: "usage",
      }));
    figure.dataset.series = JSON.stringify(datasets.map((d) => ({ key: d.seriesKey, label: d.label, total: sum(d.data) })));
    if (!window.Chart) continue; // the library is missing: the table still holds every figure
    state.charts.push(new window.Chart(canvas, {
      type: "bar",
      data: { labels, datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: {
          x: { stacked: true, title: { display: true, text: "usage time (UTC)" } },
          y: { stacked: true, beginAtZero: true, title: { display: true, text: unit } },
        },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      },
    }));
  }
  if (!window.Chart) setStatus("The chart library is missing from this deployment; the tables hold every figure.");
  const body = $("totals").tBodies[0];
  body.replaceChildren();
  for (const meter of [...meters.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    const tr = document.createElement("tr");
    tr.dataset.meterId = meter.id.toLowerCase();
    tr.dataset.total = String(meter.total);
    tr.dataset.unit = meter.unit;
    tr.append(cell(meter.name), cell(meter.category), cell(quantityText(meter.total, meter.unit), "num"));
    body.append(tr);
  }
  if (!meters.size) {
    const tr = document.createElement("tr");
    const td = cell("No usage was reported in this window.");
    td.colSpan = 3;
    tr.append(td);
    body.append(tr);
  }
}

export async function showRowsPage() {
  const paging = state.usageState;
  const url = paging.pages[paging.index];
  $("prev").disabled = $("next").disabled = $("csv").disabled = true;
  setStatus(`Loading page ${paging.index + 1} of the rows…`);
  const body = await (await api(url)).json();
  if (body.nextLink && paging.pages.length === paging.index + 1) paging.pages.push(body.nextLink);
  const tbody = $("rows").tBodies[0];
  tbody.replaceChildren();
  for (const row of body.value) {
    const p = row.properties;
    const tr = document.createElement("tr");
    tr.append(
      cell(p.subscriptionId),
      cell(p.usageStartTime.slice(0, 16).replace("T", " ")),
      cell(p.meterName || p.meterId),
      cell(quantityText(p.quantity, p.unit), "num"),
      cell(resourceOf(p), "resource"),
    );
    tbody.append(tr);
  }
  const more = paging.pages.length > paging.index + 1;
  $("page-label").textContent = `Page ${paging.index + 1}${more ? "" : " (last)"}, ${body.value.length} rows`;
  $("prev").disabled = paging.index === 0;
  $("next").disabled = !more;
  $("csv").disabled = false;
  $("rows").dataset.page = String(paging.index + 1);
}

export function resourceOf(properties) {
  if (!properties.instanceData) return "(all resources of the meter)";
  try {
    return JSON.parse(properties.instanceData)["Microsoft.Resources"].resourceUri || "";
  } catch {
    return "";
  }
}

export async function turnPage(step) {
  const view = $("usage-view");
  state.usageState.index += step;
  view.dataset.state = "loading";
  try {
    await showRowsPage();
    view.dataset.state = "ready";
    setStatus(`Rows page ${state.usageState.index + 1}.`);
  } catch (error) {
    state.usageState.index -= step;
    showProblem(error, () => turnPage(step), view);
  }
}

export async function downloadCsv() {
  // The API's own CSV for the table's query, every page (Link: rel="next"), one header row.
  const paging = state.usageState;
  const button = $("csv");
  button.disabled = true;
  setStatus("Preparing the CSV…");
  try {
    let next = paging.pages[0];
    let text = "";
    while (next) {
      const response = await api(next, "text/csv");
      const page = await response.text();
      text += text ? page.slice(page.indexOf("\r\n") + 2) : page;
      const link = /<([^>]+)>;\s*rel="next"/.exec(response.headers.get("Link") || "");
      next = link ? link[1] : null;
    }
    const blob = new Blob([text], { type: "text/csv" });
    const anchor = document.createElement("a");
    anchor.href = URL.createObjectURL(blob);
    const who = paging.context.subscriber || paging.context.id;
    anchor.download = `usage-${who}-${paging.span.from}-${paging.span.to}-${paging.span.granularity.toLowerCase()}.csv`;
    document.body.append(anchor);
    anchor.click();
    anchor.remove();
    setTimeout(() => URL.revokeObjectURL(anchor.href), 10_000);
    setStatus(`CSV downloaded: ${anchor.download}`);
    $("usage-view").dataset.csv = anchor.download;
  } catch (error) {
    showProblem(error, downloadCsv, $("usage-view"));
  } finally {
    button.disabled = false;
  }
}
