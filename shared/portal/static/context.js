// The subscription the page reads: the ones the caller may read (the subscriptions list
// and the sign-in's), the one chosen in the URL, and a provider's chosen tenant.

import { $, GUID, LISTED_KEY, OPENED_KEY, state } from "./state.js";

function stored(key) {
  try {
    return JSON.parse(sessionStorage.getItem(key)) || [];
  } catch {
    return [];
  }
}

// Every subscription's name the page knows (the subscriptions list, then the sign-in's).
export function subscriptionNames() {
  const names = new Map((state.session?.subscriptions || []).map((s) => [s.id.toLowerCase(), s.name]));
  for (const s of stored(LISTED_KEY)) names.set(s.id.toLowerCase(), s.name);
  return names;
}

// The sign-in's subscriptions, then those the subscriptions list adds (a tenant's every
// readable one; names for all), then those opened by id; each once, named when known.
export function knownSubscriptions() {
  const listed = stored(LISTED_KEY);
  const names = new Map(listed.map((s) => [s.id.toLowerCase(), s.name]));
  const extra = state.session?.admin ? [] : listed;
  const all = [...(state.session?.subscriptions || []), ...extra, ...stored(OPENED_KEY)];
  const seen = new Set();
  return all.filter((s) => {
    const key = `${s.route}:${s.id}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  }).map((s) => ({ ...s, name: names.get(s.id.toLowerCase()) || s.name }));
}

export function currentContext(params) {
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

export function renderContext(context) {
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

export function renderSubscribers(context, subscriptionIds) {
  const select = $("subscriber");
  const ids = [...new Set([...subscriptionIds, context.subscriber].filter(Boolean))].sort();
  select.replaceChildren(new Option("All direct tenants", ""));
  for (const id of ids) select.append(new Option(id, id));
  select.value = context.subscriber || "";
}
