"""Record encode/decode: msgspec Structs (what ccf.schemas uses) against frozen dataclasses + orjson.

Both sides encode and decode the same trades and 20-level book deltas in one run; the result is a ratio.
Run: ``python -m benchmarks.bench_schemas [--out benchmarks/results/schemas.json]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from ccf.schemas import BookDelta, Trade, decode, encode


@dataclasses.dataclass(frozen=True, slots=True)
class DCTrade:
    venue: str
    symbol: str
    ts_event: int
    ts_recv: int
    price: float
    size: float
    side: str
    trade_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class DCDelta:
    venue: str
    symbol: str
    ts_event: int
    ts_recv: int
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]
    first_update_id: int
    last_update_id: int


def _rate(fn: Callable[[], Any], n: int, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def run(n: int = 20_000) -> dict[str, Any]:
    lv = tuple((2500.0 + i * 0.01, 1.5 + i) for i in range(20))
    trades = [Trade("binance", "ETH-USDT", i, i + 1, 2500.01, 0.5, "buy", str(i)) for i in range(n)]
    deltas = [BookDelta("binance", "ETH-USDT", i, i + 1, lv, lv, i, i) for i in range(n)]
    dc_trades = [DCTrade("binance", "ETH-USDT", i, i + 1, 2500.01, 0.5, "buy", str(i)) for i in range(n)]
    dc_deltas = [DCDelta("binance", "ETH-USDT", i, i + 1, lv, lv, i, i) for i in range(n)]

    def dc_decode_trade(b: bytes) -> DCTrade:
        return DCTrade(**orjson.loads(b))

    def dc_decode_delta(b: bytes) -> DCDelta:
        d = orjson.loads(b)
        d["bids"] = tuple(map(tuple, d["bids"]))
        d["asks"] = tuple(map(tuple, d["asks"]))
        return DCDelta(**d)

    results: dict[str, Any] = {}
    for name, recs, dcs, dc_dec in (
        ("trade", trades, dc_trades, dc_decode_trade),
        ("book_delta_20", deltas, dc_deltas, dc_decode_delta),
    ):
        enc_m = [encode(r) for r in recs]
        enc_d = [orjson.dumps(r) for r in dcs]
        res = {
            "msgspec_encode_per_s": _rate(lambda recs=recs: [encode(r) for r in recs], n),
            "dataclass_orjson_encode_per_s": _rate(lambda dcs=dcs: [orjson.dumps(r) for r in dcs], n),
            "msgspec_decode_per_s": _rate(lambda enc_m=enc_m: [decode(b) for b in enc_m], n),
            "dataclass_orjson_decode_per_s": _rate(lambda enc_d=enc_d, f=dc_dec: [f(b) for b in enc_d], n),
        }
        res["encode_ratio_msgspec_over_dc"] = res["msgspec_encode_per_s"] / res["dataclass_orjson_encode_per_s"]
        res["decode_ratio_msgspec_over_dc"] = res["msgspec_decode_per_s"] / res["dataclass_orjson_decode_per_s"]
        results[name] = res
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/schemas.json"))
    args = parser.parse_args()
    results = run()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
