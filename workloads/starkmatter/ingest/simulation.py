"""A seeded market simulation: random-walk mids, spreads, trades, depth and bad messages.

Pure (no I/O, no clock): :meth:`MarketSimulation.step` takes the time and returns wire
messages as JSON text. The simulator server (:mod:`starkmatter.ingest.simulator`) serves
them over WebSocket. Prices walk geometrically with a realistic annualized volatility,
scaled to the real time between updates, and are rounded to a one-cent tick. Every
message but the malformed ones carries a per-symbol ``seq`` so a client can detect gaps
and resume after a reconnect.
"""

from __future__ import annotations

import dataclasses
import decimal
import enum
import json
import math
import random

_NS_PER_S = 1_000_000_000
_YEAR_S = 252 * 6.5 * 3600  # trading seconds in a year
_TICK = 100  # one cent, in 1e-4 units (prices are generated as integers of 1e-4)


class BadKind(enum.StrEnum):
    """Deliberately bad messages, and the validation reason each must be refused with."""

    OUT_OF_BAND = "price_out_of_band"
    NEGATIVE_VOLUME = "negative_volume"
    STALE = "stale_timestamp"
    FUTURE = "future_timestamp"
    UNKNOWN_SYMBOL = "unknown_symbol"
    CROSSED = "crossed_quote"
    MALFORMED = "malformed"
    DUPLICATE = "duplicate"


DEFAULT_SYMBOLS: dict[str, str] = {
    "AAPL": "227.50", "MSFT": "415.20", "GOOGL": "172.80", "AMZN": "186.40",
    "NVDA": "131.60", "META": "563.10", "TSLA": "251.90", "BRK.B": "452.30",
    "JPM": "222.70", "V": "281.50", "UNH": "591.80", "XOM": "117.90",
    "JNJ": "160.30", "WMT": "80.70", "MA": "497.20", "PG": "171.60",
    "HD": "405.10", "CVX": "150.20", "KO": "69.80", "BTC/USD": "67250.00",
}  # fmt: skip


def _fmt(units: int) -> str:
    """1e-4 integer units as a JSON number with up to four decimals."""
    whole, frac = divmod(units, 10_000)
    return f"{whole}.{frac:04d}".rstrip("0").rstrip(".") if frac else str(whole)


@dataclasses.dataclass
class _Symbol:
    name: str
    reference: int
    mid: float
    seq: int = 0
    last_ns: int = 0


@dataclasses.dataclass(frozen=True)
class Emitted:
    symbol: str | None
    seq: int | None
    text: str
    bad: BadKind | None = None


