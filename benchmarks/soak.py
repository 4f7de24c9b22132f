"""Soak: the whole stack (``ccf stack up``) for a long run at N× real time; memory, lag and rows checked.

``python -m benchmarks.soak [--minutes 30] [--speed 10] [--replay FILE]`` (``make soak``): the synthetic venue by
default (a capture with ``--replay``), every role of the stack (the trainer retraining every ``--trainer-every``),
sampled every ``--every`` seconds: the resident and the anonymous memory of each role (its whole process group),
the features job's consumer lag, feature rows in QuestDB. At the end the venue is stopped, the features job drains,
and the rows are checked: per symbol, every window between the first and the last present in QuestDB (none lost),
and on the ``ccf.features`` topic each key exactly once for a ``read_committed`` consumer (none duplicated).
Results go to ``benchmarks/results/soak.json``; ``passed`` says whether anonymous memory grew less than 10 % after
warm-up for every role (resident memory is reported too; QuestDB's grows with the table files it maps), lag stayed
bounded (drained at the end, its maximum reported) and no row was lost or duplicated. Exit 0 when it passed."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

logger = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
PAGE = 4096
TOPIC_PARTITIONS = 3
"""ccf.book, ccf.trades and ccf.predictions, one partition each (one features process)."""


def group_rss_mb(pid: int) -> tuple[float, float]:
    """``(RSS, anonymous RSS)`` in MB of every process in the process group led by ``pid`` (supervisord starts each
    role in its own). Anonymous memory is what a leak grows; the rest is mapped files (QuestDB maps its tables,
    so its RSS grows with the data it holds)."""
    total = anon = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pid:
                continue
            status = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line)
            total += int(status["VmRSS"].split()[0]) * 1024
            anon += int(status["RssAnon"].split()[0]) * 1024
        except (OSError, ValueError, IndexError, KeyError):
            continue
    return total / 1e6, anon / 1e6


def _sql(url: str, query: str) -> list[list[Any]]:
    try:
        body = httpx.get(f"{url}/exec", params={"query": query}, timeout=30).json()
    except (httpx.HTTPError, ValueError):
        return []
    rows: list[list[Any]] = body.get("dataset", [])
    return rows


def kafka_feature_keys(bootstrap: str, topic: str) -> tuple[int, int]:
    """``(messages, distinct keys)`` of ``topic`` for a read_committed consumer, read to its end."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"soak-audit-{time.time_ns()}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in parts}
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        seen: set[bytes] = set()
        count, idle = 0, 0
        while idle < 5:
            msgs = consumer.consume(10_000, timeout=1.0)
            if not msgs:
                positions = {tp.partition: tp.offset for tp in consumer.position([TopicPartition(topic, p)
                                                                                 for p in parts])}
                idle = idle + 1 if all(positions.get(p, 0) >= ends[p] - 1 for p in parts) else 0
                continue
            for m in msgs:
                if m.error() is None:
                    count += 1
                    row = json.loads(m.value())
                    seen.add(f"{row.get('venue')}:{row.get('symbol')}:{row.get('window_start')}".encode())
    finally:
        consumer.close()
    return count, len(seen)


def missing_windows(url: str, width_ns: int) -> dict[str, dict[str, int]]:
    """Per symbol: rows, and windows between its first and last that QuestDB does not hold."""
    out = {}
    for symbol, rows, first, last in _sql(url, "SELECT symbol, count(), min(window_start), max(window_start) "
                                               "FROM features"):
        from datetime import datetime

        span = (datetime.fromisoformat(last.replace("Z", "+00:00")) - datetime.fromisoformat(
            first.replace("Z", "+00:00"))).total_seconds()
        expected = round(span * 1e9 / width_ns) + 1
        out[symbol] = {"rows": int(rows), "expected": expected, "missing": expected - int(rows)}
    return out


def drained(status: dict[str, Any]) -> bool:
    """The features job has consumed everything: its lag is at most one per topic-partition it reads (a
    transactional topic's last offset is a commit marker, which no consumer reads, so the group never commits it)."""
    lags = [r["lag"] for n, r in status["roles"].items() if n.startswith("features")]
    return bool(lags) and all(lag is not None and lag <= TOPIC_PARTITIONS for lag in lags)


def _growth(samples: list[dict[str, Any]], key: str, name: str, warmup_s: float) -> dict[str, Any]:
    """Median of the minute after warm-up against the median of the last minute."""
    end_t = samples[-1]["t"]
    series = [(s["t"], s[key][name]) for s in samples if name in s.get(key, {})]
    early = [v for t, v in series if warmup_s <= t < warmup_s + 60] or [series[0][1]]
    late = [v for t, v in series if t >= end_t - 60] or [series[-1][1]]
    start, end = statistics.median(early), statistics.median(late)
    return {"after_warmup": round(start, 1), "end": round(end, 1), "max": round(max(v for _, v in series), 1),
            "growth_pct": round(100 * (end - start) / start, 2) if start else None}


