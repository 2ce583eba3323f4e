// REST client: the one JSON error shape, bearer tokens kept for the browser session and
// refreshed (rotating) shortly before the access token expires.

const STORE_KEY = "starkmatter.tokens";
const REFRESH_MARGIN_S = 60;

export class ApiError extends Error {
  constructor(status, code, message, requestId, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.details = details || [];
  }

  /** "message (code)" as shown on screen; field errors appended. */
  describe() {
    const fields = this.details
      .map((d) => (d.loc || d.field ? `${[].concat(d.loc || d.field).join(".")}: ${d.msg || d.message || ""}` : ""))
      .filter(Boolean);
    return `${this.message}${this.code ? ` (${this.code})` : ""}${fields.length ? ` — ${fields.join("; ")}` : ""}`;
  }
}

async function toError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const err = (body && body.error) || {};
  const detail = body && typeof body.detail === "string" ? body.detail : null;
  return new ApiError(
    response.status,
    err.code || `http_${response.status}`,
    err.message || detail || response.statusText || "request failed",
    err.request_id || response.headers.get("x-request-id"),
    err.details,
  );
}

export class Api {
  constructor() {
    this.tokens = null;
    this.refreshTimer = null;
    this.refreshing = null;
    this.listeners = new Set();
    try {
      this.tokens = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
    } catch {
      this.tokens = null;
    }
    if (this.tokens) this.scheduleRefresh();
  }

  onAuthChange(listener) {
    this.listeners.add(listener);
  }

  get signedIn() {
    return Boolean(this.tokens && this.tokens.access_token);
  }

  get accessToken() {
    return this.tokens ? this.tokens.access_token : null;
  }

  setTokens(body) {
    if (body) {
      this.signedOut = false;
      const now = Date.now();
      this.tokens = {
        access_token: body.access_token,
        refresh_token: body.refresh_token,
        access_expires_at: now + body.expires_in * 1000,
      };
      sessionStorage.setItem(STORE_KEY, JSON.stringify(this.tokens));
      this.scheduleRefresh();
    } else {
      this.tokens = null;
      sessionStorage.removeItem(STORE_KEY);
      clearTimeout(this.refreshTimer);
    }
    for (const listener of this.listeners) listener(this.signedIn);
  }

  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    if (!this.tokens) return;
    const due = this.tokens.access_expires_at - REFRESH_MARGIN_S * 1000 - Date.now();
    this.refreshTimer = setTimeout(() => {
      this.refresh().catch(() => this.setTokens(null));
    }, Math.max(1000, due));
  }

  /** Rotate the token pair; concurrent callers share one request. */
  refresh() {
    if (!this.tokens) return Promise.reject(new ApiError(401, "unauthenticated", "not signed in"));
    if (!this.refreshing) {
      const refreshToken = this.tokens.refresh_token;
      this.refreshing = this.raw("POST", "/auth/refresh", { refresh_token: refreshToken }, false)
        .then((body) => {
          this.setTokens(body);
          return body;
        })
        .finally(() => {
          this.refreshing = null;
        });
    }
    return this.refreshing;
  }

  async raw(method, path, body, auth = true) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth && this.tokens) headers.Authorization = `Bearer ${this.tokens.access_token}`;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
      });
    } catch (cause) {
      throw new ApiError(0, "network", `cannot reach the server (${cause.message})`);
    }
    if (!response.ok) throw await toError(response);
    if (response.status === 204) return null;
    const type = response.headers.get("content-type") || "";
    return type.includes("json") ? response.json() : response.text();
  }

  /** An authenticated request; an expired token is refreshed once, then the call retried. */
  async request(method, path, body) {
    if (this.signedOut) throw new ApiError(401, "unauthenticated", "signed out");
    if (this.tokens && this.tokens.access_expires_at - Date.now() < 5000) {
      await this.refresh().catch(() => this.setTokens(null));
    }
    try {
      return await this.raw(method, path, body, true);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401 && this.tokens) {
        try {
          await this.refresh();
        } catch {
          this.setTokens(null);
          throw err;
        }
        return this.raw(method, path, body, true);
      }
      throw err;
    }
  }

  get(path) {
    return this.request("GET", path);
  }

  post(path, body) {
    return this.request("POST", path, body === undefined ? {} : body);
  }

  del(path) {
    return this.request("DELETE", path);
  }

  async login(email, password) {
    this.setTokens(await this.raw("POST", "/auth/login", { email, password }, false));
  }

  register(email, password, displayName) {
    const body = { email, password };
    if (displayName) body.display_name = displayName;
    return this.raw("POST", "/auth/register", body, false);
  }

  async logout() {
    // A request that starts meanwhile (a panel's scheduled reload) would carry the token
    // being revoked and be refused by the server: it fails here instead, unsent.
    this.signedOut = true;
    try {
      if (this.tokens) await this.raw("POST", "/auth/logout", undefined, true);
    } finally {
      this.setTokens(null);
    }
  }
}
