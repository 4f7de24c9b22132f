"""Feed bytes → :class:`~ccf.schemas.NewsItem` s: pure, no network, never raises on any input.

feedparser does the format work (RSS 0.9x/1.0/2.0, Atom 0.3/1.0, CDF; encodings; HTML sanitizing). This module adds
what the platform needs on top: a stable id per entry, UTC-nanosecond times, plain text, and a :class:`FeedStatus`
that says whether the bytes were a usable feed and, if not, why.

>>> rss = b'''<rss version="2.0"><channel><title>t</title><item><title>Hello &lt;b&gt;world&lt;/b&gt;</title>
... <link>https://example.com/a</link><guid isPermaLink="false">a-1</guid><pubDate>Mon, 13 Mar 2023 10:13:50 +0000</pubDate>
... </item></channel></rss>'''
>>> items, status = parse_feed(rss, "https://example.com/feed", fetched_ns=1)
>>> status.ok, status.entries, items[0].id, items[0].title, items[0].published
(True, 1, 'a-1', 'Hello world', 1678702430000000000)
>>> parse_feed(b"", "https://example.com/feed", fetched_ns=1)[1].reason
'empty document'
"""

from __future__ import annotations

import calendar
import hashlib
import io
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Final

import feedparser

from ccf.schemas import NewsItem

MAX_TITLE_CHARS: Final = 500
MAX_SUMMARY_CHARS: Final = 1000
_HTML_TYPES: Final = frozenset({"text/html", "application/xhtml+xml"})
_WS: Final = re.compile(r"\s+")
# What an entry's fields can hold when feedparser meets something it did not expect: skip that entry, keep the rest.
_ENTRY_ERRORS: Final = (TypeError, ValueError, AttributeError, KeyError, OverflowError, IndexError)


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """What :func:`parse_feed` made of one document.

    ``ok`` is false when the bytes were not a usable feed (nothing recovered from a broken document, or no feed at
    all); the poller backs off on those. ``bozo`` is feedparser's flag for anything ill-formed, including documents
    whose entries it still recovered (``ok`` stays true then). ``reason`` is empty for a clean feed.
    """

    feed: str
    ok: bool
    bozo: bool
    reason: str
    entries: int
    version: str = ""
    skipped: int = 0


