"""A tiny local feed server for tests: files over HTTP on a free 127.0.0.1 port, in a background thread.

It answers conditional GETs like a real web server (``ETag`` from the content, ``Last-Modified`` from the file's
mtime, ``304 Not Modified`` on ``If-None-Match`` / ``If-Modified-Since``), records every request's headers, and has
switches per path for failure modes: a status code (500, 429 with ``Retry-After``…), a delay before answering (to
make clients time out), and redirects.

    with FeedServer() as server:
        url = server.add("/coindesk.xml", path_to_file)
        ...
        server.fail["/coindesk.xml"] = 500
        assert server.requests_for("/coindesk.xml")[-1]["if-none-match"]

Files of feedparser's test suite that declare their HTTP ``Content-Type`` in a ``Header:`` comment are served with it.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import sys
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

_HEADER_COMMENT = re.compile(r"^\s*Header:\s*([A-Za-z-]+):\s*(.*?)\s*$", re.MULTILINE)
_CONTENT_TYPES = {
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".json": "application/feed+json",
}


def declared_headers(content: bytes) -> dict[str, str]:
    """The ``Header: Name: value`` lines feedparser's tests put in their leading comment (empty for other files)."""
    head = content[:2048].decode("latin-1")
    return {name.lower(): value for name, value in _HEADER_COMMENT.findall(head)}


@dataclass
class Resource:
    content: bytes
    content_type: str
    etag: str
    last_modified: float  # epoch seconds, whole
    extra_headers: dict[str, str]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: without this, delayed ACKs cost 40 ms

    def log_message(self, format: str, *args: object) -> None:  # the base class's parameter name
        return  # quiet: tests read server.requests instead

    def do_GET(self) -> None:
        fs = self.server.feed_server
        path = self.path.split("?", 1)[0]
        fs._record(path, {k.lower(): v for k, v in self.headers.items()})
        delay = fs.delay.get(path)
        if delay:
            fs._closing.wait(delay)
        if path in fs.redirect:
            status, target = fs.redirect[path]
            self._send(status, b"", {"Location": target})
            return
        if path in fs.fail:
            status = fs.fail[path]
            self._send(
                status, b"failure switched on\n", {"Content-Type": "text/plain", **fs.fail_headers.get(path, {})}
            )
            return
        res = fs.resources.get(path)
        if res is None:
            self._send(404, b"not found\n", {"Content-Type": "text/plain"})
            return
        validators = {"ETag": res.etag, "Last-Modified": email.utils.formatdate(res.last_modified, usegmt=True)}
        if fs.conditional and self._not_modified(res):
            self._send(304, b"", validators)
            return
        headers = {"Content-Type": res.content_type, **res.extra_headers}
        if fs.conditional:
            headers.update(validators)
        self._send(200, res.content, headers)

    def _not_modified(self, res: Resource) -> bool:
        inm = self.headers.get("If-None-Match")
        if inm is not None:  # RFC 9110: If-None-Match wins over If-Modified-Since
            tags = [t.strip() for t in inm.split(",")]
            return "*" in tags or res.etag in tags or f"W/{res.etag}" in tags
        ims = self.headers.get("If-Modified-Since")
        if ims:
            try:
                since = email.utils.parsedate_to_datetime(ims).timestamp()
            except (TypeError, ValueError):
                return False
            return res.last_modified <= since
        return False

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.server.feed_server._record_status(self.path.split("?", 1)[0], status)
        self.send_response(status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "")
        for name, value in headers.items():
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 304:
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    feed_server: FeedServer

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that time out hang up on purpose; say nothing about the broken pipe that follows."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]  # the base class's loose types


class FeedServer:
    """Serves registered resources on ``http://127.0.0.1:<port>``. Use as a context manager."""

    def __init__(self) -> None:
        self.resources: dict[str, Resource] = {}
        self.fail: dict[str, int] = {}
        self.fail_headers: dict[str, dict[str, str]] = {}
        self.delay: dict[str, float] = {}
        self.redirect: dict[str, tuple[int, str]] = {}
        self.conditional = True
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.statuses: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- content -----------------------------------------------------------------------------------------------------

    def add(self, path: str, file: Path, content_type: str | None = None) -> str:
        """Serve ``file`` at ``path`` (quoted as needed); returns its URL."""
        content = file.read_bytes()
        declared = declared_headers(content) if file.name.startswith(("http_", "bozo_http_")) else {}
        ctype = content_type or declared.pop("content-type", None) or _CONTENT_TYPES.get(file.suffix, "application/xml")
        return self.add_bytes(path, content, ctype, int(file.stat().st_mtime), declared)

    def add_bytes(
        self,
        path: str,
        content: bytes,
        content_type: str = "application/xml",
        last_modified: float = 1_678_700_000,
        extra_headers: dict[str, str] | None = None,
    ) -> str:
        path = quote(path)
        etag = '"' + hashlib.sha256(content).hexdigest()[:20] + '"'
        self.resources[path] = Resource(content, content_type, etag, int(last_modified), extra_headers or {})
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FeedServer not started")
        return int(self._httpd.server_address[1])

    # -- requests seen -----------------------------------------------------------------------------------------------

    def _record(self, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((path, headers))

    def _record_status(self, path: str, status: int) -> None:
        with self._lock:
            self.statuses.append((path, status))

    def requests_for(self, path: str) -> list[dict[str, str]]:
        """Headers of every request for ``path``, in order (keys lower case)."""
        with self._lock:
            return [h for p, h in self.requests if p == quote(path)]

    def clear_requests(self) -> None:
        """Forget the requests and response statuses seen so far."""
        with self._lock:
            self.requests.clear()
            self.statuses.clear()

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def start(self) -> FeedServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.feed_server = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="feed-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # wakes handlers sleeping in a delay
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
