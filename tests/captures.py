"""Derived captures for tests, written at test time from the shared ones (never copied into the repo): hftbacktest
raw-websocket lines (``<receive ns> <json>``) with their REST snapshot lines moved."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson

from ccf.venue_server.binance_wire import Market

Line = tuple[str, str]
"""``(receive ts text, raw json)`` of one capture line, as written."""


def capture_lines(*files: Path) -> list[Line]:
    out = []
    for path in files:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                ts, _, text = line.rstrip("\n").partition(" ")
                if text:
                    out.append((ts, text))
    return out


def _bridges(market: Market, last: int, data: dict[str, int]) -> bool:
    """Binance's documented bridging condition, written out here independently of the code under test."""
    if market == "spot":
        return data["U"] <= last + 1 <= data["u"]
    return data["U"] <= last <= data["u"]


def move_snapshots(lines: list[Line], market: Market, diffs_after_bridge: int) -> list[Line]:
    """Each snapshot line moved to ``diffs_after_bridge`` depth diffs after the diff that bridges it."""
    snaps = [(i, text) for i, (_, text) in enumerate(lines) if text.startswith('{"lastUpdateId"')]
    out = [line for line in lines if not line[1].startswith('{"lastUpdateId"')]
    for _, snap in snaps:
        last = orjson.loads(snap)["lastUpdateId"]
        bridge = next(i for i, (_, t) in enumerate(out)
                      if '"depthUpdate"' in t and _bridges(market, last, orjson.loads(t)["data"]))  # fmt: skip
        at, seen = bridge, 0
        while seen < diffs_after_bridge:
            at += 1
            seen += '"depthUpdate"' in out[at][1]
        out.insert(at + 1, (out[at][0], snap))
    return out


def write_capture(path: Path, lines: list[Line]) -> Path:
    path.write_text("".join(f"{ts} {text}\n" for ts, text in lines), encoding="utf-8")
    return path
