// A small hand-written canvas candlestick chart: candles, volume, price axis, last price.

import { num, toMillis } from "./format.js";

const COLORS = {
  bg: "#0b0f14",
  grid: "#1a222c",
  text: "#7d8a99",
  up: "#26a69a",
  down: "#ef5350",
  last: "#f0b90b",
  volume: "rgba(125,138,153,0.25)",
};

export function normalizeBar(raw) {
  const start = toMillis(raw.start ?? raw.start_ts ?? raw.ts ?? raw.time ?? raw.t ?? raw.start_ns);
  const open = num(raw.open ?? raw.o);
  const close = num(raw.close ?? raw.c);
  if (start === null || open === null || close === null) return null;
  return {
    start,
    open,
    high: num(raw.high ?? raw.h) ?? Math.max(open, close),
    low: num(raw.low ?? raw.l) ?? Math.min(open, close),
    close,
    volume: num(raw.volume ?? raw.v) ?? 0,
  };
}

export class CandleChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.bars = [];
    this.intervalMs = 60000;
    this.maxBars = 240;
    this.pending = false;
    new ResizeObserver(() => this.draw()).observe(canvas.parentElement);
  }

  setBars(bars, intervalMs) {
    this.intervalMs = intervalMs;
    this.bars = bars.filter(Boolean).sort((a, b) => a.start - b.start).slice(-this.maxBars);
    this.schedule();
  }

  /** Extend the chart with a live trade/quote price at time ``ms``. */
  tick(priceValue, ms, size = 0) {
    const p = num(priceValue);
    if (p === null) return;
    const start = Math.floor(ms / this.intervalMs) * this.intervalMs;
    const last = this.bars[this.bars.length - 1];
    if (last && start === last.start) {
      last.high = Math.max(last.high, p);
      last.low = Math.min(last.low, p);
      last.close = p;
      last.volume += size;
    } else if (!last || start > last.start) {
      this.bars.push({ start, open: p, high: p, low: p, close: p, volume: size });
      if (this.bars.length > this.maxBars) this.bars.shift();
    }
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const parent = this.canvas.parentElement;
    const width = Math.max(100, parent.clientWidth);
    const height = Math.max(80, parent.clientHeight);
    const ratio = window.devicePixelRatio || 1;
    if (this.canvas.width !== width * ratio || this.canvas.height !== height * ratio) {
      this.canvas.width = width * ratio;
      this.canvas.height = height * ratio;
      this.canvas.style.width = `${width}px`;
      this.canvas.style.height = `${height}px`;
    }
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.fillStyle = COLORS.bg;
    ctx.fillRect(0, 0, width, height);
    const axisW = 64;
    const timeH = 18;
    const plotW = width - axisW;
    const plotH = height - timeH;
    const volH = Math.round(plotH * 0.18);
    const priceH = plotH - volH - 6;
    const slot = 7;
    const visible = this.bars.slice(-Math.max(10, Math.floor(plotW / slot)));
    if (!visible.length) return;
    let lo = Infinity;
    let hi = -Infinity;
    let vmax = 0;
    for (const b of visible) {
      lo = Math.min(lo, b.low);
      hi = Math.max(hi, b.high);
      vmax = Math.max(vmax, b.volume);
    }
    if (hi === lo) {
      hi += hi * 0.001 || 1;
      lo -= lo * 0.001 || 1;
    }
    const pad = (hi - lo) * 0.08;
    hi += pad;
    lo -= pad;
    const y = (p) => 4 + ((hi - p) / (hi - lo)) * (priceH - 4);
    const step = plotW / Math.max(visible.length, Math.floor(plotW / slot));
    const x0 = plotW - visible.length * step;

    ctx.font = "11px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
    ctx.textBaseline = "middle";
    ctx.strokeStyle = COLORS.grid;
    ctx.fillStyle = COLORS.text;
    ctx.lineWidth = 1;
    const ticks = 6;
    const digits = hi < 10 ? 4 : 2;
    for (let i = 0; i <= ticks; i += 1) {
      const p = lo + ((hi - lo) * i) / ticks;
      const yy = Math.round(y(p)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(0, yy);
      ctx.lineTo(plotW, yy);
      ctx.stroke();
      ctx.fillText(p.toFixed(digits), plotW + 6, yy);
    }
    ctx.textBaseline = "top";
    const every = Math.max(1, Math.ceil(70 / step));
    visible.forEach((b, i) => {
      if (i % every !== 0) return;
      const xx = Math.round(x0 + i * step + step / 2) + 0.5;
      ctx.strokeStyle = COLORS.grid;
      ctx.beginPath();
      ctx.moveTo(xx, 0);
      ctx.lineTo(xx, plotH);
      ctx.stroke();
      const label = new Date(b.start).toLocaleTimeString("en-GB", {
        hour12: false,
        hour: "2-digit",
        minute: "2-digit",
        second: this.intervalMs < 60000 ? "2-digit" : undefined,
      });
      ctx.fillStyle = COLORS.text;
      ctx.fillText(label, Math.max(0, xx - 18), plotH + 3);
    });

    const body = Math.max(1, Math.floor(step * 0.7));
    visible.forEach((b, i) => {
      const cx = Math.round(x0 + i * step + step / 2);
      const color = b.close >= b.open ? COLORS.up : COLORS.down;
      if (vmax > 0) {
        const vh = (b.volume / vmax) * volH;
        ctx.fillStyle = COLORS.volume;
        ctx.fillRect(cx - body / 2, plotH - vh, body, vh);
      }
      ctx.strokeStyle = color;
      ctx.beginPath();
      ctx.moveTo(cx + 0.5, y(b.high));
      ctx.lineTo(cx + 0.5, y(b.low));
      ctx.stroke();
      ctx.fillStyle = color;
      const top = y(Math.max(b.open, b.close));
      const h = Math.max(1, y(Math.min(b.open, b.close)) - top);
      ctx.fillRect(cx - Math.floor(body / 2), top, body, h);
    });

    const lastBar = visible[visible.length - 1];
    const ly = Math.round(y(lastBar.close)) + 0.5;
    ctx.setLineDash([3, 3]);
    ctx.strokeStyle = COLORS.last;
    ctx.beginPath();
    ctx.moveTo(0, ly);
    ctx.lineTo(plotW, ly);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = COLORS.last;
    ctx.fillRect(plotW, ly - 8, axisW, 16);
    ctx.fillStyle = "#000";
    ctx.textBaseline = "middle";
    ctx.fillText(lastBar.close.toFixed(digits), plotW + 6, ly);
  }
}
