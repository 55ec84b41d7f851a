// The usage portal: one ES module, no framework, no build step.
//
// Everything it shows comes from the usage API (and the chargeback routes beside it),
// called from this page with the signed-in caller's own bearer token: the portal's requests
// are the API's requests, so it can show nothing the caller could not fetch with curl.
// The token lives in sessionStorage (this tab only) and memory; never in a URL or a log.

const API_VERSION = "2015-06-01-preview";
const SESSION_KEY = "usage-portal.session";
const OPENED_KEY = "usage-portal.opened";
const MAX_CHART_PAGES = 200; // 200,000 rows: beyond that, narrow the window
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const COLOURS = [
  "#0b5cad", "#d1495b", "#2a9d8f", "#e9a03b", "#6a4c93", "#3a86ff", "#8ac926", "#ff595e",
  "#577590", "#f3722c", "#43aa8b", "#b5179e", "#4d908e", "#f9c74f", "#90be6d", "#277da1",
];

const $ = (id) => document.getElementById(id);
const numberText = new Intl.NumberFormat("en-US", { maximumFractionDigits: 4 });

let config = { signIn: "none" };
let session = null; // {token, expiresAt, label, admin, subscriptions: [{id, route, name}]}
let msalApp = null;
let charts = [];
let usageState = null; // the table's paging: {pages: [url...], index}
let lastRetry = null;

// --- errors and states, in words ---------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

class SignInNeeded extends Error {}

class PageError extends Error {} // a choice the page cannot send to the API, said as is

function setStatus(text) {
  $("status").textContent = text;
}

function clearProblem() {
  $("problem").hidden = true;
  $("retry").hidden = true;
  lastRetry = null;
}

function showProblem(error, retry, view) {
  if (error instanceof SignInNeeded || (error instanceof ApiError && error.status === 401)) {
    signOut("Your sign-in has expired or is no longer valid. Sign in again to continue.");
    return;
  }
  let text;
  if (error instanceof PageError) {
    text = error.message;
  } else if (!(error instanceof ApiError)) {
    text = `Something went wrong in the page: ${error.message}`;
  } else if (error.status === 403) {
    text = "You are not allowed to read this subscription (403 " +
      `${error.code || "AuthorizationFailed"}). Choose a subscription you own or read.`;
  } else if (error.status === 503) {
    const wait = error.retryAfter ? ` in ${error.retryAfter} seconds` : " in a moment";
    text = `The service is busy (503 ${error.code || "ServiceUnavailable"}). ` +
      `Nothing is lost: retry${wait}.`;
  } else if (error.status === 0) {
    text = "The API could not be reached. Check your connection, then retry.";
  } else {
    text = `The API refused the request (${error.status} ${error.code}): ${error.message}`;
  }
  $("problem-text").textContent = text;
  $("problem").hidden = false;
  lastRetry = retry;
  $("retry").hidden = !retry || ![0, 503].includes(error.status);
  setStatus("");
  if (view) view.dataset.state = "error";
}

// --- session and sign-in -----------------------------------------------------------------

function claimsOf(token) {
  const part = token.split(".")[1] || "";
  const bytes = Uint8Array.from(atob(part.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

function loadSession() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY));
  } catch {
    return null;
  }
}

function saveSession(value) {
  session = value;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(value));
}

function signOut(message) {
  session = null;
  sessionStorage.removeItem(SESSION_KEY);
  destroyCharts();
  $("sign-in-message").textContent = message || "";
  $("sign-in-message").hidden = !message;
  if (location.hash !== "#sign-in") history.replaceState(null, "", "#sign-in");
  route();
}

async function currentToken() {
  if (!session) throw new SignInNeeded();
  if (Date.now() < session.expiresAt - 30_000) return session.token;
  if (config.signIn === "entra" && msalApp) {
    const account = msalApp.getAllAccounts()[0];
    try {
      const result = await msalApp.acquireTokenSilent({ scopes: config.scopes, account });
      saveSession({ ...session, token: result.accessToken, expiresAt: result.expiresOn.getTime() });
      return session.token;
    } catch {
      throw new SignInNeeded();
    }
  }
  throw new SignInNeeded();
}

