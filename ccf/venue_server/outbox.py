"""A connection's bounded queue of messages to send, which the shared feed never blocks on unless it chooses to.

The feed :meth:`Outbox.offer` s each message to every subscriber: ``False`` means that connection's queue is full (its
client reads slower than the feed), and the server decides (drop the client, or at speed 0 wait a bounded grace with
:meth:`Outbox.wait_space`). The connection's sender task takes messages with :meth:`Outbox.get`; :meth:`Outbox.end`
says the feed is over (``get`` returns ``None`` once the queue is drained) and :meth:`Outbox.close` drops everything
(the connection is gone: offers are swallowed, waiters wake up).

>>> import asyncio
>>> async def demo():
...     box = Outbox(2)
...     print(box.offer("a"), box.offer("b"), box.offer("c"), box.offer("c", force=True), len(box))
...     print(await box.get(), await box.wait_space(asyncio.get_running_loop().time() + 0.01))
...     box.end()
...     print([await box.get() for _ in range(3)])
>>> asyncio.run(demo())
True True False True 3
a False
['b', 'c', None]
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Outbox(Generic[T]):
    """At most ``capacity`` messages (more only with ``offer(force=True)``); one reader, any number of writers."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.closed = False
        self.ended = False
        self._items: deque[T] = deque()
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: T, *, force: bool = False) -> bool:
        """Queue ``item``; ``False`` (nothing queued) when full and not ``force``. A closed outbox swallows it."""
        if self.closed:
            return True
        items = self._items
        if len(items) >= self.capacity and not force:
            return False
        items.append(item)
        if len(items) >= self.capacity:
            self._space.clear()
        self._readable.set()
        return True

    async def wait_space(self, deadline: float) -> bool:
        """Wait until there is room (or the outbox is closed) or the loop's clock reaches ``deadline``."""
        try:
            async with asyncio.timeout_at(deadline):
                while len(self._items) >= self.capacity and not self.closed:
                    await self._space.wait()
        except TimeoutError:
            return False
        return True

    async def get(self) -> T | None:
        """The next message; ``None`` after :meth:`end` once drained (or when closed)."""
        items = self._items
        while not items:
            if self.ended or self.closed:
                return None
            self._readable.clear()
            await self._readable.wait()
        item = items.popleft()
        if len(items) < self.capacity:
            self._space.set()
        return item

    def end(self) -> None:
        """No more messages will come: :meth:`get` returns ``None`` after the queued ones."""
        self.ended = True
        self._readable.set()

    def close(self) -> None:
        """Drop everything and wake every waiter (the connection is gone)."""
        self.closed = True
        self._items.clear()
        self._readable.set()
        self._space.set()
