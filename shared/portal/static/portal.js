// The usage portal's entry: navigation (the URL holds the view's state) and wiring.
// ES modules by concern, no framework, no build step: session-api.js (sign-in and the
// API), format.js and dom.js (figures and tables), charts.js, and one module per view.

import { showCharges, showProviders } from "./charges-view.js";
import { showCost } from "./cost-view.js";
import { showHealth } from "./health-view.js";
import {
  clearProblem, loadSession, readableSubscriptions, setStatus, showProblem, showSignIn,
  signOut, startEntra,
} from "./session-api.js";
import { currentContext, knownSubscriptions, renderContext } from "./context.js";
import { $, GUID, LISTED_KEY, OPENED_KEY, SESSION_KEY, state } from "./state.js";
import { downloadCsv, showUsage, turnPage } from "./usage-view.js";

// --- navigation ----------------------------------------------------------------------------

function hashState() {
  const [view, query] = location.hash.replace(/^#/, "").split("?");
  return { view: view || "cost", params: new URLSearchParams(query || "") };
}

function setHash(view, params) {
  const text = `#${view}?${params}`;
  if (location.hash !== text) location.hash = text;
  else state.route();
}


const VIEWS = ["cost", "usage", "charges", "providers", "health"];

// Names for the picker, and every subscription a tenant may read, from the subscriptions
// list (GET /subscriptions), once per session. The admin keeps the provider subscriptions
// the sign-in names (the admin may read every subscription: the list would be the fleet).
async function listSubscriptions() {
  if (!state.session || state.listing || sessionStorage.getItem(LISTED_KEY)) return;
  state.listing = true;
  try {
    const listed = (await readableSubscriptions()).map((item) => ({
      id: item.subscriptionId.toLowerCase(),
      route: item.tags?.usageRole === "provider" ? "provider" : "tenant",
      name: item.displayName,
    }));
    if (!state.session) return;
    sessionStorage.setItem(LISTED_KEY, JSON.stringify(listed));
    renderContext(currentContext(hashState().params));
  } catch {
    state.listing = false; // the sign-in's subscriptions still work; read it again later
  }
}

function route() {
  const { view, params } = hashState();
  const signedIn = Boolean(state.session);
  $("who").hidden = !signedIn;
  $("tabs").hidden = !signedIn;
  $("context-bar").hidden = !signedIn;
  for (const id of ["sign-in-view", ...VIEWS.map((v) => `${v}-view`)]) {
    $(id).hidden = true;
  }
  if (!signedIn) {
    $("sign-in-view").hidden = false;
    setStatus("Not signed in.");
    showSignIn().catch((error) => showProblem(error, () => showSignIn()));
    return;
  }
  $("who-name").textContent = state.session.label;
  const admin = Boolean(state.session.admin);
  $("health-tab").hidden = !admin;
  const name = VIEWS.includes(view) && (view !== "health" || admin) ? view : "cost";
  listSubscriptions();
  for (const tab of document.querySelectorAll("#tabs a")) {
    if (tab.dataset.view === name) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
    tab.href = `#${tab.dataset.view}?${params}`;
  }
  const context = currentContext(params);
  renderContext(context);
  const section = $(`${name}-view`);
  // On a phone the filters fold away (before the view shows: nothing moves).
  if (name === "cost" && !section.dataset.folded) {
    section.dataset.folded = "true";
    $("cost-controls").open = !window.matchMedia("(max-width: 600px)").matches;
  }
  section.hidden = false;
  if (state.focusHeading) {
    // Just signed in: focus moves to the view's heading, not to the body.
    state.focusHeading = false;
    section.querySelector("h2")?.focus();
  }
  clearProblem();
  if (name === "health") {
    showHealth();
    return;
  }
  if (!context) {
    setStatus("Open a subscription to begin.");
    return;
  }
  if (name === "cost") showCost(context, params);
  else if (name === "usage") showUsage(context, params);
  else if (name === "charges") showCharges(context, params);
  else showProviders(context, params);
}

function navigate(changes) {
  const { view, params } = hashState();
  for (const [key, value] of Object.entries(changes)) {
    if (value) params.set(key, value);
    else params.delete(key);
  }
  setHash(view === "sign-in" ? "cost" : view, params);
}

// --- wiring ------------------------------------------------------------------------------

function wire() {
  window.addEventListener("hashchange", route);
  $("sign-out").addEventListener("click", () => {
    if (state.config.signIn === "entra" && state.msalApp) {
      sessionStorage.removeItem(SESSION_KEY);
      state.msalApp.logoutRedirect({ postLogoutRedirectUri: `${location.origin}${location.pathname}` });
      return;
    }
    signOut("You signed out.");
  });
  $("retry").addEventListener("click", () => {
    const retry = state.lastRetry;
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
  $("cost-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const preset = $("cost-preset").value;
    navigate({
      preset,
      from: preset === "custom" ? $("cost-from").value : "",
      to: preset === "custom" ? $("cost-to").value : "",
      by: $("cost-by").value,
      fdim: $("cost-fdim").value,
      fval: $("cost-fdim").value ? $("cost-fval").value.trim() : "",
    });
  });
  $("cost-preset").addEventListener("change", () => {
    $("cost-custom").hidden = $("cost-preset").value !== "custom";
  });
  $("cost-search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    navigate({ q: $("cost-search").value.trim() });
  });
  $("prev").addEventListener("click", () => turnPage(-1));
  $("next").addEventListener("click", () => turnPage(1));
  $("csv").addEventListener("click", downloadCsv);
}

async function start() {
  state.route = route;
  wire();
  // The signed-in frame shows at once (the session is in this tab), not after config.json:
  // nothing above the view moves when the view arrives.
  const early = loadSession();
  if (early) {
    $("who-name").textContent = early.label;
    for (const id of ["who", "tabs", "context-bar"]) $(id).hidden = false;
  }
  try {
    const response = await fetch("config.json", { cache: "no-cache" });
    state.config = await response.json();
    state.session = loadSession();
    if (state.config.signIn === "entra") await startEntra();
  } catch (error) {
    showProblem(error, null);
  }
  state.route();
}

start();
