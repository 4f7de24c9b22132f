"""Poller state: per-feed conditional-GET validators, backoff, and the bounded seen-set; its JSON file and snapshots.

:class:`PollerState` is what a Bytewax snapshot holds (frozen, picklable). The JSON file at ``state_path`` keeps the
part that must survive a plain restart (validators and seen ids); backoff restarts from zero.

>>> backoff_s(0, 60.0, 900.0), backoff_s(1, 60.0, 900.0), backoff_s(3, 60.0, 900.0), backoff_s(9, 60.0, 900.0)
(60.0, 120.0, 480.0, 900.0)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

logger = logging.getLogger(__name__)

STATE_VERSION: Final = 1
DEFAULT_MAX_SEEN: Final = 5000


def backoff_s(failures: int, interval_s: float, max_backoff_s: float) -> float:
    """Seconds until the next poll of a feed after ``failures`` consecutive failures: ``interval · 2^failures``,
    capped at ``max_backoff_s`` (but never below the plain interval). Zero failures is the plain interval."""
    if failures <= 0:
        return interval_s
    return max(interval_s, min(interval_s * 2.0 ** min(failures, 62), max_backoff_s))


@dataclass(frozen=True, slots=True)
class FeedState:
    """One feed's state. ``seen`` is ordered oldest → most recently seen."""

    etag: str | None = None
    last_modified: str | None = None
    seen: tuple[str, ...] = ()
    failures: int = 0
    next_due_ns: int = 0
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class PollerState:
    """Everything a :class:`~ccf.news.poller.NewsPoller` needs to resume, keyed by feed URL."""

    feeds: Mapping[str, FeedState] = field(default_factory=dict)


class SeenSet:
    """Insertion-ordered ids of one feed, at most ``limit`` of them; seeing an id again makes it the most recent.

    >>> s = SeenSet(["a", "b"], limit=3)
    >>> s.add("c"), s.add("a"), s.add("d"), list(s)
    (True, False, True, ['c', 'a', 'd'])
    """

    __slots__ = ("_ids", "limit")

    def __init__(self, ids: Iterable[str] = (), limit: int = DEFAULT_MAX_SEEN) -> None:
        self.limit = limit
        self._ids: dict[str, None] = {}
        for i in ids:
            self.add(i)

    def add(self, item_id: str) -> bool:
        """Record ``item_id``; True if it was new."""
        new = item_id not in self._ids
        if not new:
            del self._ids[item_id]  # re-insert at the end: an id still in the feed must not be evicted
        self._ids[item_id] = None
        while len(self._ids) > self.limit:
            del self._ids[next(iter(self._ids))]
        return new

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._ids

    def __iter__(self) -> Any:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def state_path_for(path: Path, feed: str) -> Path:
    """A feed's own state file next to ``path`` (used when each feed is its own Bytewax partition, so no two
    partitions ever write one file).

    >>> state_path_for(Path("/tmp/news-seen.json"), "https://example.com/rss").name
    'news-seen.157a72a2d301.json'
    """
    digest = hashlib.sha256(feed.encode()).hexdigest()[:12]
    return path.with_name(f"{path.stem}.{digest}{path.suffix or '.json'}")


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def load_state(path: Path, limit: int = DEFAULT_MAX_SEEN) -> PollerState:
    """Read the JSON state file. A missing file is an empty state; an unreadable one is logged and ignored (the cost is
    re-emitting items once, not a poller that cannot start)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return PollerState()
    except (OSError, ValueError) as exc:
        logger.warning("news state %s unreadable, starting empty: %s", path, exc)
        return PollerState()
    feeds_raw = raw.get("feeds") if isinstance(raw, dict) else None
    if not isinstance(feeds_raw, dict) or raw.get("version") != STATE_VERSION:
        logger.warning("news state %s has an unknown shape or version, starting empty", path)
        return PollerState()
    feeds: dict[str, FeedState] = {}
    for url, entry in feeds_raw.items():
        if not isinstance(url, str) or not isinstance(entry, dict):
            continue
        seen = entry.get("seen")
        ids = [i for i in seen if isinstance(i, str)] if isinstance(seen, list) else []
        feeds[url] = FeedState(
            etag=_str_or_none(entry.get("etag")),
            last_modified=_str_or_none(entry.get("last_modified")),
            seen=tuple(ids[-limit:]),
        )
    return PollerState(feeds)


def save_state(path: Path, state: PollerState) -> None:
    """Write the restart part of ``state`` to ``path`` atomically (a temporary file in the same folder, fsynced, then
    renamed over the old one), so a crash leaves either the old file or the new one."""
    payload = {
        "version": STATE_VERSION,
        "feeds": {
            url: {"etag": fs.etag, "last_modified": fs.last_modified, "seen": list(fs.seen)}
            for url, fs in state.feeds.items()
        },
    }
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
