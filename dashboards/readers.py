"""Where the Panel app reads from: the embedded DuckDB store or QuestDB, one short session per poll.

:class:`DuckDBReader` opens the embedded store read-only for each poll and closes it again. DuckDB lets one process
write a file and nobody else open it meanwhile, so while the features flow runs the reader copies the file (and its
WAL) into a private temporary directory and reads the copy; a copy caught mid-checkpoint fails to open and the poll
is simply retried. When the writer is this same process (``ccf demo``), it reads through the writer's own database
instance instead. :class:`QuestDBReader` runs SQL over QuestDB's HTTP ``/exec`` endpoint (tables named with
``CCF_QUESTDB__TABLE_PREFIX``).

Which embedded store (:func:`reader_for`): ``CCF_STORE__PATH`` when it is set. Otherwise the app looks where the
features flow writes (``<run dir>/store.duckdb``) and where ``ccf demo`` writes (``<run dir>/demo/store.duckdb``),
and at the first read that finds either it keeps the one written last (file or WAL modified last); the page and
the log say which it picked and why.

Nothing here connects or copies anything until a session is opened.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ccf.settings import Settings

logger = logging.getLogger(__name__)

Row = dict[str, Any]


class StoreUnavailable(Exception):
    """The store cannot be read right now (not created yet, locked copy torn, server down): try again later."""


class QueryError(Exception):
    """The store answered but rejected a query."""


class Session(Protocol):
    def run(self, sql: str) -> list[Row]: ...

    def has_table(self, name: str) -> bool: ...


class Reader(Protocol):
    ident: str  # which store, stable for the reader's life (one poller per ident)
    where: str  # what to tell the user; may say more once the store has been found
    dialect: str  # "duckdb" (timestamps are BIGINT ns) or "questdb" (TIMESTAMP)

    def table(self, name: str) -> str: ...

    def session(self) -> contextlib.AbstractContextManager[Session]: ...


# ------------------------------------------------------------------------------------------------------ DuckDB
class _DuckSession:
    def __init__(self, con: Any) -> None:
        self.con = con

    def run(self, sql: str) -> list[Row]:
        cur = self.con.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def has_table(self, name: str) -> bool:
        found = self.con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name])
        return bool(found.fetchone()[0])


def _written_at(path: Path) -> float:
    """When ``path`` (or its WAL, which takes every write until a checkpoint) was last modified."""
    wal = Path(f"{path}.wal")
    return max(path.stat().st_mtime, wal.stat().st_mtime if wal.is_file() else 0.0)


class DuckDBReader:
    """Reads the embedded store without ever taking its write lock (see the module docstring).

    With ``alternatives``, the store is the newest of ``path`` and them that exists at the first read finding one.
    """

    dialect = "duckdb"

    def __init__(self, path: Path, alternatives: Sequence[Path] = ()) -> None:
        self.candidates = (Path(path), *map(Path, alternatives))
        self.path: Path | None = None if alternatives else self.candidates[0]
        self.ident = "duckdb:" + ",".join(map(str, self.candidates))
        self.where = f"embedded store {self.candidates[0]}"
        if alternatives:
            self.where += " or " + " or ".join(map(str, self.candidates[1:])) + " (whichever is written last)"
        self.copied = False  # whether the last session read a copy (a writer held the file)
        self._tmp: Path | None = None

    def table(self, name: str) -> str:
        return f'"{name}"'

    def _pick(self) -> Path:
        if self.path is not None:
            if not self.path.is_file():
                raise StoreUnavailable(f"no embedded store at {self.path} yet (start the features flow)")
            return self.path
        found = [p for p in self.candidates if p.is_file()]
        if not found:
            raise StoreUnavailable("no embedded store yet at " + " nor ".join(map(str, self.candidates))
                                   + " (start the features flow or ccf demo)")
        self.path = max(found, key=_written_at)
        others = [str(p) for p in self.candidates if p != self.path]
        self.where = (f"embedded store {self.path} (written last of it and {', '.join(others)}; "
                      "CCF_STORE__PATH chooses)")
        logger.info("the app reads %s: the store written last of %s (set CCF_STORE__PATH to choose)", self.path,
                    ", ".join(map(str, self.candidates)))
        return self.path

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        import duckdb

        path = self._pick()
        try:
            con = duckdb.connect(str(path), read_only=True)
            self.copied = False
        except duckdb.ConnectionException:
            # this very process writes the file (`ccf demo`): a plain connection shares its database instance
            con = duckdb.connect(str(path))
            self.copied = False
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise StoreUnavailable(f"cannot open {path}: {exc}") from exc
            con = self._open_copy(duckdb, path)
        try:
            yield _DuckSession(con)
        finally:
            con.close()

    def _open_copy(self, duckdb: Any, path: Path) -> Any:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="ccf-app-"))
            weakref.finalize(self, shutil.rmtree, str(self._tmp), True)
        copy = self._tmp / "snapshot.duckdb"
        wal_src, wal_dst = Path(f"{path}.wal"), Path(f"{copy}.wal")
        try:
            wal_dst.unlink(missing_ok=True)
            shutil.copyfile(path, copy)
            if wal_src.is_file():
                shutil.copyfile(wal_src, wal_dst)
            con = duckdb.connect(str(copy), read_only=True)
        except (OSError, duckdb.Error) as exc:  # torn copy (a checkpoint ran meanwhile): the next poll retries
            raise StoreUnavailable(f"copy of {path} not readable this time: {exc}") from exc
        self.copied = True
        return con


# ----------------------------------------------------------------------------------------------------- QuestDB
class _QuestSession:
    def __init__(self, reader: QuestDBReader, client: Any) -> None:
        self.reader = reader
        self.client = client

    def run(self, sql: str) -> list[Row]:
        import httpx

        try:
            resp = self.client.get(f"{self.reader.http_url}/exec", params={"query": sql})
            body: dict[str, Any] = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise StoreUnavailable(f"QuestDB at {self.reader.http_url} unreachable: {exc}") from exc
        if resp.status_code != 200 or "error" in body:
            raise QueryError(f"QuestDB rejected {sql[:80]!r}: {body.get('error', resp.text[:200])}")
        cols = body.get("columns", [])
        names = [c["name"] for c in cols]
        stamps = [i for i, c in enumerate(cols) if c.get("type") in ("TIMESTAMP", "TIMESTAMP_NS")]
        rows = []
        for values in body.get("dataset", []):
            for i in stamps:
                values[i] = iso_to_ns(values[i])
            rows.append(dict(zip(names, values, strict=True)))
        return rows

    def has_table(self, name: str) -> bool:
        full = self.reader.prefix + name
        return bool(self.run(f"SELECT table_name FROM tables() WHERE table_name = '{full}'"))


class QuestDBReader:
    """Reads QuestDB over HTTP ``/exec`` (the endpoint the writer already uses); one client per session."""

    dialect = "questdb"

    def __init__(self, http_url: str, prefix: str = "", timeout_s: float = 10.0) -> None:
        self.http_url = http_url.rstrip("/")
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.where = self.ident = f"QuestDB {self.http_url}" + (f" (tables {prefix}*)" if prefix else "")

    def table(self, name: str) -> str:
        return f'"{self.prefix}{name}"'

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        import httpx

        with httpx.Client(timeout=self.timeout_s) as client:
            yield _QuestSession(self, client)


def iso_to_ns(value: str | None) -> int | None:
    """QuestDB's JSON timestamp (``2024-01-01T00:00:01.500000Z``) as int ns.

    >>> iso_to_ns("2024-01-01T00:00:01.500000Z"), iso_to_ns(None)
    (1704067201500000000, None)
    """
    if value is None:
        return None
    head, _, frac = value.rstrip("Z").partition(".")
    secs = int(datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp())
    return secs * 1_000_000_000 + int((frac + "000000000")[:9])


def reader_for(settings: Settings) -> Reader:
    """QuestDB when configured, else the embedded store (the same choice the features flow makes); which embedded
    store when ``CCF_STORE__PATH`` is not set: see the module docstring.

    >>> from pathlib import Path
    >>> s = Settings(_env_prefix="CCF_DOCTEST_", run_dir=Path("/r"))
    >>> reader_for(s).where
    'embedded store /r/store.duckdb or /r/demo/store.duckdb (whichever is written last)'
    >>> reader_for(Settings(_env_prefix="CCF_DOCTEST_", store={"path": "/r/store.duckdb"})).where
    'embedded store /r/store.duckdb'
    """
    if settings.questdb.enabled:
        return QuestDBReader(settings.questdb.http_url, settings.questdb.table_prefix)
    # `store` is in the fields set when CCF_STORE__PATH (or code) chose it: that choice always wins
    if "store" in settings.model_fields_set or settings.store.path != settings.run_dir / "store.duckdb":
        return DuckDBReader(settings.store.path)
    return DuckDBReader(settings.store.path, alternatives=(settings.run_dir / "demo" / "store.duckdb",))
