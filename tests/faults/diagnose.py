"""Why QuestDB differs from the backtest: which stage brought the difference in.

* :func:`ingest_vs_capture`: what ``flows.ingest`` published against the capture's own records (as the backtest reads
  them): the same trades and depth updates? the same event times on the records whose message has no time (spot
  ``bookTicker``, the REST snapshot)? the snapshot in the same place among the depth updates?
* :func:`same_topics_in_process`: the features flow run in process over the very topics the deployed flow read
  (caught up from the beginning, ``CCF_STOP_AFTER`` set so it stops at their end), compared with QuestDB. Equal means
  the deployed features job wrote what its input implies, and any difference from the backtest came in upstream.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tests.faults.compare import Outage, compare_table, fetch
from tests.faults.kafka_audit import read_topic
from tests.faults.reference import Reference, default_settings


def _content(r: Any) -> Any:
    return msgspec.structs.replace(r, ts_recv=0)


def ingest_vs_capture(bootstrap: str, prefix: str, capture: list[Any]) -> dict[str, Any]:
    from ccf.schemas import BookDelta, BookSnapshot, BookTop, Trade, decode

    book = [decode(v) for v in read_topic(bootstrap, prefix + "book")]
    trades = [decode(v) for v in read_topic(bootstrap, prefix + "trades")]
    cap = [r[0] if type(r) is tuple else r for r in capture]

    def placed(records: list[Any]) -> list[dict[str, Any]]:
        out, deltas = [], 0
        for r in records:
            if isinstance(r, BookDelta):
                deltas += 1
            elif isinstance(r, BookSnapshot):
                out.append({"last_update_id": r.last_update_id, "ts_event": r.ts_event, "after_deltas": deltas})
        return out

    cap_tops = {r.update_id: r.ts_event for r in cap if isinstance(r, BookTop)}
    top_dt = [r.ts_event - cap_tops[r.update_id] for r in book if isinstance(r, BookTop) and r.update_id in cap_tops]
    cap_trades = [_content(r) for r in cap if isinstance(r, Trade)]
    cap_deltas = [_content(r) for r in cap if isinstance(r, BookDelta)]
    got_deltas = [_content(r) for r in book if isinstance(r, BookDelta)]
    got_trades = [_content(r) for r in trades]
    return {
        "trades_equal_capture": got_trades == cap_trades,
        "depth_updates_equal_capture": got_deltas == cap_deltas,
        "snapshots_capture": placed(cap),
        "snapshots_kafka": placed(book),
        "tops_compared": len(top_dt),
        "tops_other_event_time": sum(1 for d in top_dt if d),
        "tops_event_time_diff_ms": {"min": min(top_dt, default=0) / 1e6, "max": max(top_dt, default=0) / 1e6},
    }


def same_topics_in_process(bootstrap: str, kafka_prefix: str, http_url: str, table_prefix: str,
                           cutoff_ns: int, outages: list[Outage]) -> dict[str, Any]:
    """QuestDB against the features flow run in process over the same topics (to their end); ``outages`` are the
    features job's own (a start without state), which the run in process does not have."""
    from bytewax.testing import run_main

    from ccf.backtest import CollectSink
    from ccf.store.tables import feature_row_values, prediction_values, score_values
    from flows.features import build_flow

    base = default_settings()
    settings = base.model_copy(update={
        "stop_after": 1e12,  # read the topics to their end, then stop
        "kafka": base.kafka.model_copy(update={"bootstrap_servers": bootstrap, "topic_prefix": kafka_prefix,
                                               "group_id": "faults-diagnosis"}),
    })
    sink = CollectSink()
    run_main(build_flow(settings, sink=sink))  # type: ignore[no-untyped-call]
    q = settings.forecast.quantiles
    ref = Reference({
        "features": [feature_row_values(r) for o in sink.outs for r in o.rows],
        "predictions": [prediction_values(p, q) for o in sink.outs for p in o.predictions],
        "scores": [score_values(s) for o in sink.outs for s in o.scores],
    }, cutoff_ns, 0)
    out = {}
    for name in ("features", "predictions", "scores"):
        rows, dups = fetch(http_url, table_prefix + name)
        t = compare_table(name, rows, dups, ref, cutoff_ns, outages, 1_000_000_000)
        out[name] = {k: t[k] for k in ("compared", "missing", "extra", "differing", "differing_columns",
                                       "differing_book_invalid", "history_after_outage", "downstream_of_outage")
                     if k in t} | ({"samples": t["samples"]} if t.get("samples") else {})
    return out
