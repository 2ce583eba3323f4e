// Watchlist, price chart and depth ladder: the market-data panels.

import { CandleChart, normalizeBar } from "../chart.js";
import { el, listOf, num, pct, price, qty, setFlash, showError, sign } from "../format.js";
import { PanelSubscriptions } from "../stream.js";

const DEFAULT_WATCH = 8;

export function createWatchlist(ctx) {
  const { api, stream, quotes, symbols, selection, userId } = ctx;
  const storeKey = `starkmatter.watch.${userId}`;
  const body = document.querySelector("#watchlist tbody");
  const empty = document.getElementById("watch-empty");
  const error = document.getElementById("watch-error");
  const subs = new PanelSubscriptions(stream, document.getElementById("panel-watch"));
  const rows = new Map();
  let watched = [];
  try {
    watched = JSON.parse(localStorage.getItem(storeKey) || "null");
  } catch {
    watched = null;
  }

  function save() {
    localStorage.setItem(storeKey, JSON.stringify(watched));
  }

  function row(symbol) {
    const cells = {
      bid: el("td", { class: "num" }, "–"),
      ask: el("td", { class: "num" }, "–"),
      last: el("td", { class: "num" }, "–"),
      chg: el("td", { class: "num" }, "–"),
    };
    const tr = el(
      "tr",
      { dataset: { symbol }, class: "clickable" },
      el("td", {}, el("button", { type: "button", class: "link sym", onclick: () => selection.select(symbol) }, symbol)),
      cells.bid,
      cells.ask,
      cells.last,
      cells.chg,
      el("td", {}, el("button", {
        type: "button",
        class: "icon",
        title: `Remove ${symbol}`,
        "aria-label": `Remove ${symbol}`,
        onclick: () => remove(symbol),
      }, "×")),
    );
    tr.addEventListener("click", (event) => {
      if (event.target.tagName !== "BUTTON") selection.select(symbol);
    });
    rows.set(symbol, { tr, cells });
    return tr;
  }

  function paint(quote, previous) {
    const r = rows.get(quote.symbol);
    if (!r) return;
    const dir = previous && previous.last !== null && quote.last < previous.last ? "down" : "up";
    setFlash(r.cells.bid, price(quote.bid), previous && quote.bid < previous.bid ? "down" : "up");
    setFlash(r.cells.ask, price(quote.ask), previous && quote.ask < previous.ask ? "down" : "up");
    setFlash(r.cells.last, price(quote.last), dir);
    r.cells.chg.textContent = pct(quote.changePct);
    r.cells.chg.className = `num ${sign(quote.changePct)}`;
  }

  function render() {
    rows.clear();
    body.replaceChildren(...watched.map(row));
    empty.hidden = watched.length > 0;
    for (const symbol of watched) {
      const q = quotes.get(symbol);
      if (q) paint(q, null);
    }
    markSelected();
    const handler = quotes.handler();
    subs.set(watched.map((s) => [`market:quotes:${s}`, handler]));
  }

  function markSelected() {
    for (const [symbol, r] of rows) r.tr.classList.toggle("selected", symbol === selection.symbol);
  }

  function add(symbol) {
    const s = symbol.trim().toUpperCase();
    if (!s) return;
    if (!symbols.known(s)) {
      showError(error, `Unknown symbol: ${s}`);
      return;
    }
    showError(error, null);
    if (!watched.includes(s)) {
      watched.push(s);
      save();
      render();
      quotes.load(s).catch((err) => showError(error, err));
    }
    selection.select(s);
  }

  function remove(symbol) {
    watched = watched.filter((s) => s !== symbol);
    save();
    render();
  }

  document.getElementById("watch-add").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("watch-symbol");
    add(input.value);
    input.value = "";
  });
  quotes.on(paint);
  selection.on(markSelected);

  async function reload() {
    if (!watched) {
      watched = symbols.list.slice(0, DEFAULT_WATCH);
      save();
      render();
    }
    const results = await Promise.allSettled(watched.map((s) => quotes.load(s)));
    const failed = results.find((r) => r.status === "rejected" && r.reason.status !== 404);
    showError(error, failed ? failed.reason : null);
  }

  if (watched) render();
  return {
    reload,
    get symbols() {
      return watched || [];
    },
  };
}

const INTERVALS = [
  ["1s", 1000],
  ["1m", 60000],
];

