"""What every entry point does first: read the settings once, set up logging once, stop on SIGINT/SIGTERM.

An error CCF raises on purpose (:class:`ccf.errors.CCFError`: bad settings, an unreachable store) ends the process
with exit code :data:`EXIT_USAGE` and one line on stderr naming what to change; ``CCF_DEBUG=1`` (``ccf --debug``)
prints the traceback as well. That holds for ``python -m bytewax.run flows.features`` too: Bytewax's runner looks up
``flow``, which calls :func:`from_environment`, before the dataflow starts.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

from ccf import stopping
from ccf.errors import CCFError
from ccf.logs import setup_logging
from ccf.settings import Settings, load_settings, refuse_placeholder_secrets

T = TypeVar("T")

EXIT_USAGE = 2
"""Exit code of a run that could not start or go on because of its settings or its services (like a usage error)."""

logger = logging.getLogger(__name__)


def fail(exc: CCFError, *, debug: bool = False) -> NoReturn:
    """End the process: one line ``ccf: error: ...`` on stderr (the traceback too with ``debug``), exit code 2."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    message = " ".join(str(exc).split())  # one line, whatever the message holds
    print(f"ccf: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE)


def start(*, debug: bool = False, stop_on_signals: bool = False, secrets: Sequence[str] = ()) -> Settings:
    """Settings of the ``CCF_*`` environment, logging set up; with ``stop_on_signals`` (dataflow jobs), SIGINT and
    SIGTERM end the sources at their next batch (:mod:`ccf.stopping`) instead of interrupting whatever runs.

    A settings problem ends the process (:func:`fail`), and so does a secret of the sections named in ``secrets``
    (the ones this role uses) still set to ``change-me`` (:func:`ccf.settings.refuse_placeholder_secrets`).
    """
    try:
        settings = load_settings()
        refuse_placeholder_secrets(settings, secrets)
    except CCFError as exc:
        fail(exc, debug=debug)
    if debug and not settings.debug:
        settings = settings.model_copy(update={"debug": True})
    setup_logging(settings.log_level)
    if stop_on_signals:
        stopping.install()
    return settings


def ccf_cause(exc: BaseException) -> CCFError | None:
    """The :class:`CCFError` behind ``exc`` (Bytewax wraps what a step raises in its own runtime errors), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, CCFError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def run_dataflow(flow: object) -> None:
    """Run ``flow`` to its end in this process; a :class:`CCFError` raised inside a step surfaces as itself (so
    the entry point ends in one line) rather than as Bytewax's wrapper around it."""
    from bytewax.testing import run_main

    try:
        run_main(flow)  # type: ignore[no-untyped-call]  # bytewax leaves its testing runner unannotated
    except Exception as exc:
        cause = ccf_cause(exc)
        if cause is None:
            raise
        raise cause from exc


def from_environment(build: Callable[[Settings], T], secrets: Sequence[str] = ("kafka", "questdb")) -> T:
    """``build(settings)`` with the settings of the ``CCF_*`` environment (see :func:`start`; the dataflow jobs use
    Kafka and the store, whose secrets must not be ``change-me``); a :class:`CCFError` while building (a store that
    cannot be reached, say) ends the process in one line."""
    settings = start(stop_on_signals=True, secrets=secrets)
    try:
        return build(settings)
    except CCFError as exc:
        fail(exc, debug=settings.debug)
