// The page's state, shared by its modules: settings from config.json, the session, the
// charts drawn, the rows table's paging, the last retry, and the router (set by portal.js).

export const API_VERSION = "2015-06-01-preview";
export const SESSION_KEY = "usage-portal.session";
export const OPENED_KEY = "usage-portal.opened";
export const LISTED_KEY = "usage-portal.listed"; // GET /subscriptions, once per session
export const MAX_CHART_PAGES = 200; // 200,000 rows: beyond that, narrow the window
export const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const $ = (id) => document.getElementById(id);

export const state = {
  config: { signIn: "none" },
  session: null, // {token, expiresAt, label, admin, subscriptions: [{id, route, name}]}
  msalApp: null,
  charts: [],
  usageState: null, // the rows table's paging: {pages: [url...], index}
  lastRetry: null,
  listing: false, // the subscriptions list is being (or was) read for this session
  focusHeading: false, // set by sign-in: the next view shown focuses its heading
  generation: 0, // bumped by each cost view load: an older load's answer is dropped
  route: () => {},
};
