"""What the websocket source (:mod:`ccf.wsource`, which re-exports all of this) emits and how it is configured.

See :mod:`ccf.wsource` for the item kinds, the health kinds and what each setting of :class:`WsConfig` does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final, Literal, TypeAlias

import msgspec

from ccf.settings import VenueSettings

END_OF_DATA_REASON: Final = "end of data"
"""Close reason (with code 1000) by which a server says its data has ended."""

HealthKind: TypeAlias = Literal[
    "connecting", "connected", "subscribed", "disconnected", "stalled", "max_age", "backoff", "rest_failed",
    "worker_died", "failed", "ended",
]  # fmt: skip


class Frame(msgspec.Struct, frozen=True, tag="frame"):
    """One raw message as received (``url == ""``) or one REST answer (``url`` = what was fetched)."""

    conn: str
    session: int
    ts_recv: int
    data: str | bytes
    url: str = ""


class HealthEvent(msgspec.Struct, frozen=True, tag="health"):
    """Something that happened to a connection (see the module docstring for the kinds)."""

    conn: str
    session: int
    ts: int
    kind: HealthKind
    detail: str = ""
    attempt: int = 0


WsItem: TypeAlias = Frame | HealthEvent


@dataclass(frozen=True)
class WsConnection:
    """One connection: where to connect, what to send after connecting, which REST bodies to fetch per session."""

    name: str
    url: str
    subscribe: tuple[str, ...] = ()
    rest_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class WsConfig:
    """Transport behaviour shared by all connections (see the module docstring)."""

    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_tries: int = 10
    max_restarts: int = 5
    silence_timeout_s: float = 30.0
    max_age_s: float | None = 23.5 * 3600
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    ping_interval_s: float | None = 20.0
    rest_tries: int = 3
    rest_timeout_s: float = 10.0
    max_frames: int | None = None
    stop_on_end_of_data: bool = False
    health_events: bool = True
    poll_interval_s: float = 0.005
    use_env_proxy: bool = True

    @classmethod
    def from_settings(cls, venues: VenueSettings, **overrides: Any) -> WsConfig:
        base = cls(
            backoff_initial_s=venues.backoff_initial_s,
            backoff_max_s=venues.backoff_max_s,
            max_tries=venues.reconnect_max_tries,
            max_restarts=venues.max_worker_restarts,
            silence_timeout_s=venues.silence_timeout_s,
        )
        return replace(base, **overrides)