class MarketSimulation:
    def __init__(
        self,
        symbols: dict[str, str] | None = None,
        *,
        seed: int = 1,
        bad_share: float = 0.0,
        depth_levels: int = 5,
        annual_volatility: float = 0.35,
    ) -> None:
        self.random = random.Random(seed)  # noqa: S311 - a simulation, not secrecy
        self.bad_share = bad_share
        self.depth_levels = depth_levels
        self.volatility = annual_volatility
        self.symbols = {
            name: _Symbol(name, int(decimal.Decimal(ref) * 10_000), float(ref))
            for name, ref in (symbols or DEFAULT_SYMBOLS).items()
        }
        self._names = list(self.symbols)
        self._last_good: Emitted | None = None
        self.bad_counts: dict[BadKind, int] = dict.fromkeys(BadKind, 0)
        self.good_count = 0

    def references(self) -> dict[str, str]:
        return {s.name: _fmt(s.reference) for s in self.symbols.values()}

    def _walk(self, sym: _Symbol, now_ns: int) -> int:
        dt = max((now_ns - sym.last_ns) / _NS_PER_S, 1e-3) if sym.last_ns else 1.0
        sym.last_ns = now_ns
        sigma = self.volatility * math.sqrt(dt / _YEAR_S)
        sym.mid *= math.exp(sigma * self.random.gauss(0.0, 1.0))
        # Mean reversion toward the reference keeps a long dev session inside daily limits.
        sym.mid += (sym.reference / 10_000 - sym.mid) * min(dt / 3600, 1.0)
        return max(_TICK, round(sym.mid * 10_000 / _TICK) * _TICK)

    def step(self, now_ns: int, count: int) -> list[Emitted]:
        """``count`` messages stamped around ``now_ns``."""
        out = []
        for offset in range(count):
            # Distinct nanoseconds: two genuine messages are never identical.
            ts = now_ns + offset
            if self.bad_share and self.random.random() < self.bad_share:
                out.append(self._bad(ts))
            else:
                message = self._good(ts)
                self._last_good = message
                self.good_count += 1
                out.append(message)
        return out

    def _good(self, now_ns: int, *, symbol: str | None = None) -> Emitted:
        sym = self.symbols[symbol or self.random.choice(self._names)]
        mid = self._walk(sym, now_ns)
        half = _TICK * self.random.randint(1, 3)
        bid, ask = max(_TICK, mid - half), mid + half
        sym.seq += 1
        roll = self.random.random()
        head = f'{{"seq":{sym.seq},"symbol":"{sym.name}","ts":{now_ns},'
        if roll < 0.45:
            text = (
                f'{head}"type":"quote","bid":{_fmt(bid)},"ask":{_fmt(ask)},'
                f'"bid_size":{self.random.randint(1, 50) * 100},'
                f'"ask_size":{self.random.randint(1, 50) * 100}}}'
            )
        elif roll < 0.85:
            price = ask if self.random.random() < 0.5 else bid
            text = (
                f'{head}"type":"trade","price":{_fmt(price)},'
                f'"size":{self.random.randint(1, 20) * 10},"trade_id":"{sym.name}-{sym.seq}"}}'
            )
        else:
            levels = range(self.depth_levels)
            bids = ",".join(
                f"[{_fmt(max(_TICK, bid - i * _TICK))},{self.random.randint(1, 80) * 100}]"
                for i in levels
            )
            asks = ",".join(
                f"[{_fmt(ask + i * _TICK)},{self.random.randint(1, 80) * 100}]" for i in levels
            )
            text = f'{head}"type":"depth","bids":[{bids}],"asks":[{asks}]}}'
        return Emitted(sym.name, sym.seq, text)

    def _bad(self, now_ns: int) -> Emitted:
        kind = self.random.choice(list(BadKind))
        if kind is BadKind.DUPLICATE and self._last_good is None:
            kind = BadKind.MALFORMED
        self.bad_counts[kind] += 1
        if kind is BadKind.MALFORMED:
            return Emitted(None, None, '{"type":"trade","symbol":"AAPL","price":', kind)
        if kind is BadKind.DUPLICATE:
            assert self._last_good is not None
            last = self._last_good
            return Emitted(last.symbol, last.seq, last.text, kind)
        if kind is BadKind.UNKNOWN_SYMBOL:
            text = (
                f'{{"type":"trade","symbol":"ZZZQ","ts":{now_ns},"price":12.5,"size":100,'
                f'"trade_id":"zz-{now_ns}"}}'
            )
            return Emitted(None, None, text, kind)
        sym = self.symbols[self.random.choice(self._names)]
        mid = self._walk(sym, now_ns)
        sym.seq += 1
        ts, price, size = now_ns, mid, "100"
        if kind is BadKind.OUT_OF_BAND:
            price = sym.reference * 3 // 2
        elif kind is BadKind.NEGATIVE_VOLUME:
            size = "-100"
        elif kind is BadKind.STALE:
            ts = now_ns - 3600 * _NS_PER_S
        elif kind is BadKind.FUTURE:
            ts = now_ns + 3600 * _NS_PER_S
        if kind is BadKind.CROSSED:
            text = json.dumps(
                {
                    "seq": sym.seq, "symbol": sym.name, "ts": ts, "type": "quote",
                    "bid": _fmt(mid + 2 * _TICK), "ask": _fmt(max(_TICK, mid - 2 * _TICK)),
                    "bid_size": 100, "ask_size": 100,
                }
            )  # fmt: skip
        else:
            text = (
                f'{{"seq":{sym.seq},"symbol":"{sym.name}","ts":{ts},"type":"trade",'
                f'"price":{_fmt(price)},"size":{size},"trade_id":"{sym.name}-{sym.seq}"}}'
            )
        return Emitted(sym.name, sym.seq, text, kind)
