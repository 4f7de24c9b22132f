"""Parse + apply on the real Binance spot ETHUSDT capture (hftbacktest, 2024-08-08/09, 79,744 messages).

Measures, in one run and on the same data (lines held in memory, so no gzip or disk time):

* ``ours_all``: every message parsed by :func:`ccf.venues.binance.parse_message` (or the REST snapshot parser),
  every book record applied to a :class:`ccf.book.SymbolBook` (spot sync rule, crossed check) -- the goal is
  >= 60k msgs/s; ``ours_depth``: the same for the 6,470 ``depthUpdate`` messages alone (the hard part);
* the parts: parsing only, and applying the pre-parsed diffs to a bare :class:`ccf.book.OrderBook`;
* the ``order-book`` C extension (``order_book.SortedDict``, what cryptofeed uses) applying the same pre-parsed
  diffs, with and without reading the best bid/ask after each diff (a sync check needs it);
* ``sortedcontainers.SortedList`` price keys instead of our bisect lists, and ``orjson.loads`` + ``float()`` per
  string instead of our msgspec parse.

Run: ``python benchmarks/bench_book.py [--out benchmarks/results/book.json]`` (or ``make bench``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from order_book import SortedDict
from sortedcontainers import SortedList

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from ccf.book import OrderBook, SymbolBook  # noqa: E402  # after the path fix above
from ccf.schemas import BookDelta, BookSnapshot, Level  # noqa: E402
from ccf.settings import load_settings  # noqa: E402
from ccf.venues import binance  # noqa: E402

FILES = ("spot_ethusdt_20240808.gz", "spot_ethusdt_20240809.gz")


def _best(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def load(data_dir: Path) -> list[tuple[int, bytes]]:
    lines: list[tuple[int, bytes]] = []
    for name in FILES:
        with gzip.open(data_dir / "hftbacktest_binance_raw_ws" / name, "rb") as f:
            for line in f:
                stamp, _, raw = line.rstrip(b"\n").partition(b" ")
                lines.append((int(stamp), raw))
    return lines


def parse_and_apply(lines: list[tuple[int, bytes]]) -> SymbolBook:
    sb = SymbolBook("binance", "ETH-USDT", binance.SpotSync())
    parse = binance.parse_message
    for ts, raw in lines:
        if raw.startswith(b'{"lastUpdateId"'):
            sb.on_snapshot(binance.parse_depth_snapshot(raw, ts, "ETHUSDT"))
            continue
        record = parse(raw, ts)
        if type(record) is BookDelta:
            sb.on_delta(record)
    return sb


class SortedListBook:
    """Our layout with ``sortedcontainers.SortedList`` keys instead of bisect lists."""

    def __init__(self, bids: list[Level], asks: list[Level]) -> None:
        self.bids = dict(bids)
        self.asks = dict(asks)
        self.bid_keys = SortedList(self.bids)
        self.ask_keys = SortedList(self.asks)

    def apply(self, bids: tuple[Level, ...], asks: tuple[Level, ...]) -> None:
        for side, keys, levels in ((self.bids, self.bid_keys, bids), (self.asks, self.ask_keys, asks)):
            for p, q in levels:
                if q:
                    if p not in side:
                        keys.add(p)
                    side[p] = q
                elif side.pop(p, None) is not None:
                    keys.remove(p)

    def top(self) -> tuple[float, float]:
        return self.bid_keys[-1], self.ask_keys[0]


def run(data_dir: Path | None = None, repeat: int = 9) -> dict[str, Any]:
    if data_dir is None:
        data_dir = load_settings().data_dir
        data_dir = data_dir if data_dir.is_absolute() else ROOT / data_dir
    lines = load(data_dir)
    depth_lines = [(ts, raw) for ts, raw in lines if b'"depthUpdate"' in raw or raw.startswith(b'{"lastUpdateId"')]
    (snap_line,) = [(ts, raw) for ts, raw in lines if raw.startswith(b'{"lastUpdateId"')]
    snap: BookSnapshot = binance.parse_depth_snapshot(snap_line[1], snap_line[0], "ETHUSDT")
    deltas = [binance.parse_depth_update(raw, ts) for ts, raw in depth_lines if not raw.startswith(b'{"lastUpdateId"')]
    # The updates a synced book applies: the diffs after the snapshot's lastUpdateId.
    live = [d for d in deltas if d.last_update_id > snap.last_update_id]
    n_levels = sum(len(d.bids) + len(d.asks) for d in live)

    final = parse_and_apply(lines)
    if not (final.valid and final.epoch == 0 and final.last_update_id == live[-1].last_update_id):
        raise RuntimeError(f"the replay did not stay in sync: {final!r}")

    def ours_apply() -> None:
        ob = OrderBook()
        ob.apply_snapshot(snap.bids, snap.asks)
        for d in live:
            ob.apply(d.bids, d.asks)
            if ob.is_crossed():
                raise AssertionError("crossed")

    def orderbook_apply(read_top: bool) -> Callable[[], None]:
        def go() -> None:
            bids, asks = SortedDict(ordering="DESC"), SortedDict(ordering="ASC")
            for p, q in snap.bids:
                bids[p] = q
            for p, q in snap.asks:
                asks[p] = q
            for d in live:
                for side, levels in ((bids, d.bids), (asks, d.asks)):
                    for p, q in levels:
                        if q:
                            side[p] = q
                        elif p in side:
                            del side[p]
                if read_top and bids.index(0)[0] >= asks.index(0)[0]:
                    raise AssertionError("crossed")
        return go

    def sortedlist_apply() -> None:
        book = SortedListBook(list(snap.bids), list(snap.asks))
        for d in live:
            book.apply(d.bids, d.asks)
            book.top()

    def parse_all() -> None:
        parse = binance.parse_message
        for ts, raw in lines:
            if not raw.startswith(b'{"lastUpdateId"'):
                parse(raw, ts)

    def parse_depth() -> None:
        parse = binance.parse_depth_update
        for ts, raw in depth_lines:
            if not raw.startswith(b'{"lastUpdateId"'):
                parse(raw, ts)

    def orjson_float_depth() -> None:
        for _, raw in depth_lines:
            if not raw.startswith(b'{"lastUpdateId"'):
                d = orjson.loads(raw)["data"]
                tuple([(float(p), float(q)) for p, q in d["b"]])
                tuple([(float(p), float(q)) for p, q in d["a"]])

    n_all, n_depth, n_live = len(lines), len(deltas), len(live)
    t = {
        "ours_all": _best(lambda: parse_and_apply(lines), repeat),
        "ours_depth": _best(lambda: parse_and_apply(depth_lines), repeat),
        "parse_all": _best(parse_all, repeat),
        "parse_depth": _best(parse_depth, repeat),
        "orjson_float_depth": _best(orjson_float_depth, repeat),
        "ours_apply": _best(ours_apply, repeat),
        "orderbook_apply": _best(orderbook_apply(False), repeat),
        "orderbook_apply_top": _best(orderbook_apply(True), repeat),
        "sortedlist_apply_top": _best(sortedlist_apply, repeat),
    }
    rates = {
        "ours_parse_apply_all_msgs_per_s": n_all / t["ours_all"],
        "ours_parse_apply_depth_msgs_per_s": (n_depth + 1) / t["ours_depth"],
        "ours_parse_all_msgs_per_s": (n_all - 1) / t["parse_all"],
        "ours_parse_depth_msgs_per_s": n_depth / t["parse_depth"],
        "orjson_float_parse_depth_msgs_per_s": n_depth / t["orjson_float_depth"],
        "ours_apply_updates_per_s": n_live / t["ours_apply"],
        "orderbook_c_apply_updates_per_s": n_live / t["orderbook_apply"],
        "orderbook_c_apply_and_top_updates_per_s": n_live / t["orderbook_apply_top"],
        "sortedlist_apply_and_top_updates_per_s": n_live / t["sortedlist_apply_top"],
    }
    return {
        "data": {"messages": n_all, "depth_updates": n_depth, "applied_updates": n_live,
                 "levels_per_update": round(n_levels / n_live, 1), "final_levels": [final.book.bid_count,
                                                                                    final.book.ask_count]},
        "rates": {k: round(v) for k, v in rates.items()},
        "us_per_depth_update": {
            "ours_parse": round(1e6 / rates["ours_parse_depth_msgs_per_s"], 2),
            "orjson_float_parse": round(1e6 / rates["orjson_float_parse_depth_msgs_per_s"], 2),
            "ours_apply_with_crossed_check": round(1e6 / rates["ours_apply_updates_per_s"], 2),
            "orderbook_c_apply": round(1e6 / rates["orderbook_c_apply_updates_per_s"], 2),
            "orderbook_c_apply_and_top": round(1e6 / rates["orderbook_c_apply_and_top_updates_per_s"], 2),
            "sortedlist_apply_and_top": round(1e6 / rates["sortedlist_apply_and_top_updates_per_s"], 2),
        },
        "ratios": {
            "ours_apply_over_orderbook_c_apply": round(rates["ours_apply_updates_per_s"]
                                                       / rates["orderbook_c_apply_updates_per_s"], 2),
            "ours_apply_over_orderbook_c_apply_and_top": round(rates["ours_apply_updates_per_s"]
                                                               / rates["orderbook_c_apply_and_top_updates_per_s"], 2),
            "ours_apply_over_sortedlist": round(rates["ours_apply_updates_per_s"]
                                                / rates["sortedlist_apply_and_top_updates_per_s"], 2),
            "ours_parse_over_orjson_float": round(rates["ours_parse_depth_msgs_per_s"]
                                                  / rates["orjson_float_parse_depth_msgs_per_s"], 2),
            "ours_all_over_goal_60k": round(rates["ours_parse_apply_all_msgs_per_s"] / 60_000, 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "book.json")
    parser.add_argument("--data-dir", type=Path, default=None, help="the shared data folder (default: settings)")
    args = parser.parse_args()
    results = run(args.data_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
