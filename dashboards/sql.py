"""Grafana's macro and variable expansion for the SQL in our dashboards, so tests can run every panel's query.

Our dashboards use only what both of their datasources expand the same way (the QuestDB plugin and Grafana's
PostgreSQL datasource, both talking to QuestDB):

- ``$__timeFilter(col)``: QuestDB plugin ``col >= cast(<µs> as timestamp) AND col <= cast(<µs> as timestamp)``;
  PostgreSQL datasource ``col BETWEEN '<RFC 3339>' AND '<RFC 3339>'``;
- ``${__interval_ms}`` (Grafana's own): the panel's interval in ms, used as ``SAMPLE BY ${__interval_ms}T``;
- variables with an explicit format, ``${venue:singlequote}`` (``'a','b'``) and ``${horizon:csv}`` (``1,5``).

A bare ``$venue`` is refused: its expansion differs between datasources (quoted when multi-valued, raw when not).
``table_prefix`` renames the tables after ``FROM``/``JOIN`` (tests fill uuid-prefixed tables).

>>> from datetime import UTC, datetime
>>> t0, t1 = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 0, 1, tzinfo=UTC)
>>> sql = "SELECT mid FROM features WHERE $__timeFilter(window_start) AND symbol IN (${symbol:singlequote})"
>>> expand(sql, time_from=t0, time_to=t1, variables={"symbol": ["BTC-USDT", "ETH-USDT"]})
"SELECT mid FROM features WHERE window_start >= cast(1704067200000000 as timestamp) AND window_start <= cast(1704067260000000 as timestamp) AND symbol IN ('BTC-USDT','ETH-USDT')"
>>> expand("SELECT 1 FROM scores WHERE $__timeFilter(window_end) SAMPLE BY ${__interval_ms}T", time_from=t0,
...        time_to=t1, interval_ms=2000, flavor="postgres", table_prefix="t_")
"SELECT 1 FROM t_scores WHERE window_end BETWEEN '2024-01-01T00:00:00.000Z' AND '2024-01-01T00:01:00.000Z' SAMPLE BY 2000T"
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal

TABLES = ("features", "predictions", "scores", "health", "news")
Flavor = Literal["questdb", "postgres"]

_TIME_FILTER = re.compile(r"\$__timeFilter\(\s*([^()]+?)\s*\)")
_INTERVAL = re.compile(r"\$\{__interval_ms\}|\$__interval_ms\b")
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")
_TABLE = re.compile(r"\b(FROM|JOIN)\s+(" + "|".join(TABLES) + r")\b", re.IGNORECASE)


def _micros(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def _rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _format(name: str, values: Sequence[str], fmt: str | None) -> str:
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)
    if fmt == "csv":
        return ",".join(values)
    raise ValueError(f"variable ${name}: use ${{{name}:singlequote}} or ${{{name}:csv}} (got format {fmt!r})")


def expand(
    sql: str,
    *,
    time_from: datetime,
    time_to: datetime,
    interval_ms: int = 1000,
    variables: Mapping[str, str | Sequence[str]] | None = None,
    flavor: Flavor = "questdb",
    table_prefix: str = "",
) -> str:
    """``sql`` as the datasource of ``flavor`` would send it to QuestDB."""
    if flavor == "questdb":
        lo, hi = _micros(time_from), _micros(time_to)
        sql = _TIME_FILTER.sub(lambda m: f"{m[1]} >= cast({lo} as timestamp) AND {m[1]} <= cast({hi} as timestamp)",
                               sql)
    else:
        a, b = _rfc3339(time_from), _rfc3339(time_to)
        sql = _TIME_FILTER.sub(lambda m: f"{m[1]} BETWEEN '{a}' AND '{b}'", sql)
    sql = _INTERVAL.sub(str(int(interval_ms)), sql)
    given = {k: [v] if isinstance(v, str) else list(v) for k, v in (variables or {}).items()}

    def var(m: re.Match[str]) -> str:
        name = m[1] or m[3]
        if name.startswith("__"):
            raise ValueError(f"unsupported Grafana macro ${name} in {sql[:80]!r}")
        if name not in given:
            raise KeyError(f"variable ${name} has no value")
        return _format(name, given[name], m[2])

    sql = _VARIABLE.sub(var, sql)
    if table_prefix:
        sql = _TABLE.sub(lambda m: f"{m[1]} {table_prefix}{m[2]}", sql)
    return sql


def variables_used(sql: str) -> set[str]:
    """Names of the dashboard variables in ``sql``.

    >>> sorted(variables_used("$__timeFilter(ts) AND a IN (${venue:singlequote}) AND h IN (${horizon:csv})"))
    ['horizon', 'venue']
    """
    return {name for m in _VARIABLE.finditer(sql) if not (name := m[1] or m[3]).startswith("__")}