class _TextExtractor(HTMLParser):
    """Collects the text nodes of an HTML fragment (entities decoded, tags, scripts and styles dropped)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("br", "p", "div", "li", "tr"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def clean_text(value: object, content_type: str = "text/html", limit: int | None = None) -> str:
    """Plain text of a feed field: tags stripped (for HTML), whitespace collapsed, cut to ``limit`` characters.

    >>> clean_text("<p>Bitcoin &amp; <b>ether</b></p>\\n\\n  rally")
    'Bitcoin & ether rally'
    >>> clean_text("a < b", "text/plain")
    'a < b'
    >>> clean_text("one two three", limit=9)
    'one two…'
    """
    if not isinstance(value, str) or not value:
        return ""
    text = value
    if content_type in _HTML_TYPES:
        extractor = _TextExtractor()
        extractor.feed(value)
        extractor.close()
        text = "".join(extractor.parts)
    text = _WS.sub(" ", text).strip()
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def struct_time_to_ns(value: object) -> int | None:
    """UTC nanoseconds of a feedparser ``*_parsed`` value (a UTC ``time.struct_time``); None if absent or unusable.

    >>> struct_time_to_ns(time.strptime("2023-03-13 10:13:50", "%Y-%m-%d %H:%M:%S"))
    1678702430000000000
    >>> struct_time_to_ns(None), struct_time_to_ns("yesterday")
    (None, None)
    """
    if not isinstance(value, time.struct_time):
        return None
    try:
        return calendar.timegm(value) * 1_000_000_000
    except (OverflowError, ValueError, TypeError):
        return None


def entry_id(raw_id: object, link: str, title: str, published: str) -> str:
    """A stable id for an entry: its ``id``/``guid``, else its link, else a hash of title and published date.

    The same entry gives the same id in every run, so the seen-set survives restarts.

    >>> entry_id(" GAHBB ", "https://x/a", "t", "")
    'GAHBB'
    >>> entry_id("", "https://x/a", "t", "")
    'https://x/a'
    >>> entry_id(None, "", "Title", "Mon, 13 Mar 2023")
    'sha256:68ea64a46994c0e0e9cc841a03f114a5'
    """
    if isinstance(raw_id, str) and raw_id.strip():
        return raw_id.strip()
    if link:
        return link
    digest = hashlib.sha256(f"{title}\x1f{published}".encode("utf-8", "surrogatepass")).hexdigest()
    return "sha256:" + digest[:32]


def _detail_type(entry: dict[str, Any], key: str) -> str:
    detail = dict.get(entry, key + "_detail")  # plain dict lookup skips FeedParserDict's aliases
    kind = detail.get("type") if isinstance(detail, Mapping) else None
    return kind if isinstance(kind, str) else "text/html"


def _entry_to_item(entry: dict[str, Any], feed_url: str, fetched_ns: int) -> NewsItem | None:
    get = dict.get  # FeedParserDict.get would map "updated_parsed" to "published_parsed" with a DeprecationWarning
    title = clean_text(get(entry, "title"), _detail_type(entry, "title"), MAX_TITLE_CHARS)
    summary = clean_text(get(entry, "summary"), _detail_type(entry, "summary"), MAX_SUMMARY_CHARS)
    raw_link = get(entry, "link")
    link = raw_link.strip() if isinstance(raw_link, str) else ""
    if not (title or link or summary):
        return None
    published = struct_time_to_ns(get(entry, "published_parsed"))
    if published is None:
        published = struct_time_to_ns(get(entry, "updated_parsed"))
    date_text = get(entry, "published") or get(entry, "updated") or ""
    stable = entry_id(get(entry, "id"), link, title, str(published) if published is not None else str(date_text))
    return NewsItem(
        id=stable, feed=feed_url, title=title, link=link, published=published, fetched=fetched_ns, summary=summary
    )


def _describe(exc: object) -> str:
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc)


def parse_feed(
    content: bytes, feed_url: str, fetched_ns: int, headers: Mapping[str, str] | None = None
) -> tuple[list[NewsItem], FeedStatus]:
    """Parse one feed document into news items (document order) and a status. Never raises on any ``content``.

    ``headers`` are the HTTP response headers (``Content-Type`` decides the encoding when the document does not);
    ``feed_url`` becomes each item's ``feed`` and the base for relative links. Entries feedparser recovers from an
    ill-formed document are kept; an ill-formed document with no entries gives ``ok=False``.
    """
    if not content:
        return [], FeedStatus(feed_url, ok=False, bozo=True, reason="empty document", entries=0)
    if headers is None:
        # No HTTP: feedparser then reads the encoding from the BOM / XML declaration, else UTF-8. A bare
        # application/xml Content-Type selects exactly that rule (checked on every file of the test corpus) and lets
        # us pass feed_url as the base for relative links; any headers without a Content-Type would mean ISO-8859-1.
        headers = {"content-type": "application/xml"}
    response_headers = {k.lower(): v for k, v in headers.items()}
    response_headers.setdefault("content-location", feed_url)
    # No warnings.catch_warnings() here: feedparser's only warnings are the DeprecationWarnings of FeedParserDict's
    # "updated" -> "published" aliases, which _entry_to_item never triggers (plain dict lookups); the whole corpus and
    # the fuzz test run clean under filterwarnings=error. catch_warnings also swaps process-wide state, which is unsafe
    # in the source's background thread.
    try:
        # A stream, never the bytes themselves: feedparser.parse(bytes) first tries open(bytes) as a file name.
        parsed = feedparser.parse(io.BytesIO(content), response_headers=response_headers)
    except Exception as exc:  # feedparser is a large parser of hostile input; its own bugs must not stop the poller
        return [], FeedStatus(feed_url, ok=False, bozo=True, reason=f"parser error: {_describe(exc)}", entries=0)
    bozo = bool(parsed.get("bozo"))
    version = parsed.get("version") or ""
    reason = _describe(parsed.get("bozo_exception", "")) if bozo else ""
    items: list[NewsItem] = []
    skipped = 0
    entries = parsed.get("entries") or []
    for entry in entries:
        try:
            item = _entry_to_item(entry, feed_url, fetched_ns) if isinstance(entry, dict) else None
        except _ENTRY_ERRORS:
            item = None
        if item is None:
            skipped += 1
        else:
            items.append(item)
    # encoding overrides and odd content types are notes, not failures: feedparser read the document anyway
    fatal = bozo and not isinstance(parsed.get("bozo_exception"), feedparser.ThingsNobodyCaresAboutButMe)
    if entries:
        ok = True
    elif fatal:
        ok = False
        reason = f"{reason}; no entries recovered" if reason else "no entries recovered"
    elif not version:
        ok = False
        reason = "not a recognized feed format"
    else:
        ok = True  # a well-formed feed with nothing in it right now
    status = FeedStatus(
        feed_url, ok=ok, bozo=bozo, reason=reason, entries=len(entries), version=str(version), skipped=skipped
    )
    return items, status
