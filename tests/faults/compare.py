"""QuestDB's tables against the backtest, row for row (on the table's dedup keys) and column for column.

Floats are equal within a relative tolerance of 1e-9 (NaN equals NaN; QuestDB stores a NaN double as null, so null
equals NaN too). A tailing ``flows.features`` never sees the end of its topics, so the windows the end of the feed
leaves open (``window_end`` past the last event time less the allowed lateness) are not expected; they are counted
as ``tail_open``.

Rows whose keys differ from the backtest are sorted into

* ``differing_book_invalid``: a feature row touched by an ingest outage (see :class:`Outage`) that says
  ``book_valid = false``: allowed;
* ``differing_outage_book_valid``: touched by an outage but claiming a valid book: a failure;
* ``history_after_outage``: a feature row after an outage (or one whose book resynced as it began) whose only
  differences are the columns that look back over the windows (``mid_logret``, ``realized_vol`` and
  :data:`ccf.features.signals.LOOK_BACK`) and the resync
  count ``epoch``: allowed, the outage is in their look-back;
* ``downstream_of_outage``: predictions and scores issued after an outage began (the models learnt, and the scores
  accumulated, from the data the outage lost): allowed, counted;
* ``differing``: everything else: a failure.

Predictions and scores missing after an outage began are ``missing_downstream_of_outage`` (no forecast is issued
on a window without a book, so none is scored); a missing feature row is always a failure.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ccf.features.signals import LOOK_BACK
from tests.faults.harness import iso_ns, qdb
from tests.faults.reference import KEYS, TIME_KEY, Reference

REL_TOL = 1e-9
HISTORY_COLUMNS = frozenset({"mid_logret", "realized_vol", *LOOK_BACK})
CARRIED_COLUMNS = frozenset({"epoch"})
"""The book's epoch counts its resyncs: one more for good after each outage that needed a snapshot."""
SAMPLES = 5


@dataclass(frozen=True)
class Outage:
    """An event-time range ``[start, end]`` (ns) whose records the ingest lost or could not keep a book through."""

    start: int
    end: int
    why: str

    def touches(self, window_start: int, window_end: int) -> bool:
        return window_end > self.start and window_start <= self.end


def fetch(http_url: str, table: str) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """Every row of ``table`` (timestamps as int ns), and the keys QuestDB holds more than once."""
    body = qdb(http_url, f'select * from "{table}"', timeout=120)
    cols = [c["name"] for c in body["columns"]]
    types = {c["name"]: c["type"] for c in body["columns"]}
    rows = []
    for values in body["dataset"]:
        row = dict(zip(cols, values, strict=True))
        for c, t in types.items():
            if t == "TIMESTAMP" and row[c] is not None:
                row[c] = iso_ns(row[c])
        rows.append(row)
    assert body.get("count", len(rows)) == len(rows), f"{table}: QuestDB returned part of the rows"
    name = table.rsplit("_", 1)[-1]
    keys = KEYS[name]
    key_list = ", ".join(f'"{k}"' for k in keys)
    dup = qdb(http_url, f'select * from (select {key_list}, count() n from "{table}") where n > 1', timeout=60)
    return rows, [tuple(r) for r in dup["dataset"]]


def same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return (a is None or _nan(a)) and (b is None or _nan(b))
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    if isinstance(a, float) or isinstance(b, float):
        fa, fb = float(a), float(b)
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        return fa == fb or math.isclose(fa, fb, rel_tol=REL_TOL, abs_tol=1e-300)
    return bool(a == b)


