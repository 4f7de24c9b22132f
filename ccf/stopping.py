"""Stop on SIGINT/SIGTERM at the next batch, so a job reaches end of input, flushes its sinks and prints its summary.

Bytewax 0.21 runs the dataflow in Rust and calls back into Python; a signal reaches Python's handler on the main
thread the next time Python code runs there. Python's default SIGINT handler raises ``KeyboardInterrupt`` inside
whatever callback runs then (a sink's ``write_batch``, a DuckDB query), which Bytewax turns into a panic; the default
SIGTERM kills the process without flushing. :func:`install` (entry points only, on the main thread) replaces both
with a handler that only sets a flag; sources consult :func:`requested` at the top of ``next_batch`` and raise
``StopIteration``, as at the end of their input. A second signal restores the default handlers and re-delivers
itself: press Ctrl-C twice to abandon a job whose source does not check the flag.

>>> reset(); requested()
False
>>> request("test"); requested(), reason()
(True, 'test')
>>> reset()
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_stop = threading.Event()
_reason = ""
_previous: dict[int, object] = {}


def requested() -> bool:
    """Whether a stop was requested (sources end at their next batch when it is)."""
    return _stop.is_set()


def reason() -> str:
    """What asked for the stop (``"SIGINT"``, ``"SIGTERM"``, ...); empty while none has."""
    return _reason


def request(why: str) -> None:
    """Ask every source of this process to end at its next batch."""
    global _reason
    if not _stop.is_set():
        _reason = why
        _stop.set()


def reset() -> None:
    """Forget a stop request (tests; a process that runs several jobs one after another)."""
    global _reason
    _stop.clear()
    _reason = ""


def _handle(signum: int, frame: FrameType | None) -> None:
    # no logging here: a handler can run in the middle of a logging call that holds the handler's lock
    if _stop.is_set():  # the second one: give the signal its default meaning and deliver it again
        uninstall()
        signal.raise_signal(signum)
        return
    request(signal.Signals(signum).name)


def install() -> bool:
    """Handle SIGINT and SIGTERM by :func:`request`. Returns False (and does nothing) off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in SIGNALS:
        previous = signal.getsignal(sig)
        if previous is not _handle:
            _previous[sig] = previous
        signal.signal(sig, _handle)
    return True


def uninstall() -> None:
    """Restore the handlers :func:`install` replaced."""
    for sig, previous in list(_previous.items()):
        signal.signal(sig, previous if callable(previous) or isinstance(previous, int) else signal.SIG_DFL)
        del _previous[sig]


def check(where: str) -> None:
    """Raise ``StopIteration`` when a stop was requested: the first line of a source's ``next_batch``.

    Logs once per ``where`` (a partition) that it ends.
    """
    if _stop.is_set():
        if where not in _logged:
            _logged.add(where)
            logger.info("%s: stop requested (%s); ending at this batch", where, _reason)
        raise StopIteration


_logged: set[str] = set()
