"""What a :class:`~ccf.venue_server.server.VenueServer` serves and how: :class:`ServerConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ccf.synthetic import DEFAULT_START_NS, SyntheticVenue
from ccf.venue_server.binance_wire import Market
from ccf.venue_server.faults import Fault
from ccf.venue_server.feeds import Feed, ReplayFeed, SyntheticFeed


@dataclass(frozen=True)
class ServerConfig:
    """What the server serves.

    ``speed`` 0 = as fast as the clients that keep up read; ``faults`` apply to every new connection.
    ``shift_to_now`` moves every time field of every message (and of REST snapshots) by one offset, the first event
    time to the server's start (wall clock); off, the recorded (or simulated) times are sent as they are.
    ``queue_size`` bounds each connection's queue: at ``speed > 0`` a connection whose queue is full is closed at
    once (1008, a slow consumer, as Binance does); at speed 0 the feed first waits up to ``slow_client_grace_s`` for
    room in it (the stuck client holds the others up that long, once).
    """

    mode: Literal["synthetic", "replay"] = "synthetic"
    symbols: tuple[str, ...] = ("BTC-USDT", "ETH-USDT")
    seed: int = 7
    alpha: float = 0.8
    speed: float = 1.0
    files: tuple[Path, ...] = ()
    market: Market = "spot"
    faults: tuple[Fault, ...] = ()
    max_conn_age_s: float | None = None
    duration_s: float | None = None
    start_ns: int = DEFAULT_START_NS
    host: str = "127.0.0.1"
    port: int = 0
    ping_interval_s: float | None = None
    queue_size: int = 4096
    shift_to_now: bool = False
    slow_client_grace_s: float = 5.0

    def __post_init__(self) -> None:
        if self.speed < 0 or self.queue_size < 1 or self.slow_client_grace_s < 0:
            raise ValueError(
                "speed and slow_client_grace_s must be >= 0 and queue_size >= 1, got "
                f"{self.speed}, {self.slow_client_grace_s}, {self.queue_size}"
            )
        if self.mode == "replay" and not self.files:
            raise ValueError("replay mode needs at least one capture file")
        if self.mode == "synthetic" and not self.symbols:
            raise ValueError("synthetic mode needs at least one symbol")

    def make_feed(self) -> Feed:
        if self.mode == "replay":
            return ReplayFeed(self.files, self.market)
        end = None if self.duration_s is None else self.start_ns + round(self.duration_s * 1e9)
        venue = SyntheticVenue(list(self.symbols), self.seed, alpha=self.alpha, start_ns=self.start_ns, end_ns=end)
        return SyntheticFeed(venue, self.market)
