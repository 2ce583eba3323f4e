// Order ticket, orders blotter, positions and account metrics.

import { clock, el, listOf, money, num, price, qty, setFlash, showError, sign, signedMoney } from "../format.js";
import { PanelSubscriptions } from "../stream.js";

const WORKING = new Set(["OrderCreated", "Validated", "RiskChecked", "Submitted", "Pending", "PartiallyFilled", "Sending"]);
const FINAL_RANK = { Filled: 3, Cancelled: 3, Rejected: 3, PartiallyFilled: 2 };

function randomId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return `web-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

export function normalizeOrder(raw) {
  const o = raw && raw.order && typeof raw.order === "object" ? raw.order : raw;
  if (!o || typeof o !== "object") return null;
  return {
    id: o.id ?? o.order_id ?? null,
    clientOrderId: o.client_order_id ?? null,
    symbol: o.symbol,
    side: o.side,
    type: o.type ?? o.order_type,
    quantity: num(o.quantity ?? o.qty),
    filled: num(o.filled_quantity ?? o.filled_qty ?? o.cum_qty) ?? 0,
    limitPrice: num(o.limit_price),
    stopPrice: num(o.stop_price),
    avgPrice: num(o.average_fill_price ?? o.avg_fill_price ?? o.avg_price),
    tif: o.time_in_force ?? o.tif,
    status: o.status ?? (raw.event ? String(raw.event).replace(/^Order/, "") : "Pending"),
    reason: (o.rejection && (o.rejection.message ? `${o.rejection.message} (${o.rejection.code})` : o.rejection.code)) ?? o.reject_message ?? o.reject_code ?? o.reason ?? null,
    createdAt: o.created_at ?? o.ts_init ?? o.ts ?? null,
    updatedAt: o.updated_at ?? o.ts_event ?? null,
  };
}

/** Orders by key, with optimistic entries reconciled against the server's. */
export class OrderBook {
  constructor() {
    this.orders = new Map();
    this.listeners = new Set();
  }

  on(listener) {
    this.listeners.add(listener);
  }

  changed() {
    for (const listener of this.listeners) listener();
  }

  find(order) {
    for (const [key, existing] of this.orders) {
      if ((order.id && existing.id === order.id) || (order.clientOrderId && existing.clientOrderId === order.clientOrderId)) {
        return key;
      }
    }
    return null;
  }

  upsert(order, { quiet = false } = {}) {
    if (!order) return;
    const key = this.find(order);
    if (key) {
      const existing = this.orders.get(key);
      // Stream frames may overtake the POST response: never step back from a final state.
      const older = (FINAL_RANK[existing.status] || 0) > (FINAL_RANK[order.status] || 0) && existing.status !== "Sending";
      const merged = { ...existing };
      for (const [field, value] of Object.entries(order)) if (value !== null && value !== undefined) merged[field] = value;
      if (older) {
        merged.status = existing.status;
        merged.filled = Math.max(existing.filled || 0, order.filled || 0);
      }
      this.orders.delete(key);
      this.orders.set(merged.id || merged.clientOrderId, merged);
    } else {
      this.orders.set(order.id || order.clientOrderId, order);
    }
    if (!quiet) this.changed();
  }

  replaceAll(orders) {
    const optimistic = [...this.orders.values()].filter((o) => o.status === "Sending");
    this.orders.clear();
    for (const o of orders) this.upsert(o, { quiet: true });
    for (const o of optimistic) if (!this.find(o)) this.upsert(o, { quiet: true });
    this.changed();
  }

  sorted() {
    return [...this.orders.values()].sort((a, b) => String(b.createdAt || "").localeCompare(String(a.createdAt || "")));
  }
}

export function createTicket(ctx) {
  const { api, orders, symbols, selection, quotes } = ctx;
  const form = document.getElementById("ticket");
  const fields = {
    symbol: document.getElementById("t-symbol"),
    type: document.getElementById("t-type"),
    qty: document.getElementById("t-qty"),
    limit: document.getElementById("t-limit"),
    stop: document.getElementById("t-stop"),
    tif: document.getElementById("t-tif"),
  };
  const submit = document.getElementById("t-submit");
  const error = document.getElementById("t-error");
  const status = document.getElementById("t-status");
  const est = document.getElementById("t-est");

  const side = () => form.querySelector("input[name=side]:checked").value;
  let lastSent = null;

  /** The ticket's status line follows the last order it sent, until the next one. */
  function describe() {
    const key = lastSent && orders.find({ clientOrderId: lastSent });
    const o = key && orders.orders.get(key);
    if (!o || o.status === "Sending") return;
    if (o.status === "Rejected") {
      showError(error, `Rejected: ${o.reason || "no reason given"}`);
      status.hidden = true;
      return;
    }
    status.hidden = false;
    const filled = o.filled ? ` · filled ${qty(o.filled)}${o.avgPrice !== null ? ` @ ${price(o.avgPrice)}` : ""}` : "";
    status.textContent = `${o.status}: ${o.side} ${qty(o.quantity)} ${o.symbol}${filled}`;
  }
  orders.on(describe);

  function refresh() {
    const type = fields.type.value;
    document.getElementById("t-limit-row").hidden = type !== "limit";
    document.getElementById("t-stop-row").hidden = type !== "stop";
    const s = side();
    submit.textContent = `${s === "buy" ? "Buy" : "Sell"} ${fields.symbol.value.toUpperCase() || ""}`.trim();
    submit.className = `primary ${s}`;
    const q = quotes.get(fields.symbol.value.toUpperCase());
    const n = num(fields.qty.value);
    const px = type === "limit" ? num(fields.limit.value) : type === "stop" ? num(fields.stop.value) : q && (s === "buy" ? q.ask : q.bid);
    est.textContent = n && px ? `≈ ${money(n * px)}${q ? ` · bid ${price(q.bid)} / ask ${price(q.ask)}` : ""}` : "";
  }

  function validate() {
    const problems = [];
    const symbol = fields.symbol.value.trim().toUpperCase();
    const type = fields.type.value;
    const quantity = num(fields.qty.value);
    if (!symbol) problems.push([fields.symbol, "Symbol is required"]);
    else if (!symbols.known(symbol)) problems.push([fields.symbol, `Unknown symbol ${symbol}`]);
    if (quantity === null || quantity <= 0) problems.push([fields.qty, "Quantity must be a positive number"]);
    const limit = num(fields.limit.value);
    const stop = num(fields.stop.value);
    if (type === "limit" && (limit === null || limit <= 0)) problems.push([fields.limit, "Limit price must be a positive number"]);
    if (type === "stop" && (stop === null || stop <= 0)) problems.push([fields.stop, "Stop price must be a positive number"]);
    for (const input of Object.values(fields)) input.removeAttribute("aria-invalid");
    for (const [input] of problems) input.setAttribute("aria-invalid", "true");
    if (problems.length) {
      problems[0][0].focus();
      return { problems: problems.map((p) => p[1]) };
    }
    const request = {
      symbol,
      side: side(),
      type,
      quantity: String(fields.qty.value).trim(),
      time_in_force: fields.tif.value,
      client_order_id: randomId(),
    };
    if (type === "limit") request.limit_price = String(fields.limit.value).trim();
    if (type === "stop") request.stop_price = String(fields.stop.value).trim();
    return { request };
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const { problems, request } = validate();
    if (problems) {
      showError(error, problems.join(" · "));
      return;
    }
    showError(error, null);
    lastSent = request.client_order_id;
    const optimistic = {
      ...normalizeOrder(request),
      id: null,
      clientOrderId: request.client_order_id,
      status: "Sending",
      filled: 0,
      createdAt: new Date().toISOString(),
    };
    orders.upsert(optimistic);
    status.hidden = false;
    status.textContent = `Sending ${request.side} ${request.quantity} ${request.symbol}…`;
    try {
      const body = await api.post("/orders", request);
      const confirmed = normalizeOrder(body);
      confirmed.clientOrderId = confirmed.clientOrderId || request.client_order_id;
      orders.upsert(confirmed);
      describe();
    } catch (err) {
      orders.upsert({ ...optimistic, status: "Rejected", reason: err.describe ? err.describe() : String(err) });
      status.hidden = true;
      showError(error, `Rejected: ${err.describe ? err.describe() : err}`);
    }
  });

  form.addEventListener("input", refresh);
  form.addEventListener("change", refresh);
  quotes.on((q) => {
    if (q.symbol === fields.symbol.value.toUpperCase()) refresh();
  });
  selection.on((symbol) => {
    fields.symbol.value = symbol;
    const q = quotes.get(symbol);
    if (q && q.last !== null && !fields.limit.value) fields.limit.value = price(q.last).replace(/,/g, "");
    refresh();
  });
  document.addEventListener("keydown", (event) => {
    if (!event.altKey || event.ctrlKey || event.metaKey) return;
    const key = event.key.toLowerCase();
    if (key !== "b" && key !== "s") return;
    event.preventDefault();
    form.querySelector(`input[name=side][value=${key === "b" ? "buy" : "sell"}]`).checked = true;
    refresh();
    fields.qty.focus();
    fields.qty.select();
  });
  refresh();
  return { reload: async () => refresh() };
}

export function createOrders(ctx) {
  const { api, stream, orders, userId } = ctx;
  const body = document.querySelector("#orders tbody");
  const empty = document.getElementById("orders-empty");
  const openOnly = document.getElementById("orders-open-only");
  const subs = new PanelSubscriptions(stream, document.getElementById("panel-orders"));
  const seen = new Map();

  async function cancel(order, button) {
    button.disabled = true;
    button.textContent = "…";
    try {
      const result = await api.del(`/orders/${encodeURIComponent(order.id)}`);
      orders.upsert(result ? normalizeOrder(result) : { ...order, status: "Cancelled" });
    } catch (err) {
      button.disabled = false;
      button.textContent = "Cancel";
      ctx.toast(`Cancel failed: ${err.describe ? err.describe() : err}`, "error");
    }
  }

  function render() {
    const list = orders.sorted().filter((o) => !openOnly.checked || WORKING.has(o.status));
    const rows = list.map((o) => {
      const key = o.id || o.clientOrderId;
      const statusCell = el("td", { class: `status s-${String(o.status).toLowerCase()}`, title: o.reason || "" },
        o.status, o.reason && o.status === "Rejected" ? el("span", { class: "reason" }, ` ${o.reason}`) : null);
      if (seen.has(key) && seen.get(key) !== o.status) statusCell.classList.add("flash-up");
      seen.set(key, o.status);
      const cancelCell = el("td", {});
      if (o.id && WORKING.has(o.status) && o.status !== "Sending") {
        const button = el("button", { type: "button", class: "small-btn", "aria-label": `Cancel ${o.side} ${o.symbol}` }, "Cancel");
        button.addEventListener("click", () => cancel(o, button));
        cancelCell.append(button);
      }
      return el("tr", { dataset: { orderId: o.id || "", clientOrderId: o.clientOrderId || "", status: o.status } },
        el("td", {}, clock(o.createdAt)),
        el("td", {}, o.symbol),
        el("td", { class: o.side === "buy" ? "up" : "down" }, String(o.side || "").toUpperCase()),
        el("td", {}, o.type),
        el("td", { class: "num" }, qty(o.quantity)),
        el("td", { class: "num" }, qty(o.filled)),
        el("td", { class: "num" }, o.limitPrice !== null ? price(o.limitPrice) : o.stopPrice !== null ? price(o.stopPrice) : "MKT"),
        el("td", { class: "num" }, o.avgPrice !== null ? price(o.avgPrice) : ""),
        el("td", {}, String(o.tif || "").toUpperCase()),
        statusCell,
        cancelCell);
    });
    body.replaceChildren(...rows);
    empty.hidden = rows.length > 0;
  }

  orders.on(render);
  openOnly.addEventListener("change", render);

  // Live frames carry the order's state, not its fill price: fetch the order once it fills.
  async function reconcile(id) {
    try {
      orders.upsert(normalizeOrder(await api.get(`/orders/${encodeURIComponent(id)}`)));
    } catch (err) {
      ctx.toast(`Could not refresh order: ${err.describe ? err.describe() : err}`, "error");
    }
  }

  function onFrame(data, type) {
    if (!data) return;
    const items = Array.isArray(data) ? data : listOf(data, "orders").length ? listOf(data, "orders") : [data];
    for (const item of items) {
      const order = normalizeOrder(item);
      orders.upsert(order);
      if (order.id && (order.status === "Filled" || order.status === "PartiallyFilled")) reconcile(order.id);
    }
    if (type === "update") ctx.onTrade();
  }

  async function reload() {
    subs.set([[`orders:${userId}`, onFrame]]);
    try {
      const list = listOf(await api.get("/orders?limit=200"), "orders").map(normalizeOrder);
      orders.replaceAll(list);
    } catch (err) {
      empty.hidden = false;
      empty.textContent = err.describe();
    }
  }

  return { reload };
}

function normalizePosition(raw) {
  const quantity = num(raw.quantity ?? raw.qty ?? raw.net_quantity);
  return {
    symbol: raw.symbol,
    quantity,
    avgPrice: num(raw.average_price ?? raw.avg_price ?? raw.avg_cost ?? raw.average_cost),
    realized: num(raw.realized_pnl ?? raw.realized),
    unrealized: num(raw.unrealized_pnl ?? raw.unrealized),
    mark: num(raw.mark_price ?? raw.last_price ?? raw.market_price),
  };
}

export function createPortfolio(ctx) {
  const { api, stream, quotes, userId } = ctx;
  const body = document.querySelector("#positions tbody");
  const empty = document.getElementById("positions-empty");
  const total = document.getElementById("pos-total");
  const subs = new PanelSubscriptions(stream, document.getElementById("panel-positions"));
  const metrics = {
    equity: document.getElementById("m-equity"),
    cash: document.getElementById("m-cash"),
    bp: document.getElementById("m-bp"),
    upl: document.getElementById("m-upl"),
    rpl: document.getElementById("m-rpl"),
    ret: document.getElementById("m-ret"),
  };
  let positions = [];
  let account = {};
  let reloadTimer = null;

  function mark(p) {
    const q = quotes.get(p.symbol);
    if (q) {
      if (p.quantity > 0 && q.bid !== null) return q.bid;
      if (p.quantity < 0 && q.ask !== null) return q.ask;
      if (q.last !== null) return q.last;
    }
    return p.mark;
  }

  function render() {
    let unrealizedTotal = 0;
    let valueTotal = 0;
    let realizedTotal = 0;
    const rows = positions
      .filter((p) => p.quantity !== 0 || p.realized)
      .map((p) => {
        const m = mark(p);
        const upl = m !== null && p.avgPrice !== null ? (m - p.avgPrice) * p.quantity : p.unrealized;
        const value = m !== null ? m * p.quantity : null;
        unrealizedTotal += upl || 0;
        valueTotal += value || 0;
        realizedTotal += p.realized || 0;
        return el("tr", { dataset: { symbol: p.symbol } },
          el("td", {}, p.symbol),
          el("td", { class: `num ${sign(p.quantity)}` }, qty(p.quantity)),
          el("td", { class: "num" }, price(p.avgPrice)),
          el("td", { class: "num" }, price(m)),
          el("td", { class: "num" }, money(value)),
          el("td", { class: `num pnl ${sign(upl)}` }, signedMoney(upl)),
          el("td", { class: `num ${sign(p.realized)}` }, signedMoney(p.realized)));
      });
    body.replaceChildren(...rows);
    empty.hidden = rows.length > 0;
    total.textContent = rows.length ? `${money(valueTotal)} · ${signedMoney(unrealizedTotal)}` : "";
    const cash = num(account.cash ?? account.cash_balance);
    const equity = cash !== null ? cash + valueTotal : num(account.equity ?? account.portfolio_value ?? account.total_value);
    setFlash(metrics.equity, money(equity), "up");
    metrics.cash.textContent = money(cash);
    metrics.bp.textContent = money(account.buying_power);
    setFlash(metrics.upl, signedMoney(unrealizedTotal), unrealizedTotal < 0 ? "down" : "up");
    metrics.upl.className = sign(unrealizedTotal);
    const realized = num(account.realized_pnl) ?? realizedTotal;
    metrics.rpl.textContent = signedMoney(realized);
    metrics.rpl.className = sign(realized);
    const start = num(account.starting_cash ?? account.initial_cash ?? account.starting_equity);
    const ret = start && equity !== null ? ((equity - start) / start) * 100 : num(account.total_return_pct ?? account.return_pct);
    metrics.ret.textContent = ret === null ? "–" : `${ret > 0 ? "+" : ""}${ret.toFixed(2)}%`;
    metrics.ret.className = sign(ret);
    const handler = quotes.handler();
    subs.set(positions.map((p) => [`market:quotes:${p.symbol}`, handler]).concat([[`portfolio:${userId}`, onPortfolio]]));
  }

  function onPortfolio(data) {
    if (data && Array.isArray(data.positions)) {
      positions = data.positions.map(normalizePosition);
      render();
    }
    scheduleReload();
  }

  function scheduleReload() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(() => reload().catch(() => {}), 150);
  }

  quotes.on((q) => {
    if (positions.some((p) => p.symbol === q.symbol)) render();
  });

  async function reload() {
    const [pos, acct, port] = await Promise.allSettled([api.get("/portfolio/positions"), api.get("/account"), api.get("/portfolio")]);
    if (pos.status === "fulfilled") positions = listOf(pos.value, "positions").map(normalizePosition);
    else {
      empty.hidden = false;
      empty.textContent = pos.reason.describe ? pos.reason.describe() : String(pos.reason);
    }
    account = {
      ...(port.status === "fulfilled" && port.value && typeof port.value === "object" ? flatten(port.value) : {}),
      ...(acct.status === "fulfilled" && acct.value && typeof acct.value === "object" ? flatten(acct.value) : {}),
    };
    render();
  }

  return { reload, scheduleReload };
}

function flatten(body) {
  const out = {};
  for (const [key, value] of Object.entries(body)) {
    if (value && typeof value === "object" && !Array.isArray(value)) Object.assign(out, value);
    else out[key] = value;
  }
  return out;
}
