"""``ccf record``: raw websocket frames with their receipt times, as compressed JSONL that rotates by size and age.

Frames are written exactly as received, with the REST book snapshots fetched at the start of every session
(:class:`ccf.wsource.WsClient` fetches them after the session's first message) and the connection's events, so a
recording replays like a capture: :func:`read_recording` (reached through :func:`ccf.capture.readers.read_records`,
which tells the format by its first line) parses every frame with the venue's codec into the records the live
parsers give.

One file per connection at a time, one JSON object per line::

    {"ccf_recording":1,"venue":"binance","conn":"binance","url":"wss://…","started":<ns>,"symbols":[…]}
    {"t":<ns>,"s":<session>,"d":"<frame text>"}                a websocket frame ("b": base64 for binary ones)
    {"t":<ns>,"s":<session>,"u":"https://…","d":"<body>"}      a REST answer fetched for that session
    {"t":<ns>,"s":<session>,"h":"disconnected","d":"<detail>"}  a connection event (read back as nothing)

Compression: zstd (``.zst``, default) or gzip (``.gz``). A file is written as ``NAME.part`` and renamed when
complete; the next line goes to a new file once ``max_bytes`` of JSON went in or the file is ``max_seconds`` old, and
every file starts with the header. zstd blocks are flushed every ``flush_every_s``, so after a crash the ``.part`` file still reads up to
its last flush (a tail cut inside a block or a gzip member becomes one :class:`~ccf.errors.ParseError`). Names:
``<conn>-<UTC start YYYYmmddTHHMMSSZ>-<seq>.ccf.jsonl.zst``.
"""

from __future__ import annotations

import base64
import gzip
import logging
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import msgspec
import zstandard

from ccf.capture.readers import Item, RawFrame, open_binary
from ccf.capture.registry import codec_for
from ccf.errors import ParseError
from ccf.progress import Progress
from ccf.wsource import Frame, HealthEvent, WsClient, WsConfig, WsConnection

logger = logging.getLogger(__name__)

Compression = Literal["zstd", "gzip"]
SUFFIX: dict[str, str] = {"zstd": ".ccf.jsonl.zst", "gzip": ".ccf.jsonl.gz"}


class Header(msgspec.Struct, frozen=True):
    ccf_recording: int
    venue: str
    conn: str
    url: str
    started: int
    symbols: list[str] = msgspec.field(default_factory=list)


class Line(msgspec.Struct, frozen=True, omit_defaults=True):
    t: int
    s: int = 0
    d: str = ""
    b: str | None = None
    u: str = ""
    h: str = ""


_encode = msgspec.json.Encoder().encode
_HEADER = msgspec.json.Decoder(Header)
_LINE = msgspec.json.Decoder(Line)


@dataclass(frozen=True)
class RecordConfig:
    """Where and how files are written."""

    out_dir: Path
    compression: Compression = "zstd"
    max_bytes: int = 256 * 2**20
    """Rotate after this much JSON (uncompressed)."""
    max_seconds: float = 3600.0
    flush_every_s: float = 1.0
    level: int = 3


