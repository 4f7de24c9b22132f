"""The scenarios: one function each, ``scenario(ctx) -> figures``. Each starts the whole pipeline on a fresh uuid
prefix, injects its faults while the capture plays, waits until everything drained, then audits Kafka and compares
QuestDB with the backtest (:func:`evaluate`). :func:`failures` says which criteria the figures break.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tests.faults.compare import Outage, compare_all, rewritten, snapshot_rows
from tests.faults.diagnose import ingest_vs_capture, same_topics_in_process
from tests.faults.harness import Pipeline, Stack
from tests.faults.kafka_audit import audit, outputs
from tests.faults.reference import Reference, default_settings, reference

logger = logging.getLogger(__name__)

WINDOW_S = 1.0


@dataclass
class Context:
    stack: Stack
    work: Path
    captures: tuple[Path, ...]
    speed: float = 10.0
    seed: int = 20240808
    keep: bool = False
    """Keep topics and tables (for a post-mortem)."""
    refs: dict[tuple[Path, ...], Reference] = field(default_factory=dict)

    @property
    def ref(self) -> Reference:
        if self.captures not in self.refs:
            t0 = time.monotonic()
            self.refs[self.captures] = reference(self.captures, default_settings())
            logger.info("reference backtest in %.1f s", time.monotonic() - t0)
        return self.refs[self.captures]

    @cached_property
    def capture(self) -> list[Any]:
        """The capture's records as the backtest reads them."""
        from ccf.capture.readers import read_records

        return list(read_records(list(self.captures)))

    @cached_property
    def streamed(self) -> int:
        """Messages the venue server streams for the capture (its REST snapshot lines are not streamed)."""
        from ccf.venue_server.feeds import read_capture

        return sum(1 for _, text in read_capture(list(self.captures)) if text.startswith('{"stream"'))


@dataclass
class Faults:
    """What a scenario did, and when (monotonic times, for the recovery figures)."""

    injected: list[dict[str, Any]] = field(default_factory=list)
    resumed: list[tuple[str, float, bool]] = field(default_factory=list)
    """(what, time the faulty part was back, whether recovery needs new data from the ingest)."""
    extra: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)


def run(name: str, ctx: Context, inject: Callable[[Pipeline, Faults, random.Random], None],
        lossless: bool = True, recovery: bool = True, supervised: bool = False) -> dict[str, Any]:
    """One scenario end to end; returns its figures. ``supervised``: the pipeline runs through ``ccf stack``."""
    ref = ctx.ref
    if supervised:
        from tests.faults.stack_pipeline import StackPipeline

        p: Pipeline = StackPipeline(ctx.stack, ctx.work / name, ctx.captures, speed=ctx.speed, recovery=recovery)
    else:
        p = Pipeline(ctx.stack, ctx.work / name, ctx.captures, speed=ctx.speed, recovery=recovery)
    faults = Faults()
    rng = random.Random(f"{ctx.seed}:{name}")
    t0 = time.monotonic()
    try:
        p.start()
        inject(p, faults, rng)
        drained = p.drain()
        figures = evaluate(p, faults, ref, lossless, ctx)
        figures["wall_s"] = round(drained - t0, 1)
        figures["logs"] = str(p.work)
    except Exception as exc:
        logger.exception("scenario %s failed to run", name)
        figures = {"error": f"{type(exc).__name__}: {exc}", "timeline": p.events,
                   "tails": {x.name: x.tail(25) for x in (p.venue, p.ingest, p.features)}}
    finally:
        p.close(keep=ctx.keep)
    figures = {"scenario": name, "lossless": lossless, **figures}
    figures["failures"] = failures(figures)
    return figures


