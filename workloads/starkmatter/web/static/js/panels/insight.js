// News feed, alerts and the AI analyst.

import { ago, el, listOf, num, price, showError } from "../format.js";
import { PanelSubscriptions } from "../stream.js";

function sentimentOf(item) {
  const raw = item.sentiment ?? item.sentiment_label ?? item.sentiment_score;
  if (raw && typeof raw === "object") return sentimentOf({ sentiment: raw.label ?? raw.score });
  const score = num(item.sentiment_score ?? raw);
  let label = item.sentiment_label || (typeof raw === "string" && score === null ? raw.toLowerCase() : null);
  if (!label && score !== null) label = score > 0.15 ? "positive" : score < -0.15 ? "negative" : "neutral";
  return { label: label || "neutral", score };
}

export function createNews(ctx) {
  const { api, stream } = ctx;
  const list = document.getElementById("news");
  const empty = document.getElementById("news-empty");
  const input = document.getElementById("news-q");
  const subs = new PanelSubscriptions(stream, document.getElementById("panel-news"));
  const items = new Map();
  let query = "";

  function key(item) {
    return item.id ?? item.url ?? item.headline ?? item.title;
  }

  function row(item) {
    const s = sentimentOf(item);
    const title = item.headline ?? item.title ?? "(untitled)";
    const symbolsList = item.symbols ?? item.tickers ?? [];
    return el("li", { class: "news-item", dataset: { id: String(key(item)) } },
      el("div", { class: "news-meta" },
        el("span", { class: `sent ${s.label}`, title: s.score === null ? s.label : `${s.label} ${s.score.toFixed(2)}` },
          s.label === "positive" ? "▲" : s.label === "negative" ? "▼" : "●", ` ${s.label}`),
        item.category ? el("span", { class: "cat" }, item.category) : null,
        ...symbolsList.slice(0, 3).map((sym) => el("span", { class: "tag" }, sym)),
        el("span", { class: "muted" }, `${item.source ?? ""} · ${ago(item.published_at ?? item.published ?? item.ts)}`)),
      item.url && /^https?:/.test(item.url)
        ? el("a", { href: item.url, target: "_blank", rel: "noopener noreferrer", class: "headline" }, title)
        : el("span", { class: "headline" }, title));
  }

  function render() {
    const sorted = [...items.values()].sort((a, b) =>
      String(b.published_at ?? b.ts ?? "").localeCompare(String(a.published_at ?? a.ts ?? "")));
    list.replaceChildren(...sorted.slice(0, 100).map(row));
    empty.hidden = sorted.length > 0;
  }

  function matches(item) {
    if (!query) return true;
    const text = `${item.headline ?? item.title ?? ""} ${item.summary ?? ""} ${(item.symbols ?? []).join(" ")}`.toLowerCase();
    return query.toLowerCase().split(/\s+/).every((word) => text.includes(word));
  }

  function onFrame(data) {
    if (!data) return;
    for (const item of Array.isArray(data) ? data : listOf(data, "items", "news").length ? listOf(data, "items", "news") : [data]) {
      if (matches(item)) items.set(key(item), item);
    }
    render();
  }

  async function reload() {
    subs.set([["news:all", onFrame]]);
    empty.textContent = "Loading news…";
    try {
      const body = await api.get(`/news?limit=50${query ? `&q=${encodeURIComponent(query)}` : ""}`);
      items.clear();
      for (const item of listOf(body, "items", "news")) items.set(key(item), item);
      empty.textContent = query ? `No news matching “${query}”.` : "No news.";
      render();
    } catch (err) {
      items.clear();
      render();
      empty.hidden = false;
      empty.textContent = err.describe();
    }
  }

  document.getElementById("news-search").addEventListener("submit", (event) => {
    event.preventDefault();
    query = input.value.trim();
    reload();
  });
  return { reload };
}

function normalizeRule(raw) {
  const condition = raw.condition ?? raw.kind ?? raw.type ?? "";
  return {
    id: raw.id,
    symbol: raw.symbol,
    condition: String(condition).replace(/^price_/, ""),
    threshold: num(raw.threshold ?? raw.price ?? raw.value),
    status: raw.status ?? (raw.triggered_at ? "triggered" : raw.active === false ? "inactive" : "active"),
  };
}