class RotatingWriter:
    """One connection's lines into rotating compressed files (see the module docstring)."""

    def __init__(self, config: RecordConfig, header: Header) -> None:
        self.config = config
        self.header = header
        self.files: list[Path] = []
        self._fh: IO[bytes] | None = None
        self._raw: IO[bytes] | None = None
        self._part: Path | None = None
        self._bytes = 0
        self._opened = 0.0
        self._flushed = 0.0
        config.out_dir.mkdir(parents=True, exist_ok=True)

    def _open(self, now_ns: int) -> None:
        cfg = self.config
        stamp = datetime.fromtimestamp(now_ns / 1e9, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"{self.header.conn}-{stamp}-{len(self.files):04d}{SUFFIX[cfg.compression]}"
        self._part = cfg.out_dir / (name + ".part")
        self._raw = self._part.open("wb")
        fh: IO[bytes]
        if cfg.compression == "zstd":
            fh = zstandard.ZstdCompressor(level=cfg.level).stream_writer(self._raw, closefd=False)
        else:
            fh = gzip.GzipFile(  # type: ignore[assignment]  # GzipFile is a binary IO
                fileobj=self._raw, mode="wb", compresslevel=min(cfg.level * 2, 9))
        self._opened = self._flushed = time.monotonic()
        head = _encode(msgspec.structs.replace(self.header, started=now_ns)) + b"\n"
        fh.write(head)
        self._fh = fh
        self._bytes = len(head)

    def write(self, line: bytes, now_ns: int) -> None:
        """One line (without its newline); the file rotates first when it is full or old."""
        now, cfg = time.monotonic(), self.config
        if self._fh is not None and (self._bytes >= cfg.max_bytes or now - self._opened >= cfg.max_seconds):
            self.close()
        if self._fh is None:
            self._open(now_ns)
        assert self._fh is not None
        self._fh.write(line + b"\n")
        self._bytes += len(line) + 1
        if now - self._flushed >= cfg.flush_every_s:
            self.flush()

    def flush(self) -> None:
        """Make what was written so far readable (a zstd block / a gzip sync point)."""
        if self._fh is None or self._raw is None:
            return
        if self.config.compression == "zstd":
            self._fh.flush(zstandard.FLUSH_BLOCK)  # type: ignore[call-arg]  # zstd's writer takes a flush mode
        else:
            self._fh.flush(zlib.Z_SYNC_FLUSH)  # type: ignore[call-arg]  # GzipFile.flush takes a zlib mode
        self._raw.flush()
        self._flushed = time.monotonic()

    def close(self) -> None:
        """Finish the current file and give it its final name."""
        if self._fh is None or self._raw is None or self._part is None:
            return
        self._fh.close()
        self._raw.close()
        final = self._part.with_name(self._part.name.removesuffix(".part"))
        self._part.rename(final)
        self.files.append(final)
        logger.info("recording %s: %d bytes of JSON -> %s", self.header.conn, self._bytes, final)
        self._fh = self._raw = self._part = None


def frame_line(item: Frame | HealthEvent) -> bytes:
    """One line of a recording.

    >>> frame_line(Frame("c", 1, 5, '{"a":1}'))
    b'{"t":5,"s":1,"d":"{\\\\"a\\\\":1}"}'
    >>> frame_line(HealthEvent("c", 2, 6, "connected"))
    b'{"t":6,"s":2,"h":"connected"}'
    """
    if isinstance(item, HealthEvent):
        return _encode(Line(item.ts, item.session, item.detail, h=item.kind))
    if isinstance(item.data, bytes):
        return _encode(Line(item.ts_recv, item.session, b=base64.b64encode(item.data).decode(), u=item.url))
    return _encode(Line(item.ts_recv, item.session, item.data, u=item.url))


@dataclass
class RecordSummary:
    frames: int = 0
    rest: int = 0
    files: list[Path] = field(default_factory=list)


def record(connections: Sequence[tuple[WsConnection, str, Sequence[str]]], config: RecordConfig, *,
           ws_config: WsConfig | None = None, duration_s: float | None = None, max_frames: int | None = None,
           poll_s: float = 0.01, bar: Progress | None = None) -> RecordSummary:
    """Record ``(connection, venue, symbols)`` s until ``duration_s`` (wall clock), ``max_frames`` frames, the
    server's end of data, or Ctrl-C; raises :class:`~ccf.errors.ConnectionFailedError` when a connection gives up."""
    cfg = ws_config or WsConfig(stop_on_end_of_data=True)
    clients = [WsClient(conn, cfg).start() for conn, _, _ in connections]
    writers = [RotatingWriter(config, Header(1, venue, conn.name, conn.url, 0, list(symbols)))
               for conn, venue, symbols in connections]
    summary = RecordSummary()
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        while True:
            busy = False
            for client, writer in zip(clients, writers, strict=True):
                for item in client.drain():
                    busy = True
                    writer.write(frame_line(item), time.time_ns())
                    if isinstance(item, Frame):
                        if item.url:
                            summary.rest += 1
                        else:
                            summary.frames += 1
                            if bar is not None:
                                bar.advance(1)
                if client.failed is not None:
                    raise client.failed
            if all(c.done for c in clients) and not busy:
                break
            if (deadline is not None and time.monotonic() >= deadline) or (
                    max_frames is not None and summary.frames >= max_frames):
                break
            if not busy:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        logger.info("recording interrupted")
    finally:
        for client in clients:
            client.stop()
        for writer in writers:
            writer.close()
            summary.files += writer.files
    return summary


def record_venue(venue: str, symbols: Sequence[str], config: RecordConfig, *, channels: Sequence[str] | None = None,
                 ws_url: str | None = None, rest_url: str | None = None, **kwargs: Any) -> RecordSummary:
    """Record a venue's connections (:func:`ccf.ingest.links.make_link`) with a REST snapshot per symbol and
    session."""
    from ccf.ingest.links import make_link

    link = make_link(venue, symbols, channels, ws_url=ws_url, rest_url=rest_url)
    conns = []
    for conn in link.connections:
        syms = link.symbols_of[conn.name]
        rest = tuple(link.snapshot_url(s) for s in syms) if link.snapshot_url is not None else ()
        conns.append((replace(conn, rest_urls=rest), link.venue, syms))
    return record(conns, config, **kwargs)


def read_recording(path: Path) -> Iterator[tuple[int, Item]]:
    """``(receipt time, item)`` for every line of a recording, in file order: records (or ``(record, extra)``),
    :class:`RawFrame` for a venue without a codec, :class:`ParseError` for what does not parse."""
    ts, lineno = 0, 1
    try:
        with open_binary(path) as f:
            first = f.readline()
            try:
                header = _HEADER.decode(first)
            except msgspec.DecodeError as exc:
                yield ts, ParseError(f"{path.name}:1: not a ccf recording header: {exc}", raw=first)
                return
            venue = header.venue
            codec = codec_for(venue, header.url)
            for lineno, raw in enumerate(f, 2):
                try:
                    line = _LINE.decode(raw)
                except msgspec.DecodeError as exc:
                    yield ts, ParseError(f"{path.name}:{lineno}: {exc}", venue=venue, raw=raw)
                    continue
                ts = line.t
                if line.h:
                    continue
                data: str | bytes = line.d if line.b is None else base64.b64decode(line.b)
                if codec is None:
                    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
                    yield ts, RawFrame(venue, ts, text, f"{path.name}:{lineno}", line.u)
                    continue
                try:
                    parsed = codec.parse_rest(line.u, data, ts) if line.u else codec.parse_frame(data, ts)
                except ParseError as exc:
                    yield ts, ParseError(f"{path.name}:{lineno}: {exc.reason}", venue=exc.venue, symbol=exc.symbol,
                                         raw=exc.raw)
                    continue
                for item in parsed:
                    yield ts, item
    except (EOFError, OSError, zstandard.ZstdError) as exc:  # cut short (a crash while recording): keep the rest
        yield ts, ParseError(f"{path.name}:{lineno + 1}: file ends early: {exc}", raw=b"")