def summarize(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """Memory growth per role after warm-up: all resident memory (``rss_mb``) and anonymous memory (``anon_mb``,
    what a leak grows; the ``passed`` criterion)."""
    roles = {name: {"rss_mb": _growth(samples, "rss_mb", name, warmup_s),
                    "anon_mb": _growth(samples, "anon_mb", name, warmup_s)} for name in samples[-1]["rss_mb"]}
    lags = [s["lag"] for s in samples if s["lag"] is not None and s["t"] >= warmup_s]
    return {"roles": roles, "lag": {"max": max(lags, default=None), "p95": _p95(lags), "samples": len(lags)}}


def _memory(status: dict[str, Any]) -> dict[str, dict[str, float]]:
    rss, anon = {}, {}
    for name, r in status["roles"].items():
        if r["pid"]:
            rss[name], anon[name] = (round(v, 1) for v in group_rss_mb(r["pid"]))
    return {"rss_mb": rss, "anon_mb": anon}


def _p95(values: list[int]) -> int | None:
    return sorted(values)[int(0.95 * (len(values) - 1))] if values else None


def main(argv: list[str] | None = None) -> int:
    from ccf.logs import setup_logging
    from ccf.stack.manager import StackManager, StackOptions
    from ccf.stack.supervisor import rpc

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--speed", type=float, default=10.0)
    p.add_argument("--replay", type=Path, action="append", default=[])
    p.add_argument("--warmup-minutes", type=float, default=12.0,
                   help="Memory is compared from here on (it covers the trainer's first retrain, which loads torch).")
    p.add_argument("--trainer-every", default="10m", help="The trainer's period during the soak.")
    p.add_argument("--every", type=float, default=10.0, help="Seconds between samples.")
    p.add_argument("--run-dir", type=Path, default=Path(".ccf/soak"))
    p.add_argument("--out", type=Path, default=HERE / "results" / "soak.json")
    args = p.parse_args(argv)
    setup_logging("INFO")
    manager = StackManager(args.run_dir)
    manager.down()
    if (args.run_dir / "stack" / "stack.json").is_file():  # a soak starts afresh: no rows, offsets or trainer state
        shutil.rmtree(args.run_dir)
    t_up = time.monotonic()
    status = manager.up(StackOptions(replay=tuple(args.replay), speed=args.speed, trainer_every=args.trainer_every,
                                     timeout_s=300))
    up_s = time.monotonic() - t_up
    url = status["env"]["CCF_QUESTDB__HTTP_URL"]
    samples: list[dict[str, Any]] = []
    t0 = time.monotonic()
    try:
        while (t := time.monotonic() - t0) < args.minutes * 60:
            st = manager.status()
            rows = _sql(url, "SELECT count() FROM features")
            samples.append({"t": round(t, 1), "lag": next((r["lag"] for n, r in st["roles"].items()
                                                            if n.startswith("features")), None),
                            **_memory(st),
                            "restarts": {n: r["restarts"] for n, r in st["roles"].items()},
                            "feature_rows": rows[0][0] if rows else None})
            logger.info("soak t=%.0f s lag=%s rows=%s", t, samples[-1]["lag"], samples[-1]["feature_rows"])
            time.sleep(max(0.0, args.every - (time.monotonic() - t0 - t)))
        during = {n: r["restarts"] for n, r in manager.status()["roles"].items()}
        rpc(manager.paths).supervisor.stopProcess("venue", True)  # the feed ends: ingest and features drain
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not drained(manager.status()):
            time.sleep(5)
        time.sleep(15)  # the last batches reach QuestDB (WAL) and Kafka
        final = manager.status()
        from ccf.settings import load_settings

        width_ns = int(load_settings().features.window_s * 1e9)
        missing = missing_windows(url, width_ns)
        sent, distinct = kafka_feature_keys(status["env"]["CCF_KAFKA__BOOTSTRAP_SERVERS"], "ccf.features")
    finally:
        manager.down()
    summary = summarize(samples, args.warmup_minutes * 60)
    # ingest gives up on the stopped venue and is restarted: count the restarts of the soak itself
    restarts = during
    lost = sum(max(0, m["missing"]) for m in missing.values())
    result = {
        "config": {"minutes": args.minutes, "speed": args.speed, "venue": "replay" if args.replay else "synthetic",
                   "replay": [str(r) for r in args.replay], "warmup_minutes": args.warmup_minutes,
                   "trainer_every": args.trainer_every,
                   "sample_every_s": args.every},
        "up_s": round(up_s, 1), **summary, "restarts": restarts,
        "rows": {"questdb": missing, "lost_windows": lost, "kafka_features_messages": sent,
                 "kafka_features_distinct": distinct, "kafka_duplicates": sent - distinct},
        "samples": samples,
    }
    growth = [r["anon_mb"]["growth_pct"] for r in summary["roles"].values() if r["anon_mb"]["growth_pct"] is not None]
    result["passed"] = {"anon_memory_growth_under_10pct": all(g < 10 for g in growth),
                        "lag_drained": drained(final),
                        "no_lost_windows": lost == 0, "no_kafka_duplicates": sent == distinct}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("passed", "lag", "rows", "restarts")}, indent=1))
    print(f"written to {args.out}")
    return 0 if all(result["passed"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