def _nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def compare_table(name: str, got_rows: list[dict[str, Any]], dup_keys: list[tuple[Any, ...]], ref: Reference,
                  cutoff_ns: int, outages: list[Outage], window_ns: int) -> dict[str, Any]:
    keys = KEYS[name]
    tkey = TIME_KEY[name]

    def k(r: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(r[c] for c in keys)

    def closed(r: dict[str, Any]) -> bool:
        end = r[tkey] + window_ns if name == "features" else r[tkey]
        return bool(end <= cutoff_ns)

    want_all = list(ref.rows[name])
    want = {k(r): r for r in want_all if closed(r)}
    tail_open = sum(1 for r in want_all if not closed(r))
    got: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in got_rows:
        got[k(r)] = r
    columns = [c for c in (want_all[0] if want_all else {}) if c not in keys]
    first_outage = min((o.start for o in outages), default=None)
    missing, missing_downstream = [], 0
    for key, w in want.items():
        if key in got:
            continue
        if name != "features" and first_outage is not None and w[tkey] > first_outage:
            missing_downstream += 1  # no forecast is issued on a window without a book, so none is scored either
        else:
            missing.append(key)
    extra = [key for key, r in got.items() if key not in want and closed(r)]
    beyond = sum(1 for key, r in got.items() if key not in want and not closed(r))
    kinds: Counter[str] = Counter()
    by_column: Counter[str] = Counter()
    samples: dict[str, list[dict[str, Any]]] = {}
    for key, w in sorted(want.items(), key=lambda kv: kv[1][tkey]):
        g = got.get(key)
        if g is None:
            continue
        diff = [c for c in columns if not same(w.get(c), g.get(c))]
        if not diff:
            continue
        kind = _classify(name, w, g, diff, outages, first_outage, window_ns)
        kinds[kind] += 1
        by_column.update(diff)
        if len(samples.setdefault(kind, [])) < SAMPLES:
            samples[kind].append({"key": _show_key(key), "columns": {c: [w.get(c), g.get(c)] for c in diff[:8]},
                                  "n_columns": len(diff)})
    out: dict[str, Any] = {
        "expected": len(want),
        "got": len(got_rows),
        "compared": sum(1 for key in want if key in got),
        "missing": len(missing),
        "missing_downstream_of_outage": missing_downstream,
        "extra": len(extra),
        "beyond_cutoff": beyond,
        "duplicated": len(dup_keys),
        "tail_open": tail_open,
        "differing": kinds["differing"],
        "differing_book_invalid": kinds["differing_book_invalid"],
        "differing_outage_book_valid": kinds["differing_outage_book_valid"],
        "history_after_outage": kinds["history_after_outage"],
        "downstream_of_outage": kinds["downstream_of_outage"],
        "differing_columns": dict(by_column.most_common()),
    }
    if missing:
        out["missing_sample"] = [_show_key(x) for x in sorted(missing, key=str)[:SAMPLES]]
    if extra:
        out["extra_sample"] = [_show_key(x) for x in sorted(extra, key=str)[:SAMPLES]]
    if dup_keys:
        out["duplicated_sample"] = [list(map(str, d)) for d in dup_keys[:SAMPLES]]
    if samples:
        out["samples"] = samples
    return out


def _classify(name: str, w: dict[str, Any], g: dict[str, Any], diff: list[str], outages: list[Outage],
              first_outage: int | None, window_ns: int) -> str:
    if name == "features":
        ws, we = w["window_start"], w["window_end"]
        if any(o.touches(ws, we) for o in outages):
            if g.get("book_valid") is False:
                return "differing_book_invalid"
            if set(diff) <= HISTORY_COLUMNS | CARRIED_COLUMNS:
                return "history_after_outage"  # the book was whole for all of it (it resynced at its start)
            return "differing_outage_book_valid"
        after = [o for o in outages if o.end < ws]
        recent = any(ws <= o.end + 22 * window_ns for o in after)
        allowed = (HISTORY_COLUMNS if recent else frozenset()) | (CARRIED_COLUMNS if after else frozenset())
        if after and set(diff) <= allowed:
            return "history_after_outage"
        return "differing"
    t = w["issued_at"] if name == "predictions" else w["window_end"]
    if first_outage is not None and t > first_outage:
        return "downstream_of_outage"
    return "differing"


def _show_key(key: tuple[Any, ...]) -> list[Any]:
    from datetime import UTC, datetime

    return [datetime.fromtimestamp(x / 1e9, UTC).isoformat() if isinstance(x, int) and x > 10**17 else x for x in key]


def compare_all(http_url: str, table_prefix: str, ref: Reference, outages: list[Outage],
                lateness_s: float = 0.5, window_s: float = 1.0, cutoff_ns: int | None = None) -> dict[str, Any]:
    """Every table compared; ``cutoff_ns`` defaults to the capture's last event time less the lateness."""
    window_ns = round(window_s * 1e9)
    if cutoff_ns is None:
        cutoff_ns = ref.last_event_ns - round(lateness_s * 1e9)
    out = {}
    for name in ("features", "predictions", "scores"):
        rows, dups = fetch(http_url, table_prefix + name)
        out[name] = compare_table(name, rows, dups, ref, cutoff_ns, outages, window_ns)
    return out


def snapshot_rows(http_url: str, table: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The rows of ``table`` now, by key (to check later that they kept their values)."""
    rows, _ = fetch(http_url, table)
    keys = KEYS[table.rsplit("_", 1)[-1]]
    return {tuple(r[c] for c in keys): r for r in rows}


def rewritten(before: dict[tuple[Any, ...], dict[str, Any]], after: dict[tuple[Any, ...], dict[str, Any]]
              ) -> dict[str, Any]:
    """How many of ``before``'s rows are gone or changed in ``after`` (designated timestamps excluded)."""
    gone = [k for k in before if k not in after]
    changed = [k for k, r in before.items() if k in after and any(not same(v, after[k].get(c)) for c, v in r.items())]
    out: dict[str, Any] = {"rows_before": len(before), "gone": len(gone), "changed": len(changed)}
    if changed:
        k0 = changed[0]
        out["changed_sample"] = {"key": _show_key(k0), "columns": {c: [v, after[k0].get(c)]
                                                                  for c, v in before[k0].items()
                                                                  if not same(v, after[k0].get(c))}}
    return out
