"""Running a :class:`~ccf.venue_server.server.VenueServer`: in a background thread (tests) or in the foreground (CLI)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from ccf.venue_server.server import ServerConfig, VenueServer

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ServerThread:
    """A venue server on its own event loop in a daemon thread. ``with ServerThread(cfg) as s: s.stream_url(...)``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.server = VenueServer(config)
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def base_url(self) -> str:
        """``http://host:port`` (REST and control)."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://host:port``."""
        return f"ws://{self.config.host}:{self.port}"

    def stream_url(self, streams: Iterable[str], faults: Iterable[str] = ()) -> str:
        """The combined-stream URL for ``streams``, with fault specs as query parameters."""
        url = f"{self.ws_url}/stream?streams={'/'.join(streams)}"
        return url + "".join(f"&fault={f}" for f in faults)

    def start(self, timeout_s: float = 10.0) -> ServerThread:
        self._thread = threading.Thread(target=self._main, name=f"venue-server-{id(self):x}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("venue server did not start")
        if self._error is not None:
            raise RuntimeError("venue server failed to start") from self._error
        return self

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def stats(self) -> dict[str, object]:
        """The same dict as ``GET /control/stats``, read on the server's loop."""

        async def read() -> dict[str, object]:
            return self.server.stats()

        return self.call(read())

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        try:
            self.call(self.server.stop(), timeout_s)
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:
            logger.warning("venue server did not stop cleanly: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(config: ServerConfig) -> None:
    """Run the server in the foreground until interrupted (the CLI)."""

    async def main() -> None:
        server = VenueServer(config)
        port = await server.start()
        print(f"venue server: http://{config.host}:{port}  ws://{config.host}:{port}/stream", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        logger.info("venue server stopped")