export function createAlerts(ctx) {
  const { api, stream, userId, selection } = ctx;
  const body = document.querySelector("#alerts tbody");
  const empty = document.getElementById("alerts-empty");
  const live = document.getElementById("alerts-live");
  const error = document.getElementById("a-error");
  const subs = new PanelSubscriptions(stream, document.getElementById("panel-alerts"));
  let rules = [];

  function render() {
    body.replaceChildren(...rules.map((r) =>
      el("tr", { dataset: { id: String(r.id) } },
        el("td", {}, r.symbol),
        el("td", {}, r.condition),
        el("td", { class: "num" }, price(r.threshold)),
        el("td", { class: "muted" }, r.status),
        el("td", {}, el("button", {
          type: "button",
          class: "icon",
          "aria-label": `Delete alert ${r.symbol} ${r.condition} ${r.threshold}`,
          onclick: () => remove(r),
        }, "×")))));
    empty.hidden = rules.length > 0 || live.children.length > 0;
  }

  async function remove(rule) {
    try {
      await api.del(`/alerts/${encodeURIComponent(rule.id)}`);
      rules = rules.filter((r) => r.id !== rule.id);
      render();
    } catch (err) {
      showError(error, err);
    }
  }

  function onFrame(data) {
    if (!data) return;
    const message = data.summary ?? data.message ?? `${data.symbol ?? ""} ${data.condition ?? ""} ${data.value ?? data.price ?? ""}`.trim();
    live.prepend(el("li", { class: "alert-event" }, el("span", { class: "muted" }, new Date().toLocaleTimeString("en-GB", { hour12: false })), ` ${message}`));
    while (live.children.length > 20) live.lastChild.remove();
    ctx.toast(`Alert: ${message}`, "alert");
    reload().catch(() => {});
  }

  async function reload() {
    subs.set([[`alerts:${userId}`, onFrame]]);
    try {
      rules = listOf(await api.get("/alerts"), "alerts", "rules").map(normalizeRule);
      render();
    } catch (err) {
      empty.hidden = false;
      empty.textContent = err.describe();
    }
  }

  document.getElementById("alert-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const symbolInput = document.getElementById("a-symbol");
    const symbol = (symbolInput.value || selection.symbol || "").trim().toUpperCase();
    const threshold = num(document.getElementById("a-price").value);
    const condition = document.getElementById("a-cond").value;
    if (!symbol || threshold === null || threshold <= 0) {
      showError(error, "Symbol and a positive price are required");
      return;
    }
    showError(error, null);
    try {
      const created = await api.post("/alerts", { symbol, condition: `price_${condition}`, threshold: String(threshold) });
      rules.push(normalizeRule(created));
      render();
      document.getElementById("a-price").value = "";
    } catch (err) {
      showError(error, err);
    }
  });
  return { reload };
}

/** The ``summary`` string so far, out of a tool call's partial JSON as it streams in. */
function partialSummary(json) {
  const match = /"summary"\s*:\s*"((?:[^"\\]|\\.)*)/.exec(json);
  if (!match) return null;
  try {
    return JSON.parse(`"${match[1].replace(/\\$/, "")}"`);
  } catch {
    return match[1];
  }
}

