// Session, sign-in and the API: the caller's token, the requests the page makes with it,
// and what an error says in words.

import { destroyCharts } from "./charts.js";
import { $, API_VERSION, LISTED_KEY, SESSION_KEY, state } from "./state.js";

// --- errors and states, in words ---------------------------------------------------------

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export class SignInNeeded extends Error {}

export class PageError extends Error {} // a choice the page cannot send to the API, said as is

export function setStatus(text) {
  $("status").textContent = text;
}

export function clearProblem() {
  $("problem").hidden = true;
  $("retry").hidden = true;
  state.lastRetry = null;
}

export function showProblem(error, retry, view) {
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
  state.lastRetry = retry;
  $("retry").hidden = !retry || ![0, 503].includes(error.status);
  setStatus("");
  if (view) view.dataset.state = "error";
}

// --- session and sign-in -----------------------------------------------------------------

export function claimsOf(token) {
  const part = token.split(".")[1] || "";
  const bytes = Uint8Array.from(atob(part.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

export function loadSession() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY));
  } catch {
    return null;
  }
}

export function saveSession(value) {
  state.session = value;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(value));
}

export function signOut(message) {
  state.session = null;
  state.listing = false;
  sessionStorage.removeItem(SESSION_KEY);
  sessionStorage.removeItem(LISTED_KEY);
  destroyCharts();
  $("sign-in-message").textContent = message || "";
  $("sign-in-message").hidden = !message;
  if (location.hash !== "#sign-in") history.replaceState(null, "", "#sign-in");
  state.route();
}

export async function currentToken() {
  if (!state.session) throw new SignInNeeded();
  if (Date.now() < state.session.expiresAt - 30_000) return state.session.token;
  if (state.config.signIn === "entra" && state.msalApp) {
    const account = state.msalApp.getAllAccounts()[0];
    try {
      const result = await state.msalApp.acquireTokenSilent({ scopes: state.config.scopes, account });
      saveSession({ ...state.session, token: result.accessToken, expiresAt: result.expiresOn.getTime() });
      return state.session.token;
    } catch {
      throw new SignInNeeded();
    }
  }
  throw new SignInNeeded();
}

export async function showSignIn() {
  $("local-sign-in").hidden = state.config.signIn !== "local";
  $("entra-sign-in").hidden = state.config.signIn !== "entra";
  $("no-sign-in").hidden = state.config.signIn !== "none";
  if (state.config.signIn !== "local") return;
  const list = $("principals");
  if (list.childElementCount) return;
  const response = await fetch(`${state.config.localSignInUrl}/principals`, { cache: "no-store" });
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

export async function localSignIn(key) {
  clearProblem();
  setStatus("Signing in…");
  const response = await fetch(`${state.config.localSignInUrl}/token`, {
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
  state.focusHeading = true; // the view's heading takes focus once it shows (route)
  location.hash = "#cost";
}

export async function startEntra() {
  await loadScript("vendor/msal-browser.min.js");
  const redirectUri = `${location.origin}${location.pathname}`;
  state.msalApp = new window.msal.PublicClientApplication({
    auth: { clientId: state.config.clientId, authority: state.config.authority, redirectUri },
    cache: { cacheLocation: "sessionStorage" },
  });
  await state.msalApp.initialize();
  const result = await state.msalApp.handleRedirectPromise();
  const account = result?.account || state.msalApp.getAllAccounts()[0];
  $("entra-button").addEventListener("click", () =>
    state.msalApp.loginRedirect({ scopes: state.config.scopes }));
  if (!account || state.session) return;
  try {
    const token = result?.accessToken
      ? result : await state.msalApp.acquireTokenSilent({ scopes: state.config.scopes, account });
    const claims = claimsOf(token.accessToken);
    saveSession({
      token: token.accessToken,
      expiresAt: token.expiresOn.getTime(),
      label: account.username || account.name || "you",
      admin: (claims.roles || []).includes(state.config.adminRole),
      subscriptions: [],
    });
  } catch {
    // No silent token: the sign-in button stays, as for a first visit.
  }
}

export function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`${src} could not be loaded`));
    document.head.append(script);
  });
}

// --- the API -----------------------------------------------------------------------------

// One request of the API with the caller's token (a GET, or a POST of ``body`` as JSON for
// the cost query), on this origin only.
export async function api(url, accept = "application/json", body = null) {
  const target = new URL(url, location.href);
  if (target.origin !== location.origin) {
    // nextLink and Link come from the API; a token is never sent anywhere else.
    throw new ApiError(0, "ForeignLink", "the API named a link on another origin");
  }
  const token = await currentToken();
  let response;
  try {
    const headers = { Authorization: `Bearer ${token}`, Accept: accept };
    if (body !== null) headers["Content-Type"] = "application/json";
    response = await fetch(target, {
      method: body === null ? "GET" : "POST",
      body: body === null ? undefined : JSON.stringify(body),
      headers,
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

export function usagePath(context) {
  const id = encodeURIComponent(context.id);
  return context.route === "provider"
    ? `/subscriptions/${id}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates`
    : `/subscriptions/${id}/providers/Microsoft.Commerce/usageAggregates`;
}

export function usageUrl(context, span, showDetails) {
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

// --- the cost query (Microsoft.CostManagement/query) and the subscriptions list ------------

export const COST_API_VERSION = "2023-03-01";
export const SUBSCRIPTIONS_API_VERSION = "2022-12-01";

export function costQueryPath(context) {
  const id = encodeURIComponent(context.id);
  const scope = context.route === "provider"
    ? `/subscriptions/${id}/providers/Microsoft.Commerce.Admin`
    : `/subscriptions/${id}`;
  return `${scope}/providers/Microsoft.CostManagement/query?api-version=${COST_API_VERSION}`;
}

// Every row of a cost query (its nextLink pages, POSTed with the same body), as objects
// keyed by column name.
export async function costRows(context, definition) {
  let next = costQueryPath(context);
  const rows = [];
  while (next) {
    const answer = await (await api(next, "application/json", definition)).json();
    const names = answer.properties.columns.map((column) => column.name);
    for (const row of answer.properties.rows) {
      rows.push(Object.fromEntries(names.map((name, index) => [name, row[index]])));
    }
    next = answer.properties.nextLink;
  }
  return rows;
}

// The caller's subscriptions (GET /subscriptions), asked once per token: the pickers' names
// and a provider's kind (tags.providerKind) read the same answer.
let listing = { token: null, answer: null };

export function readableSubscriptions() {
  const token = state.session?.token || null;
  if (listing.token !== token || !listing.answer) {
    const url = `/subscriptions?api-version=${SUBSCRIPTIONS_API_VERSION}`;
    const answer = api(url).then((response) => response.json()).then((body) => body.value);
    answer.catch(() => {
      if (listing.answer === answer) listing.answer = null; // asked again next time
    });
    listing = { token, answer };
  }
  return listing.answer;
}
