// Number and time formatting, and small DOM helpers shared by the panels.

export function num(value) {
  if (value === null || value === undefined || value === "") return null;
  const n = typeof value === "number" ? value : Number(value);
  return Number.isFinite(n) ? n : null;
}

export function price(value, digits = 2) {
  const n = num(value);
  if (n === null) return "–";
  const d = Math.abs(n) < 1 ? Math.max(digits, 4) : digits;
  return n.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
}

export function qty(value) {
  const n = num(value);
  if (n === null) return "–";
  return n.toLocaleString("en-US", { maximumFractionDigits: 4 });
}

export function money(value) {
  const n = num(value);
  if (n === null) return "–";
  const sign = n < 0 ? "-" : "";
  return `${sign}$${Math.abs(n).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
}

export function signedMoney(value) {
  const n = num(value);
  if (n === null) return "–";
  return `${n > 0 ? "+" : ""}${money(n)}`;
}

export function pct(value) {
  const n = num(value);
  if (n === null) return "–";
  return `${n > 0 ? "+" : ""}${n.toFixed(2)}%`;
}

export function sign(value) {
  const n = num(value);
  if (n === null || n === 0) return "flat";
  return n > 0 ? "up" : "down";
}

/** Milliseconds since the epoch from an ISO string, epoch seconds/ms/ns, or a Date. */
export function toMillis(value) {
  if (value === null || value === undefined) return null;
  if (value instanceof Date) return value.getTime();
  if (typeof value === "number") {
    if (value > 1e17) return value / 1e6;
    if (value > 1e14) return value / 1e3;
    if (value > 1e11) return value;
    return value * 1000;
  }
  const parsed = Date.parse(value);
  return Number.isNaN(parsed) ? null : parsed;
}

export function clock(value) {
  const ms = toMillis(value);
  if (ms === null) return "–";
  return new Date(ms).toLocaleTimeString("en-GB", { hour12: false });
}

export function ago(value) {
  const ms = toMillis(value);
  if (ms === null) return "";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return new Date(ms).toLocaleDateString("en-GB");
}

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Set a cell's text; when it changed, flash it up or down for a moment. */
export function setFlash(cell, text, direction) {
  if (cell.textContent === text) return;
  const had = cell.textContent !== "" && cell.textContent !== "–";
  cell.textContent = text;
  if (!had) return;
  cell.classList.remove("flash-up", "flash-down");
  // Restart the CSS animation (reading offsetWidth forces a reflow).
  void cell.offsetWidth;
  cell.classList.add(direction === "down" ? "flash-down" : "flash-up");
}

export function showError(node, err) {
  if (!node) return;
  if (!err) {
    node.hidden = true;
    node.textContent = "";
    return;
  }
  node.hidden = false;
  node.textContent = typeof err === "string" ? err : err.describe ? err.describe() : String(err.message || err);
}

/** The list inside a REST body: a bare array, or the first array-valued field. */
export function listOf(body, ...keys) {
  if (Array.isArray(body)) return body;
  if (!body || typeof body !== "object") return [];
  for (const key of [...keys, "items", "data", "results"]) {
    if (Array.isArray(body[key])) return body[key];
  }
  return [];
}