export function createAnalyst(ctx) {
  const { api, stream, selection } = ctx;
  const form = document.getElementById("ai-form");
  const input = document.getElementById("ai-q");
  const answer = document.getElementById("ai-answer");
  const label = document.getElementById("ai-label");
  const error = document.getElementById("ai-error");
  const submit = document.getElementById("ai-submit");
  let current = null; // { id, unsubscribe, partial, done }

  function finish() {
    submit.disabled = false;
    answer.classList.remove("streaming");
    answer.dataset.state = "done";
    if (current && current.unsubscribe) current.unsubscribe();
    if (current) current.done = true;
  }

  function renderResult(body) {
    const result = body.result || {};
    const source = body.source;
    label.textContent = body.label || (source === "offline" ? "offline analyst" : body.model || source || "");
    answer.replaceChildren(
      el("div", { class: "ai-head" },
        el("span", { class: `outlook ${result.outlook || "neutral"}` }, String(result.outlook || "").toUpperCase()),
        result.confidence !== undefined ? el("span", { class: "muted" }, ` confidence ${Math.round(result.confidence * 100)}%`) : null,
        body.cached ? el("span", { class: "muted" }, " · cached") : null),
      el("p", { class: "ai-summary" }, result.summary || ""),
      result.key_points && result.key_points.length ? el("ul", { class: "ai-points" }, ...result.key_points.map((k) => el("li", {}, k))) : null,
      result.risks && result.risks.length ? el("ul", { class: "ai-risks" }, ...result.risks.map((k) => el("li", {}, `Risk: ${k}`))) : null);
    finish();
  }

  async function checkStored(id) {
    if (!current || current.id !== id || current.done) return;
    try {
      const body = await api.get(`/ai/analyses/${encodeURIComponent(id)}`);
      if (!current || current.id !== id || current.done) return;
      if (body.status === "done") renderResult(body);
      else if (body.status === "failed") {
        showError(error, `Analysis failed (${body.error_code || "error"})`);
        finish();
      }
    } catch (err) {
      showError(error, err);
    }
  }

  function onFrame(id) {
    return (data, type) => {
      if (!current || current.id !== id) return;
      // The answer may be published before this subscription lands: look it up once subscribed.
      if (type === "snapshot") {
        // The stream so far ({seq, text, partial_json, final}); null when it has not begun.
        if (!data) return checkStored(id);
        current.seq = data.seq || 0;
        if (data.final && data.final.type === "error") {
          showError(error, `Analysis failed (${data.final.code || "error"})`);
          finish();
        } else if (data.final) renderResult(data.final);
        else {
          answer.textContent = data.text || "";
          current.partial = data.partial_json || "";
          const summary = partialSummary(current.partial);
          if (summary !== null) answer.textContent = summary;
        }
        return;
      }
      if (!data) return;
      // An update already folded into the snapshot comes again: skip it.
      if (typeof data.seq === "number" && data.seq <= (current.seq || 0)) return;
      if (typeof data.seq === "number") current.seq = data.seq;
      if (data.type === "delta") {
        if (typeof data.text === "string") answer.textContent += data.text;
        if (typeof data.partial_json === "string") {
          current.partial += data.partial_json;
          const summary = partialSummary(current.partial);
          if (summary !== null) answer.textContent = summary;
        }
      } else if (data.type === "retry") {
        label.textContent = `upstream busy, retry ${data.attempt}…`;
      } else if (data.type === "result") {
        renderResult(data);
      } else if (data.type === "error") {
        showError(error, `Analysis failed (${data.code || "error"})`);
        finish();
      }
    };
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const symbol = selection.symbol;
    if (!symbol) {
      showError(error, "Select a symbol first");
      return;
    }
    const question = input.value.trim();
    showError(error, null);
    if (current && current.unsubscribe) current.unsubscribe();
    current = null;
    answer.textContent = "";
    label.textContent = "";
    answer.dataset.state = "streaming";
    answer.classList.add("streaming");
    submit.disabled = true;
    try {
      const request = { symbols: [symbol], kind: "technical" };
      if (question.length >= 3) request.question = question;
      const body = await api.post("/ai/analyze", request);
      current = { id: body.id, unsubscribe: null, partial: "", done: false };
      if (body.status === "done") {
        renderResult(body);
        return;
      }
      current.unsubscribe = stream.subscribe(body.channel || `ai:analysis:${body.id}`, onFrame(body.id));
      // Without a live connection, fall back to the stored answer.
      const id = body.id;
      setTimeout(() => checkStored(id), 5000);
      setTimeout(() => checkStored(id), 15000);
    } catch (err) {
      showError(error, err);
      finish();
    }
  });
  return {
    reload: async () => {
      if (current && !current.done) await checkStored(current.id);
    },
  };
}