def evaluate(p: Pipeline, faults: Faults, ref: Reference, lossless: bool, ctx: Context) -> dict[str, Any]:
    kafka, outages = audit(p.stack.bootstrap, p.kafka_prefix)
    kafka["outputs"] = outputs(p.stack.bootstrap, p.kafka_prefix)
    own = cold_start(faults, kafka)  # outages of the features job itself (the in-process run has none)
    outages += own
    tables = compare_all(p.stack.http_url, p.table_prefix, ref, outages, window_s=WINDOW_S)
    diagnosis: dict[str, Any] = {}
    try:
        diagnosis["ingest_vs_capture"] = ingest_vs_capture(p.stack.bootstrap, p.kafka_prefix, ctx.capture)
        diagnosis["same_topics_in_process"] = same_topics_in_process(
            p.stack.bootstrap, p.kafka_prefix, p.stack.http_url, p.table_prefix, ref.last_event_ns - 500_000_000,
            own)
    except Exception as exc:  # a diagnosis that cannot run must not hide the figures
        logger.exception("diagnosis failed")
        diagnosis["error"] = f"{type(exc).__name__}: {exc}"
    samples = p.monitor.samples
    threshold = round((1.5 + 1.0 * p.speed) * 1e9)
    first_fault = min((f["t_mono"] for f in faults.injected if "t_mono" in f), default=None)
    lags = [s.kafka_ts - s.max_window_end for s in samples if s.kafka_ts and s.max_window_end
            and (first_fault is None or s.t < first_fault)]
    recovery = []
    for what, t_back, needs_new in faults.resumed:
        recovery.append({"what": what, "recovery_s": recovery_seconds(samples, t_back, threshold, needs_new)})
    for f in faults.injected:
        f.pop("t_mono", None)
    return {
        "faults_injected": len(faults.injected),
        "faults": faults.injected,
        "rows_compared": {t: v["compared"] for t, v in tables.items()},
        "missing": sum(v["missing"] for v in tables.values()),
        "extra": sum(v["extra"] for v in tables.values()),
        "duplicated": sum(v["duplicated"] for v in tables.values()),
        "differing": sum(v["differing"] for v in tables.values()),
        "differing_book_invalid": tables["features"]["differing_book_invalid"],
        "history_after_outage": tables["features"]["history_after_outage"],
        "downstream_of_outage": sum(v["downstream_of_outage"] + v["missing_downstream_of_outage"]
                                    for v in tables.values()),
        "differing_outage_book_valid": tables["features"]["differing_outage_book_valid"],
        "recovery": recovery,
        "recovery_s_max": max((r["recovery_s"] for r in recovery if r["recovery_s"] is not None), default=None),
        "recovered_all": all(r["recovery_s"] is not None for r in recovery),
        "unexpected_exits": [{"proc": e.proc, "rc": e.returncode, "tail": e.tail[-1500:]}
                             for e in p.monitor.exits],
        "outages": [{"start_ns": o.start, "end_ns": o.end, "s": round((o.end - o.start) / 1e9, 3), "why": o.why[:200]}
                    for o in outages],
        "kafka": kafka,
        "tables": tables,
        "checks": faults.checks,
        "diagnosis": diagnosis,
        "baseline_lag_s": {"median": round(statistics.median(lags) / 1e9, 2) if lags else None,
                           "max": round(max(lags) / 1e9, 2) if lags else None,
                           "threshold": threshold / 1e9},
        "timeline": p.events,
        "venue_server": _venue_summary(p),
        "pipeline": p.describe(),
        **faults.extra,
    }


def cold_start(faults: Faults, kafka: dict[str, Any]) -> list[Outage]:
    """A features job started without state has no book until the next checkpoint on ``ccf.book``: for its first
    new window on, an outage of the features flow (its rows say ``book_valid = false``; later ones differ in their
    look-back columns only, its forecasts are new)."""
    times = kafka.pop("checkpoint_ts", [])
    start = faults.extra.get("cold_start_ns")
    if start is None:
        return []
    synced = min((t for t in times if t >= start), default=None)
    faults.extra["cold_start_synced_ns"] = synced
    end = synced if synced is not None else 2**62  # never synced: every later row must say book_valid = false
    return [Outage(start, end, "features started without recovery state: no book until the next checkpoint")]


def _venue_summary(p: Pipeline) -> dict[str, Any]:
    try:
        s = p.venue_stats()
    except Exception as exc:  # the server is gone: say so
        return {"error": str(exc)}
    return {k: s.get(k) for k in ("messages_sent", "events", "connections_opened", "rest_requests", "faults", "ended")}