async function showSignIn() {
  $("local-sign-in").hidden = config.signIn !== "local";
  $("entra-sign-in").hidden = config.signIn !== "entra";
  $("no-sign-in").hidden = config.signIn !== "none";
  if (config.signIn !== "local") return;
  const list = $("principals");
  if (list.childElementCount) return;
  const response = await fetch(`${config.localSignInUrl}/principals`, { cache: "no-store" });
  if (!response.ok) throw new ApiError(response.status, "", "the local sign-in is unavailable");
  for (const principal of (await response.json()).principals) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `Sign in as ${principal.label}`;
    button.dataset.principal = principal.key;
    button.addEventListener("click", () => localSignIn(principal.key));
    const role = document.createElement("span");
    role.className = "role";
    const what = principal.subscriptions.map((s) => `${s.route} ${s.id}`).join(", ");
    role.textContent = `${principal.admin ? "service admin" : principal.role}: ${what}`;
    item.append(button, role);
    list.append(item);
  }
}

async function localSignIn(key) {
  clearProblem();
  setStatus("Signing in…");
  const response = await fetch(`${config.localSignInUrl}/token`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ principal: key }),
    cache: "no-store",
  });
  if (!response.ok) {
    showProblem(new ApiError(response.status, "", "the local sign-in refused"), null);
    return;
  }
  const answer = await response.json();
  const claims = claimsOf(answer.accessToken);
  saveSession({
    token: answer.accessToken,
    expiresAt: claims.exp * 1000,
    label: answer.principal.label,
    admin: answer.principal.admin,
    subscriptions: answer.principal.subscriptions,
  });
  $("sign-in-message").hidden = true;
  location.hash = "#usage";
}

async function startEntra() {
  await loadScript("vendor/msal-browser.min.js");
  const redirectUri = `${location.origin}${location.pathname}`;
  msalApp = new window.msal.PublicClientApplication({
    auth: { clientId: config.clientId, authority: config.authority, redirectUri },
    cache: { cacheLocation: "sessionStorage" },
  });
  await msalApp.initialize();
  const result = await msalApp.handleRedirectPromise();
  const account = result?.account || msalApp.getAllAccounts()[0];
  $("entra-button").addEventListener("click", () =>
    msalApp.loginRedirect({ scopes: config.scopes }));
  if (!account || session) return;
  try {
    const token = result?.accessToken
      ? result : await msalApp.acquireTokenSilent({ scopes: config.scopes, account });
    const claims = claimsOf(token.accessToken);
    saveSession({
      token: token.accessToken,
      expiresAt: token.expiresOn.getTime(),
      label: account.username || account.name || "you",
      admin: (claims.roles || []).includes(config.adminRole),
      subscriptions: [],
    });
  } catch {
    // No silent token: the sign-in button stays, as for a first visit.
  }
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`${src} could not be loaded`));
    document.head.append(script);
  });
}

// --- the API -----------------------------------------------------------------------------