export function createChart(ctx) {
  const { api, stream, quotes, selection } = ctx;
  const chart = new CandleChart(document.getElementById("chart"));
  const state = document.getElementById("chart-state");
  const title = document.getElementById("chart-symbol");
  const lastNode = document.getElementById("chart-last");
  const chgNode = document.getElementById("chart-chg");
  const group = document.getElementById("intervals");
  const subs = new PanelSubscriptions(stream, document.getElementById("panel-chart"));
  let interval = localStorage.getItem("starkmatter.interval") || "1m";
  if (!INTERVALS.some(([name]) => name === interval)) interval = "1m";
  let generation = 0;

  group.replaceChildren(
    ...INTERVALS.map(([name]) =>
      el("button", {
        type: "button",
        "aria-pressed": String(name === interval),
        dataset: { interval: name },
        onclick: () => {
          interval = name;
          localStorage.setItem("starkmatter.interval", name);
          for (const b of group.children) b.setAttribute("aria-pressed", String(b.dataset.interval === name));
          reload();
        },
      }, name),
    ),
  );

  function intervalMs() {
    return INTERVALS.find(([name]) => name === interval)[1];
  }

  function header(quote) {
    if (!quote || quote.symbol !== selection.symbol) return;
    setFlash(lastNode, price(quote.last), sign(quote.changePct) === "down" ? "down" : "up");
    chgNode.textContent = pct(quote.changePct);
    chgNode.className = sign(quote.changePct);
  }

  quotes.on((quote) => {
    if (quote.symbol !== selection.symbol) return;
    header(quote);
    if (quote.last !== null) chart.tick(quote.last, quote.ts);
  });

  async function reload() {
    const symbol = selection.symbol;
    if (!symbol) return;
    const mine = ++generation;
    title.textContent = symbol;
    state.textContent = "Loading bars…";
    state.hidden = false;
    subs.set([[`market:quotes:${symbol}`, quotes.handler()]]);
    try {
      const since = new Date(Date.now() - 240 * intervalMs()).toISOString();
      const body = await api.get(
        `/market/bars/${encodeURIComponent(symbol)}?interval=${interval}&limit=240&start=${encodeURIComponent(since)}`,
      );
      if (mine !== generation) return;
      const bars = listOf(body, "bars").map(normalizeBar).filter(Boolean);
      if (bars.length) quotes.setReference(symbol, bars[0].open);
      chart.setBars(bars, intervalMs());
      const q = quotes.get(symbol);
      if (q && q.last !== null) chart.tick(q.last, q.ts);
      header(q);
      state.hidden = chart.bars.length > 0;
      state.textContent = "Waiting for the first trade…";
    } catch (err) {
      if (mine !== generation) return;
      chart.setBars([], intervalMs());
      state.hidden = false;
      state.textContent = err.describe ? err.describe() : String(err);
      state.classList.add("error");
      return;
    }
    state.classList.remove("error");
  }

  selection.on(() => reload());
  return { reload };
}

export function createDepth(ctx) {
  const { api, stream, selection } = ctx;
  const body = document.querySelector("#depth tbody");
  const empty = document.getElementById("depth-empty");
  const label = document.getElementById("depth-symbol");
  const spread = document.getElementById("depth-spread");
  const subs = new PanelSubscriptions(stream, document.getElementById("panel-depth"));
  const LEVELS = 12;

  function level(entry) {
    if (Array.isArray(entry)) return [num(entry[0]), num(entry[1])];
    return [num(entry.price), num(entry.size ?? entry.quantity)];
  }

  function render(data) {
    if (!data || (data.symbol && data.symbol !== selection.symbol)) return;
    const bids = (data.bids || []).slice(0, LEVELS).map(level);
    const asks = (data.asks || []).slice(0, LEVELS).map(level);
    const maxSize = Math.max(1, ...bids.map((b) => b[1] || 0), ...asks.map((a) => a[1] || 0));
    const rows = [];
    for (let i = 0; i < Math.max(bids.length, asks.length); i += 1) {
      const [bp, bs] = bids[i] || [null, null];
      const [ap, as] = asks[i] || [null, null];
      const bidSize = el("td", { class: "num size bid-bar" }, bs === null ? "" : qty(bs));
      const askSize = el("td", { class: "num size ask-bar" }, as === null ? "" : qty(as));
      bidSize.style.setProperty("--w", `${((bs || 0) / maxSize) * 100}%`);
      askSize.style.setProperty("--w", `${((as || 0) / maxSize) * 100}%`);
      rows.push(
        el("tr", {},
          bidSize,
          el("td", { class: "num up" }, bp === null ? "" : price(bp)),
          el("td", { class: "num down" }, ap === null ? "" : price(ap)),
          askSize),
      );
    }
    body.replaceChildren(...rows);
    empty.hidden = rows.length > 0;
    if (bids.length && asks.length) {
      const s = asks[0][0] - bids[0][0];
      spread.textContent = `spread ${price(s)}`;
    } else spread.textContent = "";
  }

  async function reload() {
    const symbol = selection.symbol;
    if (!symbol) return;
    label.textContent = symbol;
    body.replaceChildren();
    empty.hidden = false;
    empty.textContent = "No depth yet.";
    subs.set([[`market:depth:${symbol}`, (data) => render(data)]]);
    // While live, the gateway's subscription snapshot is the initial state; REST otherwise.
    if (stream.state === "open" || stream.state === "connecting") return;
    try {
      render(await api.get(`/market/depth/${encodeURIComponent(symbol)}`));
    } catch (err) {
      body.replaceChildren();
      empty.hidden = false;
      empty.textContent = err.status === 404 ? "No depth yet." : err.describe();
    }
  }

  selection.on(() => reload());
  return { reload };
}