def recovery_seconds(samples: list[Any], t_back: float, threshold_ns: int, needs_new_data: bool) -> float | None:
    """Seconds from ``t_back`` until QuestDB's newest window is within ``threshold_ns`` of the newest trade on Kafka
    (after new trades arrived, when ``needs_new_data``)."""
    before = [s for s in samples if s.t <= t_back and s.kafka_end is not None]
    end0 = before[-1].kafka_end if before else None
    for s in samples:
        if s.t < t_back or s.kafka_ts is None or s.max_window_end is None:
            continue
        if needs_new_data and end0 is not None and (s.kafka_end or 0) <= end0:
            continue
        if s.kafka_ts - s.max_window_end <= threshold_ns:
            return round(s.t - t_back, 2)
    return None


def failures(fig: dict[str, Any]) -> list[str]:
    """The criteria the figures break (empty: the scenario passed)."""
    if "error" in fig:
        return [f"did not run: {fig['error']}"]
    out = []
    for t, v in fig["tables"].items():
        for what in ("missing", "extra", "duplicated", "differing", "differing_outage_book_valid"):
            if v[what]:
                out.append(f"{t}: {v[what]} {what}")
        if v["tail_open"] > (3 if t == "features" else 3 * 16):
            out.append(f"{t}: {v['tail_open']} rows at the end never written")
    same = fig.get("diagnosis", {}).get("same_topics_in_process")
    if same is None:
        out.append(f"no comparison with the flow in process over the same topics: {fig.get('diagnosis')}")
    else:
        for t, v in same.items():
            for what in ("missing", "extra", "differing"):
                if v[what]:
                    out.append(f"{t}: {v[what]} {what} against the same topics run in process")
    if fig["unexpected_exits"]:
        out.append(f"flows exited by themselves: {[(e['proc'], e['rc']) for e in fig['unexpected_exits']]}")
    if not fig["recovered_all"]:
        out.append(f"not caught up after a fault: {fig['recovery']}")
    if fig["lossless"]:
        k = fig["kafka"]
        if not k["trade_ids_contiguous"]:
            out.append(f"trade ids not contiguous on Kafka: {k['trade_id_gaps']} gaps, {k['trades_lost']} lost, "
                       f"{k['trade_id_duplicates']} duplicated, {k['trade_ids_backwards']} backwards")
        if k["depth_breaks"]:
            out.append(f"{k['depth_breaks']} breaks in the depth updates on Kafka")
    for table, o in fig["kafka"].get("outputs", {}).items():
        if o["duplicated"]:
            out.append(f"Kafka {table}: {o['duplicated']} rows twice for a read_committed consumer")
    for name, check in fig.get("checks", {}).items():
        if isinstance(check, dict) and (check.get("gone") or check.get("changed")):
            out.append(f"{name}: {check.get('gone')} rows gone, {check.get('changed')} changed")
    return out


# ---- the scenarios ---------------------------------------------------------------------------------------------------


def _fractions(rng: random.Random, n: int, lo: float = 0.15, hi: float = 0.85, gap: float = 0.12) -> list[float]:
    while True:
        xs = sorted(rng.uniform(lo, hi) for _ in range(n))
        if all(b - a >= gap for a, b in itertools.pairwise(xs)):
            return [round(x, 3) for x in xs]


def no_fault(ctx: Context) -> dict[str, Any]:
    """(a) Nothing goes wrong: the pipeline must write exactly the backtest's rows."""
    return run("a_no_fault", ctx, lambda p, f, rng: None)


def features_sigkill(ctx: Context, kills: int = 3, name: str = "b_features_sigkill") -> dict[str, Any]:
    """(b) SIGKILL ``flows.features`` at ``kills`` seeded random points; each time restart it on the same recovery dir."""

    def inject(p: Pipeline, f: Faults, rng: random.Random) -> None:
        for frac in _fractions(rng, kills):
            p.wait_fraction(frac, ctx.streamed)
            t = p.sigkill(p.features)
            down = round(rng.uniform(0.5, 3.0), 2)
            p.note("features SIGKILL", at_fraction=frac, down_s=down)
            f.injected.append({"kind": "sigkill", "proc": "features", "at_fraction": frac, "down_s": down,
                               "t_mono": t})
            time.sleep(down)
            f.resumed.append(("features restarted", p.restart(p.features), False))

    return run(name, ctx, inject)


