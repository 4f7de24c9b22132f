"""Bytewax input: news items from a :class:`~ccf.news.poller.NewsPoller` polled in a background thread.

Parallelism: one partition for all feeds (the default; news is a trickle), or one partition per feed
(``per_feed=True``), each with its own state file next to ``state_path``. Delivery: the snapshot is the poller state
as of the last batch handed to Bytewax, so resuming from a snapshot neither repeats nor skips an item (items fetched
but not yet handed over are fetched again, and are new to the restored seen-set). Without recovery, the JSON state
file gives at-most-once across restarts (see :mod:`ccf.news.poller`).

``next_batch`` never blocks: the partition's constructor starts a thread that polls when feeds are due and queues
``(items, state)`` pairs; ``next_batch`` drains the queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from ccf.news.poller import NewsPoller
from ccf.news.state import PollerState, state_path_for
from ccf.schemas import NewsItem
from ccf.settings import NewsSettings

logger = logging.getLogger(__name__)

SINGLE_PART: Final = "news"
_IDLE: Final = timedelta(milliseconds=100)
_MAX_WAIT_S: Final = 0.5


class _End:
    """Queued by the thread when it stops; carries the exception that stopped it, if any."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error


class _NewsPartition(StatefulSourcePartition[NewsItem, PollerState]):
    def __init__(self, poller: NewsPoller, name: str, max_polls: int | None, stop_after_s: float | None) -> None:
        self._poller = poller
        self._emitted = poller.state()
        self._queue: queue.SimpleQueue[tuple[list[NewsItem], PollerState] | _End] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._max_polls = max_polls
        self._stop_after_s = stop_after_s
        self._ended = False
        self._idle = False
        self._thread = threading.Thread(target=self._run, name=f"ccf-news-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        error: Exception | None = None
        started = time.monotonic()
        polls = 0
        try:
            while not self._stop.is_set():
                if self._stop_after_s is not None and time.monotonic() - started >= self._stop_after_s:
                    break
                now = time.time_ns()
                due = self._poller.next_due_ns()
                if now < due:
                    self._stop.wait(min((due - now) / 1e9, _MAX_WAIT_S))
                    continue
                items = self._poller.poll_once(now)
                self._queue.put((items, self._poller.state()))
                polls += 1
                if self._max_polls is not None and polls >= self._max_polls:
                    break
        except Exception as exc:  # handed to next_batch, which re-raises it on the dataflow's thread
            error = exc
        finally:
            self._queue.put(_End(error))

    def next_batch(self) -> list[NewsItem]:
        if self._ended:
            raise StopIteration
        batch: list[NewsItem] = []
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(entry, _End):
                self._ended = True
                self.close()
                if entry.error is not None:
                    raise entry.error
                break
            items, state = entry
            batch.extend(items)
            self._emitted = state
        self._idle = not batch
        if self._ended and not batch:
            raise StopIteration
        return batch

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + _IDLE if self._idle else None

    def snapshot(self) -> PollerState:
        return self._emitted

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self._poller.timeout_s * 4)
        if self._thread.is_alive():
            # still inside a fetch: closing its client under it would only turn that into an error; it is a daemon
            logger.warning("news source thread %s did not stop in time; leaving it", self._thread.name)
        else:
            self._poller.close()


class NewsSource(FixedPartitionedSource[NewsItem, PollerState]):
    """Emits :class:`NewsItem` s from ``feeds``.

    ``max_polls`` (rounds in which at least one feed was fetched) or ``stop_after_s`` (wall seconds) end the source
    cleanly, for tests and bounded runs; by default it runs until the dataflow stops. Other keyword arguments go to
    :class:`NewsPoller`.
    """

    def __init__(
        self,
        feeds: Iterable[str],
        *,
        state_path: Path | None = None,
        per_feed: bool = False,
        max_polls: int | None = None,
        stop_after_s: float | None = None,
        **poller_kwargs: Any,
    ) -> None:
        self.feeds = list(dict.fromkeys(feeds))
        self.state_path = state_path
        self.per_feed = per_feed
        self.max_polls = max_polls
        self.stop_after_s = stop_after_s
        self.poller_kwargs = poller_kwargs

    @classmethod
    def from_settings(cls, settings: NewsSettings, **overrides: Any) -> NewsSource:
        """A source from the ``news`` settings section (``overrides``, including ``feeds``, win)."""
        kwargs: dict[str, Any] = {
            "poll_interval_s": settings.poll_interval_s,
            "max_backoff_s": settings.max_backoff_s,
            "state_path": settings.state_path,
        }
        kwargs.update(overrides)
        return cls(kwargs.pop("feeds", settings.feeds), **kwargs)

    def list_parts(self) -> list[str]:
        return list(self.feeds) if self.per_feed else [SINGLE_PART]

    def build_part(
        self, step_id: str, for_part: str, resume_state: PollerState | None
    ) -> StatefulSourcePartition[NewsItem, PollerState]:
        feeds = [for_part] if self.per_feed else self.feeds
        path = self.state_path
        if path is not None and self.per_feed:
            path = state_path_for(path, for_part)
        poller = NewsPoller(feeds, state_path=path, resume=resume_state, **self.poller_kwargs)
        logger.info("news source %s partition %s: %s feed(s)", step_id, for_part, len(feeds))
        name = f"{step_id}-{self.feeds.index(for_part) if self.per_feed else 0}"
        return _NewsPartition(poller, name, self.max_polls, self.stop_after_s)
