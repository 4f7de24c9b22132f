"""Writes the provisioned Grafana dashboards: ``python dashboards/grafana/build.py`` (``--check`` to compare only).

One definition, two flavours: ``json/questdb/`` for the QuestDB plugin (``questdb-questdb-datasource``) and
``json/postgres/`` for Grafana's PostgreSQL datasource over QuestDB's PG wire (the fallback when the plugin cannot
be installed). The SQL is identical: it uses only the macros both expand alike (see :mod:`dashboards.sql`).
Timestamps are QuestDB's; the tables are those of :mod:`ccf.store.tables`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from dashboards import kinds

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards" / "json"
FLAVOURS: dict[str, dict[str, Any]] = {
    "questdb": {"ds": {"type": "questdb-questdb-datasource", "uid": "ccf-questdb"}, "suffix": "", "title": ""},
    "postgres": {"ds": {"type": "grafana-postgresql-datasource", "uid": "ccf-questdb-pg"}, "suffix": "-pg",
                 "title": " (PostgreSQL wire)"},
}
VENUE = "venue IN (${venue:singlequote})"
SYMBOL = "symbol IN (${symbol:singlequote})"
MODEL = "model IN (${model:singlequote})"
HORIZON = "horizon_steps IN (${horizon:csv})"
SAMPLE = "SAMPLE BY ${__interval_ms}T ALIGN TO CALENDAR"
# a null in each interval without a window, so lines break where the store has none (spanNulls false)
SAMPLE_GAPS = "SAMPLE BY ${__interval_ms}T FILL(NULL) ALIGN TO CALENDAR"
SERIES = "concat(venue, ':', symbol) AS series"
VARIABLES = {
    "venue": "SELECT DISTINCT venue FROM features WHERE $__timeFilter(window_start) ORDER BY venue",
    "symbol": f"SELECT DISTINCT symbol FROM features WHERE $__timeFilter(window_start) AND {VENUE} ORDER BY symbol",
    "model": "SELECT DISTINCT model FROM predictions WHERE $__timeFilter(issued_at) ORDER BY model",
    "horizon": "SELECT DISTINCT horizon_steps FROM predictions WHERE $__timeFilter(issued_at) ORDER BY horizon_steps",
}


def where(ts: str, *filters: str) -> str:
    return " AND ".join([f"$__timeFilter({ts})", *filters])


def market_series(expr: str) -> str:
    return (f"SELECT window_start AS time, {SERIES}, {expr} FROM features WHERE {where('window_start', VENUE, SYMBOL)} "
            f"{SAMPLE_GAPS} ORDER BY time")


# ----------------------------------------------------------------------------------------------------- panels
def panel(kind: str, title: str, description: str, sql: list[str] | None, grid: tuple[int, int, int, int],
          **extra: Any) -> dict[str, Any]:
    x, y, w, h = grid
    p: dict[str, Any] = {"type": kind, "title": title, "description": description,
                         "gridPos": {"x": x, "y": y, "w": w, "h": h}}
    if sql is not None:
        p["targets"] = sql
    p.update(extra)
    return p


def series(title: str, description: str, sql: list[str], grid: tuple[int, int, int, int], unit: str = "short",
           bars: bool = False, interval: str = "1s", decimals: int | None = None, **extra: Any) -> dict[str, Any]:
    # spanNulls false: a gap the store has (no window, no row) stays a gap instead of a straight line across it
    custom: dict[str, Any] = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 40 if bars else 0,
                              "showPoints": "never", "spanNulls": False}
    return panel("timeseries", title, description, sql, grid, interval=interval,
                 fieldConfig={"defaults": {"unit": unit, "custom": custom, **({} if decimals is None else
                                                                           {"decimals": decimals})},
                              "overrides": extra.pop("overrides", [])},
                 options={"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
                 **extra)


def table(title: str, description: str, sql: str, grid: tuple[int, int, int, int], **extra: Any) -> dict[str, Any]:
    return panel("table", title, description, [sql], grid, format="table", **extra)


def text(title: str, content: str, grid: tuple[int, int, int, int]) -> dict[str, Any]:
    return panel("text", title, content, None, grid, options={"mode": "markdown", "content": content})


# ------------------------------------------------------------------------------------------------- dashboards
def market() -> tuple[str, str, list[str], list[dict[str, Any]]]:
    latest = ("SELECT venue, symbol, window_end, mid, spread_bps, imbalance_1, depth_bid_10, depth_ask_10, trade_count,"
              f" volume, book_valid, epoch FROM features WHERE {where('window_start', VENUE, SYMBOL)} "
              "LATEST ON window_start PARTITION BY venue, symbol")
    return "market", "Market", ["venue", "symbol"], [
        series("Mid price", "Mid of the best bid and ask at each window's end (last value per interval).",
               [market_series("last(mid) AS mid")], (0, 0, 12, 9), unit="none"),
        series("Spread", "Best ask minus best bid, in basis points of the mid (mean per interval).",
               [market_series("avg(spread_bps) AS spread_bps")], (12, 0, 12, 9), unit="none"),
        series("Depth, top 10 levels", "Resting size on the 10 best levels of each side, in base units (mean).",
               [market_series("avg(depth_bid_10) AS bid, avg(depth_ask_10) AS ask")], (0, 9, 12, 9)),
        series("Book imbalance", "(bid − ask) / (bid + ask) of the resting size at the touch and over 10 levels.",
               [market_series("avg(imbalance_1) AS top_1, avg(imbalance_10) AS top_10")], (12, 9, 12, 9)),
        series("Trades", "Trades per interval (trade_count summed over the windows in it).",
               [market_series("sum(trade_count) AS trades")], (0, 18, 12, 8), bars=True),
        series("Volume", "Traded volume per interval, base units (volume summed over the windows in it).",
               [market_series("sum(volume) AS volume")], (12, 18, 12, 8), bars=True),
        table("Latest window", "The newest window of each symbol in the range.", latest, (0, 26, 24, 6)),
        *news_panels(32),
    ]


def news_panels(y: int) -> list[dict[str, Any]]:
    """The news table (written by the news poller when CCF_NEWS__ENABLED=true): market-wide, not per symbol."""
    items = ("SELECT fetched, feed, title, sentiment, bases, published, link FROM news WHERE $__timeFilter(fetched) "
             "ORDER BY fetched DESC LIMIT 50")
    mood = ("SELECT fetched AS time, avg(sentiment) AS mean_sentiment FROM news WHERE $__timeFilter(fetched) "
            f"{SAMPLE} ORDER BY time")
    return [
        table("Latest news", "The newest items of every feed, with their sentiment (compound score of title and "
              "summary, −1 negative … +1 positive) and the base assets they name.", items, (0, y, 16, 9)),
        series("News sentiment", "Mean sentiment of the items fetched in each interval (at least a minute).",
               [mood], (16, y, 8, 9), unit="none", interval="1m", bars=True),
    ]


def forecasts() -> tuple[str, str, list[str], list[dict[str, Any]]]:
    pred = where("issued_at", VENUE, SYMBOL, MODEL, HORIZON)
    forecast = (f"SELECT target_time AS time, value AS forecast, q10, q90 FROM predictions WHERE {pred} "
                "ORDER BY target_time")
    mids = f"(SELECT venue, symbol, window_end, mid FROM features WHERE {where('window_start', VENUE, SYMBOL)})"
    realised = (
        "SELECT p.target_time AS time, avg(ln(f1.mid / f0.mid)) AS realised FROM predictions p "
        f"JOIN {mids} f0 ON p.venue = f0.venue AND p.symbol = f0.symbol AND p.issued_at = f0.window_end "
        f"JOIN {mids} f1 ON p.venue = f1.venue AND p.symbol = f1.symbol AND p.target_time = f1.window_end "
        f"WHERE $__timeFilter(p.issued_at) AND p.{VENUE} AND p.{SYMBOL} AND p.{MODEL} AND p.{HORIZON} "
        "GROUP BY p.target_time ORDER BY time"
    )
    band = [
        {"matcher": {"id": "byName", "options": "q90"},
         "properties": [{"id": "custom.fillBelowTo", "value": "q10"}, {"id": "custom.fillOpacity", "value": 20},
                        {"id": "custom.lineWidth", "value": 0}, {"id": "color", "value": {"mode": "fixed",
                                                                                         "fixedColor": "purple"}}]},
        {"matcher": {"id": "byName", "options": "q10"},
         "properties": [{"id": "custom.lineWidth", "value": 0},
                        {"id": "color", "value": {"mode": "fixed", "fixedColor": "purple"}}]},
        {"matcher": {"id": "byName", "options": "realised"},
         "properties": [{"id": "custom.lineWidth", "value": 2}, {"id": "color", "value": {"mode": "fixed",
                                                                                         "fixedColor": "text"}}]},
    ]
    desc = ("Forecast of the mid log-return from issue to target time, drawn at the target time, with its q10–q90 "
            "band (the default quantiles), against the realised log-return ln(mid at target / mid at issue).")
    return "forecasts", "Forecasts", ["venue", "symbol", "model", "horizon"], [
        panel("row", "Horizon ${horizon} windows", "", None, (0, 0, 24, 1), repeat="horizon", collapsed=False,
              panels=[]),
        series("${model}, ${horizon} windows ahead", desc, [forecast, realised], (0, 1, 12, 9), unit="none",
               repeat="model", repeatDirection="h", maxPerRow=2, overrides=band),
    ]


def scores() -> tuple[str, str, list[str], list[dict[str, Any]]]:
    sel = where("window_end", VENUE, SYMBOL, MODEL, HORIZON)
    board = ("SELECT symbol, model, horizon_steps AS h, n, mae * 10000 AS mae_bps, rmse * 10000 AS rmse_bps, hit_rate,"
             " pinball * 10000 AS pinball_bps, coverage, skill FROM (SELECT * FROM scores WHERE "
             f"{sel} LATEST ON window_end PARTITION BY venue, symbol, model, horizon_steps) ORDER BY symbol, h, skill DESC")

    def over_time(expr: str) -> str:
        return (f"SELECT window_end AS time, concat(symbol, ' ', model) AS series, {expr} FROM scores WHERE {sel} "
                f"{SAMPLE} ORDER BY time")

    return "scores", "Scores", ["venue", "symbol", "model", "horizon"], [
        table("Leaderboard", "Latest running scores per symbol, model and horizon (errors in basis points of "
              "log-return); skill = 1 − MAE / MAE of the naive forecast, above 0 beats naive.", board, (0, 0, 24, 10),
              fieldConfig={"defaults": {}, "overrides": [
                  {"matcher": {"id": "byRegexp", "options": ".*_bps"},
                   "properties": [{"id": "decimals", "value": 4}, {"id": "unit", "value": "suffix: bps"}]},
                  {"matcher": {"id": "byRegexp", "options": "skill|hit_rate|coverage"},
                   "properties": [{"id": "decimals", "value": 3}]}]}),
        series("Skill vs naive, ${horizon} windows ahead", "Running skill over time (last value per interval).",
               [over_time("last(skill) AS skill")], (0, 10, 12, 9), unit="none", repeat="horizon",
               repeatDirection="h", maxPerRow=2),
        series("MAE, ${horizon} windows ahead", "Running mean absolute error, basis points of log-return.",
               [over_time("last(mae) * 10000 AS mae_bps")], (0, 19, 12, 9), unit="suffix: bps", repeat="horizon",
               repeatDirection="h", maxPerRow=2, decimals=4),
        series("Band coverage (q10–q90)", "Share of realised returns inside the q10–q90 band; 0.8 is calibrated.",
               [f"SELECT window_end AS time, concat(symbol, ' ', model, ' h', horizon_steps) AS series, "
                f"last(coverage) AS coverage FROM scores WHERE {sel} {SAMPLE} ORDER BY time"],
               (0, 28, 24, 9), unit="percentunit"),
    ]


def health() -> tuple[str, str, list[str], list[dict[str, Any]]]:
    hsel = where("ts", VENUE, SYMBOL)
    conn = where("ts", VENUE, "symbol IN (${symbol:singlequote}, '')")  # "" is a whole connection

    def counts(kind_list: tuple[str, ...], name: str, sel: str = hsel) -> str:
        return (f"SELECT ts AS time, kind, sum(value) AS {name} FROM health WHERE {sel} AND kind IN "
                f"{kinds.sql_list(kind_list)} {SAMPLE} ORDER BY time")

    dead = ("SELECT kind, venue, count() AS entries, sum(value) AS records, max(ts) AS last_seen FROM health "
            f"WHERE kind IN {kinds.sql_list(kinds.DEAD_LETTERS)} AND venue IN (${{venue:singlequote}}, '') "
            "GROUP BY kind, venue ORDER BY kind, venue")
    lag = (f"SELECT ts AS time, symbol AS topic_partition, last(value) AS lag FROM health WHERE $__timeFilter(ts) "
           f"AND kind = '{kinds.CONSUMER_LAG}' {SAMPLE} ORDER BY time")
    age = ("SELECT model, model_version, min(issued_at) AS first_forecast, max(issued_at) AS last_forecast, "
           "datediff('s', min(issued_at), max(issued_at)) AS serving_s FROM predictions WHERE "
           f"{where('issued_at', VENUE, SYMBOL, MODEL)} GROUP BY model, model_version ORDER BY model, model_version")
    fresh = (f"SELECT venue, symbol, max(window_end) AS latest_window, datediff('s', max(window_end), now()) AS behind_s "
             f"FROM features WHERE {where('window_start', VENUE, SYMBOL)} GROUP BY venue, symbol ORDER BY venue, symbol")
    return "health", "Pipeline health", ["venue", "symbol", "model"], [
        series("Events/s", "Book events plus trades per second, from each window's book_events + trade_count.",
               [market_series("sum(book_events + trade_count) / (${__interval_ms} / 1000.0) AS events_per_s")],
               (0, 0, 12, 8)),
        series("Book resyncs", "Book problems that force a resync (health kinds " + ", ".join(kinds.RESYNCS) +
               "), and each book's epoch (resyncs so far).",
               [counts(kinds.RESYNCS, "problems"), market_series("max(epoch) AS epoch")], (12, 0, 12, 8), bars=True),
        series("Late records", "Records behind the watermark: late trades per window (features.late_trades) and "
               "late records per type (health kinds late_*).",
               [market_series("sum(late_trades) AS late_trades"),
                f"SELECT ts AS time, kind, sum(value) AS late FROM health WHERE {hsel} AND kind LIKE 'late_%' "
                f"{SAMPLE} ORDER BY time"], (0, 8, 12, 8), bars=True),
        table("Dead letters (all time)", "What could not be used (health kinds " + ", ".join(kinds.DEAD_LETTERS) +
              "). Counted over all time, not the dashboard range: the features flow writes dead letters without an "
              "event time (ts 0) when the bad input carried none.", dead, (12, 8, 12, 8)),
        series("Reconnects", "Connections that ended (health kinds " + ", ".join(kinds.RECONNECTS) + "), per kind; "
               "written by the features flow when it reads a venue in process. A separate flows.ingest job "
               "publishes its own on Kafka ccf.health only, which no job copies into this table.",
               [counts(kinds.RECONNECTS, "reconnects", conn)], (0, 16, 8, 6), bars=True),
        series("Consumer lag", "Messages the features flow's Kafka consumer is behind the end of each "
               "topic-partition (health kind consumer_lag, written every few seconds; the newest per interval).",
               [lag], (8, 16, 8, 6)),
        table("Freshness (window latency bound)", "Seconds between now and each symbol's newest window end: an "
              "upper bound on window latency. The window-close → write latency itself is not stored in any table "
              "yet.", fresh, (16, 16, 8, 6)),
        table("Model age", "Each model version serving forecasts: its first and last forecast in the range and how "
              "long it has served (training time lives in MLflow, not in a table).", age, (0, 22, 12, 7)),
        table("Latest health events", "The newest health rows (problems, reconnects, late-record counts, lag).",
              f"SELECT ts, venue, symbol, kind, value, detail FROM health WHERE {conn} ORDER BY ts DESC LIMIT 50",
              (12, 22, 12, 7)),
        table("Restarts", "Roles of ccf stack that ended, were restarted or gave up (venue stack, value = restarts "
              "so far) and failed retrains of the trainer (health kinds " + ", ".join(kinds.RESTARTS) + ").",
              f"SELECT ts, venue, symbol AS role, kind, value, detail FROM health WHERE $__timeFilter(ts) AND kind IN "
              f"{kinds.sql_list(kinds.RESTARTS)} ORDER BY ts DESC LIMIT 50", (0, 29, 24, 6)),
    ]


# -------------------------------------------------------------------------------------------------- rendering
def target(flavour: str, sql: str, ref: str, fmt: str) -> dict[str, Any]:
    ds = FLAVOURS[flavour]["ds"]
    if flavour == "questdb":
        code = 1 if fmt == "table" else 0  # the plugin's Format enum: 0 time series, 1 table
        return {"refId": ref, "datasource": ds, "queryType": "sql", "rawSql": sql, "format": code,
                "selectedFormat": code}
    return {"refId": ref, "datasource": ds, "editorMode": "code", "rawQuery": True, "rawSql": sql,
            "format": "table" if fmt == "table" else "time_series"}


def variable(flavour: str, name: str, multi: bool) -> dict[str, Any]:
    sql = VARIABLES[name]
    return {"name": name, "label": name, "type": "query", "datasource": FLAVOURS[flavour]["ds"], "query": sql,
            "definition": sql, "refresh": 2, "sort": 1 if name != "horizon" else 3, "multi": multi,
            "includeAll": multi, "current": {}, "options": []}


def render(flavour: str, build: Any) -> dict[str, Any]:
    slug, title, names, panels = build()
    f = FLAVOURS[flavour]
    single = {"forecasts": {"venue", "symbol"}}.get(slug, set())
    out = []
    for i, p in enumerate(panels, 1):
        p = dict(p, id=i)
        if p["type"] != "row":
            p["datasource"] = f["ds"]
        fmt = p.pop("format", "time_series")
        if "targets" in p:
            p["targets"] = [target(flavour, sql, chr(65 + k), fmt) for k, sql in enumerate(p["targets"])]
        out.append(p)
    return {
        "uid": f"ccf-{slug}{f['suffix']}", "title": f"CCF · {title}{f['title']}", "tags": ["ccf", flavour],
        "editable": True, "schemaVersion": 39, "version": 1, "refresh": "5s", "graphTooltip": 1,
        "time": {"from": "now-15m", "to": "now"}, "timezone": "utc",
        "links": [{"type": "dashboards", "tags": ["ccf", flavour], "asDropdown": False, "title": "CCF"}],
        "templating": {"list": [variable(flavour, n, n not in single) for n in names]},
        "annotations": {"list": []}, "panels": out,
    }


BUILDS = (market, forecasts, scores, health)


def dashboards() -> dict[Path, str]:
    """Every dashboard file: path -> JSON text."""
    files = {}
    for flavour in FLAVOURS:
        for build in BUILDS:
            files[OUT / flavour / f"{build.__name__}.json"] = json.dumps(render(flavour, build), indent=2) + "\n"
    return files


def main(argv: list[str]) -> int:
    stale = [p for p, text in dashboards().items() if not p.is_file() or p.read_text() != text]
    if "--check" in argv:
        for p in stale:
            print(f"out of date: {p.relative_to(HERE)} (run python dashboards/grafana/build.py)")
        return 1 if stale else 0
    for p, text in dashboards().items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    print(f"wrote {len(dashboards())} dashboards under {OUT.relative_to(HERE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
