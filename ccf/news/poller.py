"""Polls a list of RSS/Atom feeds with conditional GETs, per-feed backoff and a persistent seen-set.

Delivery: each entry id is emitted once per feed (:class:`NewsItem` ``id`` is unique within its ``feed``). The seen-set
is written to ``state_path`` when a poll returns, i.e. before the caller has used the items: a crash between the two
loses those items on a plain restart (at-most-once). The Bytewax source resumes from its own snapshot instead, which
only covers items already handed downstream.

One feed's failure (HTTP error, timeout, unusable document) only moves that feed's next poll out:
``poll_interval_s · 2^failures``, capped at ``max_backoff_s``, back to the plain interval after a success.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx

from ccf.news.parse import parse_feed
from ccf.news.state import (
    DEFAULT_MAX_SEEN,
    FeedState,
    PollerState,
    SeenSet,
    backoff_s,
    load_state,
    save_state,
)
from ccf.schemas import NewsItem
from ccf.settings import NewsSettings

logger = logging.getLogger(__name__)

USER_AGENT: Final = "ccf-news/0.1 (+feedparser; polite poller: conditional GET, backoff)"
ACCEPT: Final = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.8"
MAX_BYTES: Final = 10 * 1024 * 1024
_NS: Final = 1_000_000_000


class _Abort(Exception):
    """A response we stop reading (too large, or too slow in total)."""


@dataclass(slots=True)
class _Feed:
    url: str
    seen: SeenSet
    etag: str | None = None
    last_modified: str | None = None
    failures: int = 0
    next_due_ns: int = 0
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class _Fetch:
    status: int  # 0: no HTTP response at all
    content: bytes = b""
    headers: Mapping[str, str] | None = None
    error: str = ""
    received_ns: int = 0


def _retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    value = (headers or {}).get("retry-after", "")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # the HTTP-date form is rare on feeds; plain backoff then


class NewsPoller:
    """Polls ``feeds``; call :meth:`poll_once` whenever :meth:`next_due_ns` has passed.

    Not thread-safe: one thread drives a poller (fetches inside one call run in parallel threads of their own).
    """

    def __init__(
        self,
        feeds: Iterable[str],
        *,
        poll_interval_s: float = 60.0,
        max_backoff_s: float = 900.0,
        state_path: Path | None = None,
        max_seen: int = DEFAULT_MAX_SEEN,
        timeout_s: float = 10.0,
        user_agent: str = USER_AGENT,
        max_bytes: int = MAX_BYTES,
        max_workers: int = 4,
        clock: Callable[[], int] = time.time_ns,
        client: httpx.Client | None = None,
        resume: PollerState | None = None,
    ) -> None:
        self.feeds = list(dict.fromkeys(feeds))
        self.poll_interval_s = poll_interval_s
        self.max_backoff_s = max_backoff_s
        self.state_path = state_path
        self.max_seen = max_seen
        self.timeout_s = timeout_s
        self.user_agent = user_agent
        self.max_bytes = max_bytes
        self.max_workers = max(1, max_workers)
        self._clock = clock
        self._client = client
        self._own_client = client is None
        self._feeds = {url: _Feed(url, SeenSet(limit=max_seen)) for url in self.feeds}
        if resume is not None:
            self.restore(resume)
        elif state_path is not None:
            self.restore(load_state(state_path, max_seen))

    @classmethod
    def from_settings(cls, settings: NewsSettings, **overrides: Any) -> NewsPoller:
        """A poller from the ``news`` settings section (``overrides``, including ``feeds``, win)."""
        feeds = overrides.pop("feeds", settings.feeds)
        kwargs: dict[str, Any] = {
            "poll_interval_s": settings.poll_interval_s,
            "max_backoff_s": settings.max_backoff_s,
            "state_path": settings.state_path,
        }
        kwargs.update(overrides)
        return cls(feeds, **kwargs)

    # -- state -------------------------------------------------------------------------------------------------------

    def state(self) -> PollerState:
        """A frozen, picklable copy of everything needed to resume."""
        return PollerState(
            {
                f.url: FeedState(f.etag, f.last_modified, tuple(f.seen), f.failures, f.next_due_ns, f.last_error)
                for f in self._feeds.values()
            }
        )

    def restore(self, state: PollerState) -> None:
        """Take over ``state`` for the configured feeds (feeds it does not know start fresh; others are ignored)."""
        for url, fs in state.feeds.items():
            if url in self._feeds:
                self._feeds[url] = _Feed(
                    url,
                    SeenSet(fs.seen, self.max_seen),
                    fs.etag,
                    fs.last_modified,
                    fs.failures,
                    fs.next_due_ns,
                    fs.last_error,
                )

    def save(self) -> None:
        """Write the state file now (no-op without ``state_path``)."""
        if self.state_path is not None:
            save_state(self.state_path, self.state())

    def next_due_ns(self) -> int:
        """When the earliest feed is due (0 before the first poll; far future without feeds)."""
        return min((f.next_due_ns for f in self._feeds.values()), default=2**63 - 1)

    def failures(self, feed: str) -> int:
        """Consecutive failures of one feed."""
        return self._feeds[feed].failures

    # -- polling -----------------------------------------------------------------------------------------------------

    def poll_once(self, now_ns: int) -> list[NewsItem]:
        """Fetch every feed due at ``now_ns`` and return the entries not seen before, feed by feed in document order.

        Never raises for a feed's network or content problems; those only reschedule that feed.
        """
        due = [f for f in self._feeds.values() if f.next_due_ns <= now_ns]
        if not due:
            return []
        if len(due) == 1:
            fetches = [self._fetch(due[0])]
        else:
            with ThreadPoolExecutor(min(self.max_workers, len(due)), thread_name_prefix="ccf-news-fetch") as pool:
                fetches = list(pool.map(self._fetch, due))
        out: list[NewsItem] = []
        dirty = False
        for feed, fetch in zip(due, fetches, strict=True):
            items, changed = self._handle(feed, fetch, now_ns)
            out.extend(items)
            dirty = dirty or changed
        if dirty:
            self.save()
        return out

    def close(self) -> None:
        """Close the HTTP client if this poller made it."""
        if self._client is not None and self._own_client:
            self._client.close()
            self._client = None

    def __enter__(self) -> NewsPoller:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                timeout=httpx.Timeout(self.timeout_s),
                follow_redirects=True,
                max_redirects=5,
            )
        return self._client

    def _fetch(self, feed: _Feed) -> _Fetch:
        headers = {"User-Agent": self.user_agent, "Accept": ACCEPT}  # per request: an injected client gets them too
        if feed.etag:
            headers["If-None-Match"] = feed.etag
        if feed.last_modified:
            headers["If-Modified-Since"] = feed.last_modified
        deadline = time.monotonic() + 3 * self.timeout_s  # httpx times each read; this bounds a slow drip in total
        try:
            with self._http().stream("GET", feed.url, headers=headers) as response:
                body = bytearray()
                if 200 <= response.status_code < 300:
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise _Abort(f"body larger than {self.max_bytes} bytes")
                        if time.monotonic() > deadline:
                            raise _Abort(f"body not complete after {3 * self.timeout_s:.0f} s")
                # no Content-Location default here: parse_feed then resolves relative guids and links against the
                # configured URL, so ids stay the same when a server starts redirecting
                got = {k.lower(): v for k, v in response.headers.items()}
                return _Fetch(response.status_code, bytes(body), got, "", self._clock())
        except (httpx.HTTPError, httpx.InvalidURL, _Abort) as exc:
            return _Fetch(0, error=f"{type(exc).__name__}: {exc}", received_ns=self._clock())

    def _handle(self, feed: _Feed, fetch: _Fetch, now_ns: int) -> tuple[list[NewsItem], bool]:
        if fetch.status == 304:
            return [], self._succeeded(feed, fetch, now_ns)
        if fetch.error or not 200 <= fetch.status < 300:
            reason = fetch.error or f"HTTP {fetch.status}"
            self._failed(feed, reason, now_ns, _retry_after_s(fetch.headers))
            return [], False
        items, status = parse_feed(fetch.content, feed.url, max(now_ns, fetch.received_ns), fetch.headers)
        if not status.ok:
            self._failed(feed, status.reason, now_ns, None)
            return [], False
        if status.bozo:
            logger.info(
                "news feed %s is ill-formed, kept %s recovered entries: %s", feed.url, len(items), status.reason
            )
        changed = self._succeeded(feed, fetch, now_ns)
        fresh = [item for item in items if feed.seen.add(item.id)]
        return fresh, changed or bool(fresh)

    def _succeeded(self, feed: _Feed, fetch: _Fetch, now_ns: int) -> bool:
        headers = fetch.headers or {}
        etag = headers.get("etag") or feed.etag
        last_modified = headers.get("last-modified") or feed.last_modified
        changed = (etag, last_modified) != (feed.etag, feed.last_modified)
        feed.etag, feed.last_modified = etag, last_modified
        feed.failures, feed.last_error = 0, ""
        feed.next_due_ns = now_ns + int(self.poll_interval_s * _NS)
        return changed

    def _failed(self, feed: _Feed, reason: str, now_ns: int, retry_after_s: float | None) -> None:
        feed.failures += 1
        feed.last_error = reason
        delay = backoff_s(feed.failures, self.poll_interval_s, self.max_backoff_s)
        if retry_after_s is not None:
            delay = min(max(delay, retry_after_s), self.max_backoff_s)
        feed.next_due_ns = now_ns + int(delay * _NS)
        logger.warning(
            "news feed %s failed %s time(s) in a row (%s); next poll in %.0f s", feed.url, feed.failures, reason, delay
        )
