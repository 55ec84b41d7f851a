// The Charges and Providers tabs: statements, the rate card and the roll-ups.

import { colourFor, destroyCharts } from "./charts.js";
import { badge, heading, paragraph, table } from "./dom.js";
import { money, quantityText } from "./format.js";
import { knownSubscriptions } from "./context.js";
import { api, setStatus, showProblem } from "./session-api.js";
import { $, API_VERSION, state } from "./state.js";

// --- charges: the chargeback routes (README, "The usage portal", names each one) -----------
//
// Money arrives as exact decimal text and is shown as it arrives; only a bar's length is
// ever computed from it (Number), never a figure someone reads.

export const RATE_CARD_FILTER = (currency) =>
  `OfferDurableId eq 'MS-AZR-0003P' and Currency eq '${currency}' and Locale eq 'en-US' and RegionInfo eq 'US'`;

export function monthOf(params) {
  const month = params.get("month") || "";
  return /^\d{4}-\d{2}$/.test(month) ? month : new Date().toISOString().slice(0, 7);
}

export function chargesUrl(path, extra = {}) {
  return `${path}?${new URLSearchParams({ "api-version": API_VERSION, ...extra })}`;
}

export function statementUrl(id, month) {
  return chargesUrl(`/subscriptions/${encodeURIComponent(id)}/providers/Microsoft.Commerce/statements/${month}`);
}

export function rollupUrl(providerId, month, subscriber) {
  const path = `/subscriptions/${encodeURIComponent(providerId)}/providers/Microsoft.Commerce.Admin/subscriberStatements/${month}`;
  return chargesUrl(path, subscriber ? { subscriberId: subscriber } : {});
}

export function rateCardUrl(id, currency) {
  return chargesUrl(`/subscriptions/${encodeURIComponent(id)}/providers/Microsoft.Commerce/RateCard`, {
    $filter: RATE_CARD_FILTER(currency),
  });
}

export function statementBlock(title, statement) {
  const block = document.createElement("div");
  block.className = "statement";
  block.dataset.subscription = statement.subscriptionId;
  block.dataset.level = statement.level;
  block.dataset.status = statement.status;
  block.dataset.total = statement.total;
  block.dataset.currency = statement.currency || "";
  const h = heading(3, `${title} `);
  h.append(badge(statement.status));
  const cards = document.createElement("div");
  cards.className = "cards";
  for (const [label, value] of [
    ["Total", money(statement.total, statement.currency)],
    ["List price total", money(statement.listTotal, statement.currency)],
    ["Rows rated", String(statement.rows)],
    ["Reported", `${statement.reportedPeriod.start.slice(0, 10)} to ${statement.reportedPeriod.end.slice(0, 10)}`],
  ]) {
    const card = document.createElement("div");
    card.className = "card";
    card.append(paragraph(label), Object.assign(document.createElement("div"), { className: "value", textContent: value }));
    cards.append(card);
  }
  const lines = statement.lines.map((line) => ({
    cells: [
      line.meterName,
      `${line.usagePeriod.month}${line.late ? " (late)" : ""}`,
      quantityText(line.quantity),
      line.unit,
      line.priced ? line.unitPrices.join(" / ") : "not priced",
      line.amount,
    ],
    data: { meterId: line.meterId.toLowerCase(), amount: line.amount },
  }));
  block.append(
    h,
    cards,
    table(`${statement.lines.length} lines in ${statement.currency || "no currency"}; ` +
      `sheets: ${statement.sheetVersions.join(", ") || "none"}`,
      ["Meter", "Usage month", "Quantity", "Unit", "Unit price", "Amount"],
      lines, ["Quantity", "Unit price", "Amount"]),
  );
  // Credits, corrections and one-off charges: lines of their own, in the total.
  if (statement.adjustments.length) {
    block.append(table(`${statement.adjustments.length} adjustments (${money(statement.adjustmentsTotal, statement.currency)})`,
      ["Category", "Reason", "Corrects", "Added by", "Amount"],
      statement.adjustments.map((adjustment) => ({
        cells: [adjustment.category, adjustment.reason, adjustment.corrects || "-",
          `${adjustment.createdBy}, ${adjustment.createdAt.slice(0, 10)}`, adjustment.amount],
        data: { adjustmentId: adjustment.id, adjustmentAmount: adjustment.amount },
      })),
      ["Amount"]));
  }
  return block;
}

