// Shared client-side state: quotes by symbol, the known symbols, the selected symbol.

import { listOf, num, toMillis } from "./format.js";

export function normalizeQuote(raw) {
  if (!raw || typeof raw !== "object") return null;
  const q = raw.quote && typeof raw.quote === "object" ? raw.quote : raw;
  const bid = num(q.bid ?? q.bid_price);
  const ask = num(q.ask ?? q.ask_price);
  let last = num(q.last ?? q.last_price ?? q.price);
  if (last === null && bid !== null && ask !== null) last = (bid + ask) / 2;
  return {
    symbol: String(q.symbol || "").toUpperCase(),
    bid,
    ask,
    last,
    bidSize: num(q.bid_size),
    askSize: num(q.ask_size),
    ts: toMillis(q.ts ?? q.timestamp ?? q.ts_event) ?? Date.now(),
    reference: num(q.prev_close ?? q.previous_close ?? q.open ?? q.reference_price),
    changePct: num(q.change_pct ?? q.change_percent),
  };
}

export class Emitter {
  constructor() {
    this.listeners = new Set();
  }

  on(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(...args) {
    for (const listener of this.listeners) listener(...args);
  }
}

export class Quotes extends Emitter {
  constructor(api) {
    super();
    this.api = api;
    this.map = new Map();
    this.references = new Map();
  }

  get(symbol) {
    return this.map.get(symbol) || null;
  }

  /** Apply a quote (REST body or stream frame); returns the normalized quote. */
  apply(raw, fallbackSymbol) {
    const quote = normalizeQuote(raw);
    if (!quote) return null;
    if (!quote.symbol) quote.symbol = fallbackSymbol;
    const previous = this.map.get(quote.symbol);
    if (quote.reference !== null) this.references.set(quote.symbol, quote.reference);
    else if (!this.references.has(quote.symbol) && quote.last !== null) {
      this.references.set(quote.symbol, quote.last);
    }
    const reference = this.references.get(quote.symbol);
    if (quote.changePct === null && reference) {
      quote.changePct = ((quote.last - reference) / reference) * 100;
    }
    this.map.set(quote.symbol, quote);
    this.emit(quote, previous || null);
    return quote;
  }

  /** The session's reference price (first bar's open) sets change % when quotes lack one. */
  setReference(symbol, value) {
    const n = num(value);
    if (n !== null && n > 0) this.references.set(symbol, n);
  }

  async load(symbol) {
    const body = await this.api.get(`/market/quotes/${encodeURIComponent(symbol)}`);
    return this.apply(body, symbol);
  }

  /** Stream handler for ``market:quotes:{S}`` topics. */
  handler() {
    return (data, _type, frame) => {
      if (!data) return;
      const symbol = (frame.topic || "").split(":")[2];
      this.apply(data, symbol);
    };
  }
}

export class Symbols extends Emitter {
  constructor(api) {
    super();
    this.api = api;
    this.list = [];
    this.details = new Map();
  }

  async load() {
    const body = await this.api.get("/market/symbols");
    const items = listOf(body, "symbols");
    this.list = items.map((item) => (typeof item === "string" ? item : item.symbol)).filter(Boolean);
    for (const item of items) if (typeof item === "object") this.details.set(item.symbol, item);
    const datalist = document.getElementById("symbol-list");
    datalist.replaceChildren(...this.list.map((s) => Object.assign(document.createElement("option"), { value: s })));
    this.emit(this.list);
    return this.list;
  }

  known(symbol) {
    return this.list.length === 0 || this.list.includes(symbol);
  }
}

export class Selection extends Emitter {
  constructor() {
    super();
    this.symbol = null;
  }

  select(symbol) {
    if (!symbol || symbol === this.symbol) return;
    this.symbol = symbol;
    this.emit(symbol);
  }
}
