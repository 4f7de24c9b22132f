"""The stack's venue: which captures the local venue server replays, their symbols and market, read off the files.

The venue server speaks Binance's protocol (spot, or USD-M futures), so a replayed capture is a hftbacktest-format
Binance capture; ingest subscribes to the symbols found in the first lines of the files (or those given).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from ccf.errors import ConfigError
from ccf.stack.roles import Venue

if TYPE_CHECKING:
    from ccf.stack.manager import StackOptions

SNIFF_LINES = 5000


def sniff(paths: Sequence[Path], lines: int = SNIFF_LINES) -> tuple[tuple[str, ...], str]:
    """``(wire symbols, "binance" or "binance_futures")`` from the first ``lines`` lines of each capture.

    A USD-M depth update carries the previous update id ``pu``; a spot one does not.
    """
    symbols: list[str] = []
    futures = False
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"--replay {path}: no such file")
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
                for i, line in enumerate(fh):
                    if i >= lines:
                        break
                    _, _, text = line.partition(" ")
                    if not text.startswith('{"stream"'):
                        continue
                    stream = text[11 : text.find('"', 11)]
                    sym = stream.partition("@")[0].upper()
                    if sym and sym not in symbols:
                        symbols.append(sym)
                    if "@depth" in stream and not futures:
                        with_data = orjson.loads(text).get("data", {})
                        futures = "pu" in with_data
        except (OSError, EOFError, zlib.error) as exc:
            raise ConfigError(f"--replay {path}: cannot read it ({exc})") from exc
    if not symbols:
        raise ConfigError(f"--replay {', '.join(map(str, paths))}: no Binance combined-stream lines in the first "
                          f"{lines} lines (the venue server replays hftbacktest-format Binance captures)")
    return tuple(symbols), ("binance_futures" if futures else "binance")


def venue_for(options: StackOptions, port: int) -> Venue:
    """The venue of a stack: live, a replay of ``options.replay``, or the synthetic market."""
    if options.live:
        return Venue(mode="live", symbols=options.symbols or Venue().symbols)
    if options.replay:
        from ccf.capture.registry import VENUES

        wire, source = sniff(options.replay)
        symbols = options.symbols or tuple(VENUES[source].to_symbol(s) for s in wire)
        return Venue(mode="replay", files=tuple(p.resolve() for p in options.replay), speed=options.speed,
                     source=source, symbols=symbols, port=port, shift_to_now=options.shift_to_now)
    return Venue(mode="synthetic", speed=options.speed, source="binance", symbols=options.symbols or Venue().symbols,
                 port=port, shift_to_now=options.shift_to_now)
