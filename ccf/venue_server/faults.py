"""Faults the venue server injects on demand.

A fault is ``kind[:arg][@after]``: ``after`` counts messages already sent on the connection (from its start for
faults given on the websocket URL or the command line, from the moment they arrive for ``POST /control/faults``);
``arg`` is seconds for ``stall`` and ``late_snapshot``.

============== ==========================================================================================
kind           effect
============== ==========================================================================================
drop_diff      the next depth diff is not sent (the client sees a gap: ``U != previous u + 1``)
duplicate_diff the next depth diff is sent twice
reorder_diffs  the next depth diff is held and sent after the following diff of the same stream
corrupt_json   the next message is cut in half (invalid JSON)
stall          nothing is sent for ``arg`` seconds (messages wait, none are lost)
disconnect     the TCP connection is dropped without a close frame
late_snapshot  the next REST depth answer waits ``arg`` seconds (server-wide, not per connection)
wrong_checksum no-op for Binance (it has no book checksum); recorded so venue-generic tests can run
============== ==========================================================================================

>>> parse_fault("stall:2.5@100")
Fault(kind='stall', arg=2.5, after=100)
>>> parse_faults("drop_diff@10, disconnect")
[Fault(kind='drop_diff', arg=0.0, after=10), Fault(kind='disconnect', arg=0.0, after=0)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Final

KINDS: Final = frozenset(
    {
        "drop_diff",
        "duplicate_diff",
        "reorder_diffs",
        "corrupt_json",
        "stall",
        "disconnect",
        "late_snapshot",
        "wrong_checksum",
    }
)
DIFF_KINDS: Final = frozenset({"drop_diff", "duplicate_diff", "reorder_diffs"})
"""Faults that wait for a depth diff."""
SERVER_KINDS: Final = frozenset({"late_snapshot", "wrong_checksum"})
"""Faults that do not act on a websocket connection."""


@dataclass(frozen=True)
class Fault:
    kind: str
    arg: float = 0.0
    after: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(sorted(KINDS))}")
        if self.after < 0 or self.arg < 0:
            raise ValueError(f"fault {self.kind!r}: arg and after must be >= 0")

    def shifted(self, sent: int) -> Fault:
        """The same fault counted from a connection that has already sent ``sent`` messages."""
        return replace(self, after=self.after + sent)

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "arg": self.arg, "after": self.after}


def parse_fault(spec: str) -> Fault:
    """One fault from ``kind[:arg][@after]``."""
    text = spec.strip()
    after = 0
    if "@" in text:
        text, _, after_text = text.partition("@")
        after = int(after_text)
    kind, _, arg_text = text.partition(":")
    return Fault(kind.strip(), float(arg_text) if arg_text else 0.0, after)


def parse_faults(specs: str | Iterable[str]) -> list[Fault]:
    """Faults from a comma-separated string or several such strings."""
    items = [specs] if isinstance(specs, str) else list(specs)
    return [parse_fault(part) for item in items for part in item.split(",") if part.strip()]


def fault_from_json(obj: Mapping[str, object] | str) -> Fault:
    """A fault from ``{"kind":..,"arg":..,"after":..}`` or the string form.

    >>> fault_from_json({"kind": "late_snapshot", "arg": 1})
    Fault(kind='late_snapshot', arg=1.0, after=0)
    """
    if isinstance(obj, str):
        return parse_fault(obj)
    kind, arg, after = obj.get("kind"), obj.get("arg", 0.0), obj.get("after", 0)
    if not isinstance(kind, str) or not isinstance(arg, int | float) or not isinstance(after, int):
        raise ValueError(f"bad fault {dict(obj)!r}: want kind (str), arg (number), after (int)")
    return Fault(kind, float(arg), after)