def ingest_sigkill(ctx: Context) -> dict[str, Any]:
    """(c) SIGKILL ``flows.ingest`` once and restart it: what it lost is an outage (windows must say so)."""

    def inject(p: Pipeline, f: Faults, rng: random.Random) -> None:
        frac = round(rng.uniform(0.3, 0.6), 3)
        p.wait_fraction(frac, ctx.streamed)
        t = p.sigkill(p.ingest)
        down = round(rng.uniform(1.0, 3.0), 2)
        p.note("ingest SIGKILL", at_fraction=frac, down_s=down)
        f.injected.append({"kind": "sigkill", "proc": "ingest", "at_fraction": frac, "down_s": down, "t_mono": t})
        time.sleep(down)
        f.resumed.append(("ingest restarted", p.restart(p.ingest), True))

    return run("c_ingest_sigkill", ctx, inject, lossless=False)


def _service_outage(ctx: Context, service: str, kind: str, outage_s: tuple[float, float]) -> Any:
    """An ``inject`` that stops ``service`` for a random time in ``outage_s`` and starts it again on its port."""

    def inject(p: Pipeline, f: Faults, rng: random.Random) -> None:
        frac = round(rng.uniform(0.3, 0.5), 3)
        p.wait_fraction(frac, ctx.streamed)
        outage = round(rng.uniform(*outage_s), 1)
        t = p.stack.stop(service)
        p.note(f"{service} stopped", at_fraction=frac)
        time.sleep(max(0.0, outage - (time.monotonic() - t)))
        back = p.stack.start(service)
        p.note(f"{service} started", down_s=round(back - t, 1))
        f.injected.append({"kind": kind, "at_fraction": frac, "planned_s": outage,
                           "down_s": round(back - t, 1), "t_mono": t})
        f.resumed.append((f"{service} back", back, False))

    return inject


def kafka_restart(ctx: Context) -> dict[str, Any]:
    """(d) Stop the Kafka broker for 10-20 s, start it again on the same port with its data."""
    return run("d_kafka_restart", ctx, _service_outage(ctx, "kafka", "broker_stop", (10.0, 20.0)))


def questdb_restart(ctx: Context) -> dict[str, Any]:
    """(e) Stop QuestDB for ~10 s and start it again: the features job must stall and retry, dropping nothing."""
    return run("e_questdb_restart", ctx, _service_outage(ctx, "questdb", "questdb_stop", (8.0, 12.0)))


def venue_faults(ctx: Context) -> dict[str, Any]:
    """(f) At the venue server (``POST /control/faults``): a 3 s stall, a dropped depth diff (a gap), a dropped
    connection. The stall loses nothing; the gap and the drop are outages."""

    def inject(p: Pipeline, f: Faults, rng: random.Random) -> None:
        plan = [("stall", 3.0), ("drop_diff", 0.0), ("disconnect", 0.0)]
        for (kind, arg), frac in zip(plan, _fractions(rng, len(plan), 0.2, 0.8, 0.15), strict=True):
            p.wait_fraction(frac, ctx.streamed)
            answer = p.post_faults([{"kind": kind, "arg": arg}])
            t = time.monotonic()
            p.note(f"venue fault {kind}", at_fraction=frac, answer=answer)
            f.injected.append({"kind": kind, "arg": arg, "at_fraction": frac, "t_mono": t,
                               "connections": answer.get("connections")})
            f.resumed.append((f"after {kind}", t + (arg if kind == "stall" else 0.0), kind != "stall"))

    return run("f_venue_faults", ctx, inject, lossless=False)