async function api(url, accept = "application/json") {
  const target = new URL(url, location.href);
  if (target.origin !== location.origin) {
    // nextLink and Link come from the API; a token is never sent anywhere else.
    throw new ApiError(0, "ForeignLink", "the API named a link on another origin");
  }
  const token = await currentToken();
  let response;
  try {
    response = await fetch(target, {
      headers: { Authorization: `Bearer ${token}`, Accept: accept },
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
  } catch {
    throw new ApiError(0, "NetworkError", "");
  }
  if (response.ok) return response;
  let code = response.headers.get("x-ms-error-code") || "";
  let message = "";
  try {
    const body = await response.json();
    code = body.error?.code || code;
    message = body.error?.message || "";
  } catch {
    // not JSON (a host page): the status says enough
  }
  const retryAfter = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  throw new ApiError(response.status, code, message, Number.isNaN(retryAfter) ? null : retryAfter);
}

function usagePath(context) {
  const id = encodeURIComponent(context.id);
  return context.route === "provider"
    ? `/subscriptions/${id}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates`
    : `/subscriptions/${id}/providers/Microsoft.Commerce/usageAggregates`;
}

function usageUrl(context, span, showDetails) {
  const params = new URLSearchParams({
    "api-version": API_VERSION,
    reportedStartTime: span.start,
    reportedEndTime: span.end,
    aggregationGranularity: span.granularity,
    showDetails: String(showDetails),
  });
  if (context.route === "provider" && context.subscriber) {
    params.set("subscriberId", context.subscriber);
  }
  return `${usagePath(context)}?${params}`;
}

// --- navigation ----------------------------------------------------------------------------

function hashState() {
  const [view, query] = location.hash.replace(/^#/, "").split("?");
  return { view: view || "usage", params: new URLSearchParams(query || "") };
}

function setHash(view, params) {
  const text = `#${view}?${params}`;
  if (location.hash !== text) location.hash = text;
  else route();
}

function knownSubscriptions() {
  let opened = [];
  try {
    opened = JSON.parse(sessionStorage.getItem(OPENED_KEY)) || [];
  } catch {
    opened = [];
  }
  const all = [...(session?.subscriptions || []), ...opened];
  const seen = new Set();
  return all.filter((s) => {
    const key = `${s.route}:${s.id}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function currentContext(params) {
  const known = knownSubscriptions();
  const wanted = params.get("context");
  let chosen = known.find((s) => `${s.route}:${s.id}` === wanted) || known[0] || null;
  if (!chosen && wanted) {
    const [routeName, id] = wanted.split(":");
    if (["tenant", "provider"].includes(routeName) && GUID.test(id || "")) {
      chosen = { route: routeName, id, name: id };
    }
  }
  if (!chosen) return null;
  const subscriber = (params.get("subscriber") || "").toLowerCase();
  return { ...chosen, subscriber: GUID.test(subscriber) ? subscriber : "" };
}

function renderContext(context) {
  const select = $("context");
  select.replaceChildren();
  for (const s of knownSubscriptions()) {
    const option = document.createElement("option");
    option.value = `${s.route}:${s.id}`;
    option.textContent = `${s.name} (${s.route === "provider" ? "provider" : "tenant"} ${s.id})`;
    select.append(option);
  }
  if (context) select.value = `${context.route}:${context.id}`;
  $("subscriber-field").hidden = !context || context.route !== "provider";
  $("providers-tab").hidden = !context || context.route !== "provider";
}

function renderSubscribers(context, subscriptionIds) {
  const select = $("subscriber");
  const ids = [...new Set([...subscriptionIds, context.subscriber].filter(Boolean))].sort();
  select.replaceChildren(new Option("All direct tenants", ""));
  for (const id of ids) select.append(new Option(id, id));
  select.value = context.subscriber || "";
}

function route() {
  const { view, params } = hashState();
  const signedIn = Boolean(session);
  $("who").hidden = !signedIn;
  $("tabs").hidden = !signedIn;
  $("context-bar").hidden = !signedIn;
  for (const id of ["sign-in-view", "usage-view", "charges-view", "providers-view"]) {
    $(id).hidden = true;
  }
  if (!signedIn) {
    $("sign-in-view").hidden = false;
    setStatus("Not signed in.");
    showSignIn().catch((error) => showProblem(error, () => showSignIn()));
    return;
  }
  $("who-name").textContent = session.label;
  const name = ["usage", "charges", "providers"].includes(view) ? view : "usage";
  for (const tab of document.querySelectorAll("#tabs a")) {
    if (tab.dataset.view === name) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
    tab.href = `#${tab.dataset.view}?${params}`;
  }
  const context = currentContext(params);
  renderContext(context);
  const section = $(`${name}-view`);
  section.hidden = false;
  clearProblem();
  if (!context) {
    setStatus("Open a subscription to begin.");
    return;
  }
  if (name === "usage") showUsage(context, params);
  else if (name === "charges") showCharges(context, params);
  else showProviders(context, params);
}

function navigate(changes) {
  const { view, params } = hashState();
  for (const [key, value] of Object.entries(changes)) {
    if (value) params.set(key, value);
    else params.delete(key);
  }
  setHash(view === "sign-in" ? "usage" : view, params);
}

// --- usage -------------------------------------------------------------------------------

function utcDay(offsetDays) {
  const day = new Date();
  day.setUTCHours(0, 0, 0, 0);
  day.setUTCDate(day.getUTCDate() + offsetDays);
  return day.toISOString().slice(0, 10);
}

function usageWindow(params) {
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

async function allPages(url, onPage) {
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

async function showUsage(context, params) {
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
    usageState = { context, span, details, pages: [usageUrl(context, span, details)], index: 0 };
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

function seriesKey(row, group) {
  const p = row.properties;
  return group === "provider" ? (p.meterCategory || "Unknown provider") : p.meterId.toLowerCase();
}

function drawUsage(rows, span, group) {
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
  let colour = 0;
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
        backgroundColor: COLOURS[colour++ % COLOURS.length],
        stack: "usage",
      }));
    figure.dataset.series = JSON.stringify(datasets.map((d) => ({ key: d.seriesKey, label: d.label, total: sum(d.data) })));
    if (!window.Chart) continue; // the library is missing: the table still holds every figure
    charts.push(new window.Chart(canvas, {
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
    tr.append(cell(meter.name), cell(meter.category), cell(numberText.format(meter.total), "num"), cell(meter.unit));
    body.append(tr);
  }
  if (!meters.size) {
    const tr = document.createElement("tr");
    const td = cell("No usage was reported in this window.");
    td.colSpan = 4;
    tr.append(td);
    body.append(tr);
  }
}

function sum(values) {
  return values.reduce((total, value) => total + value, 0);
}

function bucketLabel(time, granularity) {
  return granularity === "Daily" ? time.slice(0, 10) : `${time.slice(5, 10)} ${time.slice(11, 16)}`;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function destroyCharts() {
  for (const chart of charts) chart.destroy();
  charts = [];
}

async function showRowsPage() {
  const state = usageState;
  const url = state.pages[state.index];
  $("prev").disabled = $("next").disabled = $("csv").disabled = true;
  setStatus(`Loading page ${state.index + 1} of the rows…`);
  const body = await (await api(url)).json();
  if (body.nextLink && state.pages.length === state.index + 1) state.pages.push(body.nextLink);
  const tbody = $("rows").tBodies[0];
  tbody.replaceChildren();
  for (const row of body.value) {
    const p = row.properties;
    const tr = document.createElement("tr");
    tr.append(
      cell(p.subscriptionId),
      cell(p.usageStartTime.slice(0, 16).replace("T", " ")),
      cell(p.meterName || p.meterId),
      cell(numberText.format(p.quantity), "num"),
      cell(p.unit || ""),
      cell(resourceOf(p), "resource"),
    );
    tbody.append(tr);
  }
  const more = state.pages.length > state.index + 1;
  $("page-label").textContent = `Page ${state.index + 1}${more ? "" : " (last)"}, ${body.value.length} rows`;
  $("prev").disabled = state.index === 0;
  $("next").disabled = !more;
  $("csv").disabled = false;
  $("rows").dataset.page = String(state.index + 1);
}

function resourceOf(properties) {
  if (!properties.instanceData) return "(all resources of the meter)";
  try {
    return JSON.parse(properties.instanceData)["Microsoft.Resources"].resourceUri || "";
  } catch {
    return "";
  }
}

async function turnPage(step) {
  const view = $("usage-view");
  usageState.index += step;
  view.dataset.state = "loading";
  try {
    await showRowsPage();
    view.dataset.state = "ready";
    setStatus(`Rows page ${usageState.index + 1}.`);
  } catch (error) {
    usageState.index -= step;
    showProblem(error, () => turnPage(step), view);
  }
}

async function downloadCsv() {
  // The API's own CSV for the table's query, every page (Link: rel="next"), one header row.
  const state = usageState;
  const button = $("csv");
  button.disabled = true;
  setStatus("Preparing the CSV…");
  try {
    let next = state.pages[0];
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
    const who = state.context.subscriber || state.context.id;
    anchor.download = `usage-${who}-${state.span.from}-${state.span.to}-${state.span.granularity.toLowerCase()}.csv`;
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

// --- charges: the chargeback routes (README, "The usage portal", names each one) -----------
//
// Money arrives as exact decimal text and is shown as it arrives; only a bar's length is
// ever computed from it (Number), never a figure someone reads.

const RATE_CARD_FILTER = (currency) =>
  `OfferDurableId eq 'MS-AZR-0003P' and Currency eq '${currency}' and Locale eq 'en-US' and RegionInfo eq 'US'`;

function monthOf(params) {
  const month = params.get("month") || "";
  return /^\d{4}-\d{2}$/.test(month) ? month : new Date().toISOString().slice(0, 7);
}

function chargesUrl(path, extra = {}) {
  return `${path}?${new URLSearchParams({ "api-version": API_VERSION, ...extra })}`;
}

function statementUrl(id, month) {
  return chargesUrl(`/subscriptions/${encodeURIComponent(id)}/providers/Microsoft.Commerce/statements/${month}`);
}

function rollupUrl(providerId, month, subscriber) {
  const path = `/subscriptions/${encodeURIComponent(providerId)}/providers/Microsoft.Commerce.Admin/subscriberStatements/${month}`;
  return chargesUrl(path, subscriber ? { subscriberId: subscriber } : {});
}

function rateCardUrl(id, currency) {
  return chargesUrl(`/subscriptions/${encodeURIComponent(id)}/providers/Microsoft.Commerce/RateCard`, {
    $filter: RATE_CARD_FILTER(currency),
  });
}

function money(amount, currency) {
  return `${amount} ${currency || ""}`.trim();
}

function heading(level, text) {
  const h = document.createElement(`h${level}`);
  h.textContent = text;
  return h;
}

function table(caption, columns, rows, numeric = []) {
  const wrap = document.createElement("div");
  wrap.className = "scroll";
  const t = document.createElement("table");
  const c = document.createElement("caption");
  c.className = "hint";
  c.textContent = caption;
  const head = document.createElement("tr");
  for (const column of columns) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = column;
    if (numeric.includes(column)) th.className = "num";
    head.append(th);
  }
  const thead = document.createElement("thead");
  thead.append(head);
  const tbody = document.createElement("tbody");
  for (const row of rows) {
    const tr = document.createElement("tr");
    row.cells.forEach((text, index) => tr.append(cell(text, numeric.includes(columns[index]) ? "num" : "")));
    for (const [key, value] of Object.entries(row.data || {})) tr.dataset[key] = value;
    tbody.append(tr);
  }
  t.append(c, thead, tbody);
  wrap.append(t);
  return wrap;
}

function badge(status) {
  const span = document.createElement("span");
  span.className = `badge ${status}`;
  span.textContent = status === "final" ? "final" : "provisional (the month is still open)";
  return span;
}

function statementBlock(title, statement) {
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
      line.quantity,
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

async function showCharges(context, params) {
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

async function showProviders(context, params) {
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
      charts.push(new window.Chart(canvas, {
        type: "bar",
        data: {
          labels: top.map((t) => t.displayName || t.subscriptionId),
          datasets: [{ label: `Total (${current.currency || "no currency"})`, data: top.map((t) => Number(t.total)), backgroundColor: COLOURS[0] }],
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

function paragraph(text) {
  const p = document.createElement("p");
  p.textContent = text;
  return p;
}

// --- wiring ------------------------------------------------------------------------------

function wire() {
  window.addEventListener("hashchange", route);
  $("sign-out").addEventListener("click", () => {
    if (config.signIn === "entra" && msalApp) {
      sessionStorage.removeItem(SESSION_KEY);
      msalApp.logoutRedirect({ postLogoutRedirectUri: `${location.origin}${location.pathname}` });
      return;
    }
    signOut("You signed out.");
  });
  $("retry").addEventListener("click", () => {
    const retry = lastRetry;
    clearProblem();
    if (retry) retry();
  });
  $("context").addEventListener("change", (event) =>
    navigate({ context: event.target.value, subscriber: "" }));
  $("subscriber").addEventListener("change", (event) =>
    navigate({ subscriber: event.target.value }));
  $("open-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("open-id").value.trim().toLowerCase();
    if (!GUID.test(id)) return;
    const opened = JSON.parse(sessionStorage.getItem(OPENED_KEY) || "[]");
    const routeName = $("open-route").value === "provider" ? "provider" : "tenant";
    opened.push({ id, route: routeName, name: id });
    sessionStorage.setItem(OPENED_KEY, JSON.stringify(opened));
    navigate({ context: `${routeName}:${id}`, subscriber: "" });
  });
  $("usage-form").addEventListener("submit", (event) => {
    event.preventDefault();
    navigate({
      from: $("from").value,
      to: $("to").value,
      granularity: $("granularity").value,
      group: $("group").value,
      details: $("details").checked ? "true" : "",
    });
  });
  $("charges-form").addEventListener("submit", (event) => {
    event.preventDefault();
    navigate({ month: $("month").value });
  });
  $("providers-form").addEventListener("submit", (event) => {
    event.preventDefault();
    navigate({ month: $("providers-month").value });
  });
  $("prev").addEventListener("click", () => turnPage(-1));
  $("next").addEventListener("click", () => turnPage(1));
  $("csv").addEventListener("click", downloadCsv);
}

async function start() {
  wire();
  try {
    const response = await fetch("config.json", { cache: "no-cache" });
    config = await response.json();
    session = loadSession();
    if (config.signIn === "entra") await startEntra();
  } catch (error) {
    showProblem(error, null);
  }
  route();
}

start();