export async function showCharges(context, params) {
  const view = $("charges-view");
  const month = monthOf(params);
  $("month").value = month;
  view.dataset.state = "loading";
  const statementArea = $("statement");
  const rateArea = $("rate-card");
  statementArea.replaceChildren();
  rateArea.replaceChildren();
  const retry = () => showCharges(context, params);
  try {
    setStatus(`Loading the statement for ${month}…`);
    if (context.route === "provider") {
      if (!context.subscriber) {
        statementArea.append(paragraph("Choose a tenant subscription above for its statement; " +
          "the Providers tab shows the month's costs per tenant and per provider."));
      } else {
        const answer = await (await api(rollupUrl(context.id, month, context.subscriber))).json();
        statementArea.append(statementBlock(`Statement of ${context.subscriber}`, answer.statement));
        if (answer.wholesaleStatement) {
          statementArea.append(statementBlock("What you pay for it (wholesale)", answer.wholesaleStatement));
        }
        rateArea.append(paragraph("A tenant's rate card is read by its owners and the service admin."));
      }
    } else {
      const statement = await (await api(statementUrl(context.id, month))).json();
      statementArea.append(statementBlock(`Statement for ${month}`, statement));
      if (statement.currency) {
        setStatus("Loading the rate card…");
        const card = await (await api(rateCardUrl(context.id, statement.currency))).json();
        rateArea.append(heading(3, `Rate card (${card.Currency}, prices in effect now)`));
        rateArea.append(table(`${card.Meters.length} meters; taxes ${card.IsTaxIncluded ? "included" : "not included"}`,
          ["Meter", "Resource provider", "Unit", "Included quantity", "Rates (from quantity: price)", "Effective"],
          card.Meters.map((meter) => ({
            cells: [
              meter.MeterName,
              meter.MeterCategory,
              meter.Unit,
              String(meter.IncludedQuantity),
              Object.entries(meter.MeterRates).map(([from, price]) => `${from}: ${price}`).join("; "),
              meter.EffectiveDate.slice(0, 10),
            ],
            data: { meterId: meter.MeterId.toLowerCase() },
          })),
          ["Included quantity"]));
      } else {
        rateArea.append(paragraph("No price sheet applies to this subscription yet."));
      }
    }
    view.dataset.state = "ready";
    view.dataset.month = month;
    setStatus(`Charges for ${month}.`);
  } catch (error) {
    showProblem(error, retry, view);
  }
}

export async function showProviders(context, params) {
  const view = $("providers-view");
  const month = monthOf(params);
  $("providers-month").value = month;
  view.dataset.state = "loading";
  const totalsArea = $("provider-totals");
  const topArea = $("top-subscriptions");
  totalsArea.replaceChildren();
  topArea.replaceChildren();
  destroyCharts();
  const retry = () => showProviders(context, params);
  try {
    // Per-provider totals: every provider subscription this caller opens (the admin: all).
    const providers = knownSubscriptions().filter((s) => s.route === "provider");
    const rollups = [];
    for (const provider of providers) {
      setStatus(`Loading the ${month} roll-up of ${provider.name}…`);
      rollups.push([provider, await (await api(rollupUrl(provider.id, month))).json()]);
    }
    // One definition of a provider's money, named by the API's labels (as the CLI and
    // the run summary name it): direct tenants, wholesale and margin, resellers, total.
    const figures = ["directTenantsTotal", "wholesaleTotal", "margin", "resellersTotal", "grandTotal"];
    const labels = rollups.length ? rollups[0][1].labels : {};
    totalsArea.append(heading(3, `Totals per provider, ${month}`));
    totalsArea.append(table("Each provider's month: what its direct tenants are charged; a delegated provider's wholesale and margin; the default provider's wholesale from delegated providers",
      ["Provider", "Status", "Tenants", ...figures.map((key) => labels[key])],
      rollups.map(([provider, rollup]) => ({
        cells: [provider.name, rollup.status, String(rollup.tenants.length),
          ...figures.map((key) => rollup[key] === null ? "-" : money(rollup[key], rollup.currency))],
        data: { provider: provider.id, total: rollup.grandTotal },
      })),
      ["Tenants", ...figures.map((key) => labels[key])]));
    // The admin's whole cloud: every tenant once, at what it is charged.
    const cloud = rollups.map(([, rollup]) => rollup.cloud).find(Boolean);
    if (cloud) {
      const line = paragraph(`${cloud.labels.cloudTotal}: ${money(cloud.cloudTotal, cloud.currency)} (${cloud.status})`);
      line.id = "cloud-total";
      line.dataset.total = cloud.cloudTotal;
      totalsArea.append(line);
    }
    // Top subscriptions by cost: the current provider's roll-up, largest first.
    const current = rollups.find(([provider]) => provider.id === context.id)?.[1] ||
      await (await api(rollupUrl(context.id, month))).json();
    const top = [...current.tenants].sort((a, b) => Number(b.total) - Number(a.total)).slice(0, 10);
    topArea.append(heading(3, `Top subscriptions by cost, ${month}`));
    const figure = document.createElement("figure");
    figure.className = "chart";
    const holder = document.createElement("div");
    holder.className = "canvas";
    const canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", "Top subscriptions by cost; the figures are in the table below");
    holder.append(canvas);
    figure.append(holder);
    topArea.append(figure);
    if (window.Chart && top.length) {
      state.charts.push(new window.Chart(canvas, {
        type: "bar",
        data: {
          labels: top.map((t) => t.displayName || t.subscriptionId),
          datasets: [{ label: `Total (${current.currency || "no currency"})`, data: top.map((t) => Number(t.total)), backgroundColor: colourFor("total") }],
        },
        options: { animation: false, indexAxis: "y", responsive: true, maintainAspectRatio: false },
      }));
    }
    topArea.append(table(`The ${top.length} largest of ${current.tenants.length} tenants`,
      ["Subscription", "Id", "Status", "Total"],
      top.map((t) => ({
        cells: [t.displayName, t.subscriptionId, t.status, money(t.total, current.currency)],
        data: { subscription: t.subscriptionId.toLowerCase(), total: t.total },
      })),
      ["Total"]));
    view.dataset.state = "ready";
    view.dataset.month = month;
    setStatus(`Costs for ${month}.`);
  } catch (error) {
    showProblem(error, retry, view);
  }
}