def features_restart_without_state(ctx: Context) -> dict[str, Any]:
    """(g) Kill ``flows.features`` and start it with no recovery state: rows already in QuestDB keep their values."""

    def inject(p: Pipeline, f: Faults, rng: random.Random) -> None:
        frac = round(rng.uniform(0.4, 0.6), 3)
        p.wait_fraction(frac, ctx.streamed)
        t = p.sigkill(p.features)
        p.note("features SIGKILL", at_fraction=frac)
        time.sleep(2.0)  # let QuestDB apply what was committed
        before = {name: snapshot_rows(p.stack.http_url, p.table(name)) for name in ("features", "predictions",
                                                                                   "scores")}
        p.note("rows before restart", rows={k: len(v) for k, v in before.items()})
        f.injected.append({"kind": "sigkill_then_fresh_start", "proc": "features", "at_fraction": frac,
                           "t_mono": t})
        f.resumed.append(("features restarted without state", p.restart(p.features, p.features_cmd(False)), False))
        f.extra["_before"] = before

    figures = run("g_features_restart_without_state", ctx, _then_check(inject))
    return figures


def _then_check(inject: Callable[[Pipeline, Faults, random.Random], None]
                ) -> Callable[[Pipeline, Faults, random.Random], None]:
    """Wrap (g)'s injection so that, once drained, the rows kept before the restart are checked."""

    def wrapped(p: Pipeline, f: Faults, rng: random.Random) -> None:
        inject(p, f, rng)
        original = p.drain

        def drain_then_check(*a: Any, **kw: Any) -> float:
            done = original(*a, **kw)
            before = f.extra.pop("_before")
            for name, rows in before.items():
                f.checks[f"{name}_kept"] = rewritten(rows, snapshot_rows(p.stack.http_url, p.table(name)))
            held = [r["window_start"] for r in before["features"].values()]
            f.extra["cold_start_ns"] = max(held) + round(WINDOW_S * 1e9) if held else 0
            return done

        p.drain = drain_then_check  # type: ignore[method-assign]

    return wrapped


def snapshot_after_bridge(ctx: Context) -> dict[str, Any]:
    """(h) No fault, on a capture whose REST snapshot line comes 6 depth diffs after the diff that bridges it (as
    recorders that fetch the snapshot while the stream runs write it): the venue server's books, the backtest's and
    the deployed path's must still agree."""
    from tests.captures import capture_lines, move_snapshots, write_capture

    ctx.work.mkdir(parents=True, exist_ok=True)
    moved = write_capture(ctx.work / "snapshot_after_bridge.txt",
                          move_snapshots(capture_lines(*ctx.captures), "spot", 6))
    return run("h_snapshot_after_bridge", dataclasses.replace(ctx, captures=(moved,)), lambda p, f, rng: None)


def stack_sigkills(ctx: Context, kills: int = 2, name: str = "i_stack_sigkills") -> dict[str, Any]:
    """(i) Through ``ccf stack``: the venue, ingest and features roles as the stack defines them (default settings,
    recovery directory, 5 s snapshots) under supervisord. ``flows.features`` is SIGKILLed ``kills`` times and
    ``flows.ingest`` once at seeded points; supervisord restarts them, the harness only waits."""

    def inject(p: Pipeline, f: Faults, rng: random.Random) -> None:
        plan = sorted([(frac, "features") for frac in _fractions(rng, kills)]
                      + [(round(rng.uniform(0.3, 0.6), 3), "ingest")])
        for frac, who in plan:
            p.wait_fraction(frac, ctx.streamed)
            proc = p.features if who == "features" else p.ingest
            t = p.sigkill(proc)
            p.note(f"{who} SIGKILL (supervisord restarts it)", at_fraction=frac)
            f.injected.append({"kind": "sigkill", "proc": who, "at_fraction": frac, "supervised": True, "t_mono": t})
            f.resumed.append((f"{who} restarted by supervisord", p.restart(proc), who == "ingest"))

    return run(name, ctx, inject, lossless=False, supervised=True)


SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "a": no_fault,
    "b": features_sigkill,
    "c": ingest_sigkill,
    "d": kafka_restart,
    "e": questdb_restart,
    "f": venue_faults,
    "g": features_restart_without_state,
    "h": snapshot_after_bridge,
    "i": stack_sigkills,
}
NEEDS_OWN_SERVICES = frozenset({"d", "e"})
