// The dashboard's entry point: configuration, sign-in, then the panels and the live stream.
//
// State sync (from the seed): initial state from REST, one WebSocket, subscriptions per
// visible panel, live updates; after a dropped connection: reconnect, resubscribe, reload
// every snapshot, and say so on screen.

import { Api, ApiError } from "./api.js";
import { Quotes, Selection, Symbols } from "./market.js";
import { showError } from "./format.js";
import { createChart, createDepth, createWatchlist } from "./panels/marketdata.js";
import { OrderBook, createOrders, createPortfolio, createTicket } from "./panels/trading.js";
import { createAlerts, createAnalyst, createNews } from "./panels/insight.js";
import { Stream } from "./stream.js";

const api = new Api();
let config = { ws_url: null, registration_enabled: true };
let session = null;

const $ = (id) => document.getElementById(id);

function banner(text, kind) {
  const node = $("banner");
  clearTimeout(banner.timer);
  if (!text) {
    node.hidden = true;
    return;
  }
  node.hidden = false;
  node.textContent = text;
  node.dataset.kind = kind || "info";
  if (kind === "ok") banner.timer = setTimeout(() => (node.hidden = true), 4000);
}

function toast(text, kind) {
  banner(text, kind === "error" ? "error" : "ok");
}

// ---- sign-in -------------------------------------------------------------------------

function authView() {
  let mode = "login";
  const form = $("auth-form");
  const tabs = { login: $("auth-tab-login"), register: $("auth-tab-register") };
  const setMode = (next) => {
    mode = next;
    for (const [name, tab] of Object.entries(tabs)) tab.setAttribute("aria-selected", String(name === mode));
    $("auth-name-row").hidden = mode !== "register";
    $("auth-submit").textContent = mode === "login" ? "Log in" : "Create account";
    $("auth-password").autocomplete = mode === "login" ? "current-password" : "new-password";
    showError($("auth-error"), null);
  };
  tabs.login.addEventListener("click", () => setMode("login"));
  tabs.register.addEventListener("click", () => setMode("register"));
  tabs.register.hidden = !config.registration_enabled;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const email = $("auth-email").value.trim();
    const password = $("auth-password").value;
    const info = $("auth-info");
    info.hidden = true;
    if (!email || !password) {
      showError($("auth-error"), "E-mail and password are required");
      return;
    }
    if (mode === "register" && password.length < 12) {
      showError($("auth-error"), "Choose a password of at least 12 characters");
      return;
    }
    $("auth-submit").disabled = true;
    try {
      if (mode === "register") {
        await api.register(email, password, $("auth-name").value.trim());
        setMode("login");
        info.hidden = false;
        info.textContent = "Account created. Log in to continue.";
        $("auth-password").focus();
      } else {
        await api.login(email, password);
      }
    } catch (err) {
      showError($("auth-error"), err);
    } finally {
      $("auth-submit").disabled = false;
    }
  });
}

function showAuth() {
  $("dashboard").hidden = true;
  $("auth").hidden = false;
  $("auth-email").focus();
}

// ---- dashboard -----------------------------------------------------------------------

function connectionIndicator(state, detail) {
  const node = $("conn");
  const text = $("conn-text");
  node.dataset.state = state;
  if (state === "open") {
    text.textContent = "live";
    if (detail.reconnected) banner("Reconnected — subscriptions restored, snapshots reloaded", "ok");
  } else if (state === "reconnecting") {
    text.textContent = "reconnecting";
    banner(`Connection lost — reconnecting${detail.attempt ? ` (attempt ${detail.attempt})` : ""}…`, "warn");
  } else if (state === "connecting") {
    text.textContent = "connecting";
  } else {
    text.textContent = state;
  }
}

async function startDashboard() {
  const me = await api.get("/auth/me");
  $("auth").hidden = true;
  $("dashboard").hidden = false;
  $("user-email").textContent = me.display_name || me.email;

  const stream = new Stream(() => config.ws_url, () => api.accessToken);
  const quotes = new Quotes(api);
  const symbols = new Symbols(api);
  const selection = new Selection();
  const orders = new OrderBook();
  const ctx = { api, stream, quotes, symbols, selection, orders, userId: me.id, toast, onTrade: () => {} };

  const panels = {};
  panels.watchlist = createWatchlist(ctx);
  panels.chart = createChart(ctx);
  panels.depth = createDepth(ctx);
  panels.ticket = createTicket(ctx);
  panels.orders = createOrders(ctx);
  panels.portfolio = createPortfolio(ctx);
  panels.news = createNews(ctx);
  panels.alerts = createAlerts(ctx);
  panels.ai = createAnalyst(ctx);
  ctx.onTrade = () => panels.portfolio.scheduleReload();

  async function reloadAll() {
    const results = await Promise.allSettled(Object.values(panels).map((p) => p.reload()));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) banner(`Could not load everything: ${failed.reason.describe ? failed.reason.describe() : failed.reason}`, "error");
  }

  stream.onState((state, detail) => {
    if (state === "frame-error") {
      if (detail.code !== "not_found") banner(`Live data: ${detail.message || detail.code}`, "error");
      return;
    }
    connectionIndicator(state, detail);
    if (state === "unauthorized") api.refresh().catch(() => api.setTokens(null));
    if (state === "open" && detail.reconnected) reloadAll();
  });

  try {
    await symbols.load();
  } catch (err) {
    banner(`Market data unavailable: ${err.describe ? err.describe() : err}`, "error");
  }
  stream.start();
  await reloadAll();
  const first = panels.watchlist.symbols[0] || symbols.list[0];
  if (first && !selection.symbol) selection.select(first);
  document.body.dataset.ready = "true";

  $("logout").onclick = async () => {
    stream.stop();
    await api.logout().catch(() => {});
  };
  // Expose the live pieces for debugging from the console (read-only use).
  window.starkmatter = { stream, quotes, orders, selection };
  return { stream };
}

async function main() {
  try {
    const response = await fetch("/config.json", { headers: { Accept: "application/json" } });
    if (response.ok) config = await response.json();
  } catch {
    // Keep the defaults: the dashboard still works without live data.
  }
  authView();
  api.onAuthChange(async (signedIn) => {
    if (signedIn && !session) {
      session = startDashboard().catch((err) => {
        session = null;
        banner(err instanceof ApiError ? err.describe() : String(err), "error");
        if (err instanceof ApiError && err.status === 401) api.setTokens(null);
      });
    } else if (!signedIn) {
      if (session) {
        // A fresh page is the simplest way to drop every panel's state and subscription.
        window.location.reload();
        return;
      }
      showAuth();
    }
  });
  if (api.signedIn) {
    session = startDashboard().catch((err) => {
      session = null;
      if (err instanceof ApiError && err.status === 401) api.setTokens(null);
      else banner(String(err.describe ? err.describe() : err), "error");
      showAuth();
    });
  } else {
    showAuth();
  }
}

main();
