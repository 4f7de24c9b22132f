"""What the app shows, as pure functions of a :class:`~dashboards.data.Snapshot`: HTML for the status line, the
KPIs, the leaderboard, pipeline health and news, and the chart's series with their gaps.

Errors are in basis points of log-return with four significant digits (an MAE of 0.5123 bps and one of 0.5131 bps
read apart); a TFT version the registry's gate refused is marked ``not promoted``. A chart line breaks (a NaN
point) wherever the store has no window, instead of joining the windows around the hole with a straight line.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from dashboards import kinds
from dashboards.data import TFT, Snapshot
from dashboards.readers import Row

BPS = 1e4
CSS = """
.ccf-kpis { display: flex; gap: 8px; flex-wrap: wrap; }
.ccf-kpi { background: #f4f6f8; border-radius: 6px; padding: 6px 10px; min-width: 96px; }
.ccf-kpi .label { font-size: 11px; color: #5a6270; text-transform: uppercase; letter-spacing: .04em; }
.ccf-kpi .value { font-size: 22px; font-weight: 600; color: #1b2330; font-variant-numeric: tabular-nums; }
.ccf-status { font-size: 13px; color: #5a6270; }
.ccf-status .err { color: #b00020; }
table.ccf { border-collapse: collapse; font-size: 12px; width: 100%; font-variant-numeric: tabular-nums; }
table.ccf th { text-align: left; border-bottom: 1px solid #ccd; padding: 2px 6px; color: #5a6270; }
table.ccf td { border-bottom: 1px solid #eef; padding: 2px 6px; }
table.ccf tr.mark td { background: #efe9f7; font-weight: 600; }
.ccf-empty { color: #5a6270; font-style: italic; font-size: 13px; }
.ccf-pos { color: #1a7f37; font-weight: 600; } .ccf-neg { color: #b00020; font-weight: 600; }
h3.ccf { margin: 4px 0; font-size: 15px; color: #1b2330; }
"""


def fmt_time(ns: int | None) -> str:
    """Event time of a row, UTC.

    >>> fmt_time(1_704_067_260_000_000_000), fmt_time(None)
    ('2024-01-01 00:01:00', '–')
    """
    if ns is None:
        return "–"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_num(v: Any, digits: int = 2) -> str:
    """``v`` with ``digits`` decimals, or an en dash when missing.

    >>> fmt_num(1234.5678), fmt_num(None), fmt_num(float("nan"))
    ('1,234.57', '–', '–')
    """
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:,.{digits}f}"


def fmt_bps(v: Any) -> str:
    """A log-return error in basis points with four significant digits (at most six decimals).

    >>> fmt_bps(0.00005123), fmt_bps(0.0012346), fmt_bps(0.0), fmt_bps(None)
    ('0.5123', '12.35', '0.0000', '–')
    """
    if v is None or not math.isfinite(v):
        return "–"
    b = float(v) * BPS
    digits = 4 if b == 0 else min(6, max(0, 3 - math.floor(math.log10(abs(b)))))
    return fmt_num(b, digits)


def with_gaps(rows: Sequence[Row], t: str, width_ns: int, values: dict[str, str]) -> dict[str, list[Any]]:
    """Columns for a chart (``t`` in ms), one NaN point wherever more than one window is missing before a row,
    and NaN for missing values, so no line crosses a gap.

    >>> rows = [{"e": 1_000_000_000, "mid": 1.0}, {"e": 2_000_000_000, "mid": None}, {"e": 5_000_000_000, "mid": 3.0}]
    >>> with_gaps(rows, "e", 1_000_000_000, {"mid": "mid"})
    {'t': [1000.0, 2000.0, 3000.0, 5000.0], 'mid': [1.0, nan, nan, 3.0]}
    """
    out: dict[str, list[Any]] = {"t": [], **{k: [] for k in values}}
    prev: int | None = None
    for r in rows:
        ts = int(r[t])
        if prev is not None and ts - prev > 1.5 * width_ns:  # a hole: one NaN point just after the last row
            out["t"].append((prev + width_ns) / 1e6)
            for k in values:
                out[k].append(math.nan)
        out["t"].append(ts / 1e6)
        for k, col in values.items():
            v = r.get(col)
            out[k].append(math.nan if v is None else float(v))
        prev = ts
    return out


def missing_windows(rows: Sequence[Row], width_ns: int) -> int:
    """Windows absent between the first and the last buffered row.

    >>> missing_windows([{"window_end": e * 10} for e in (1, 2, 5, 6)], 10)
    2
    """
    ends = [int(r["window_end"]) for r in rows]
    return sum(max(0, round((b - a) / width_ns) - 1) for a, b in itertools.pairwise(ends))


def _kpi(label: str, value: str, ident: str) -> str:
    return (f'<div class="ccf-kpi"><div class="label">{html.escape(label)}</div>'
            f'<div class="value" id="{ident}">{html.escape(value)}</div></div>')


def table(headers: list[str], rows: list[list[str]], ident: str, marked: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(("<tr class='mark'>" if i == marked else "<tr>") + "".join(f"<td>{html.escape(c)}</td>" for c in r)
                   + "</tr>" for i, r in enumerate(rows))
    return f'<table class="ccf" id="{ident}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def status_html(snap: Snapshot) -> str:
    where = html.escape(snap.where)
    if snap.polled_at is None and snap.error is None:
        return f'<div class="ccf-status">Waiting for the first read of <span id="ccf-where">{where}</span>…</div>'
    latest = fmt_time(snap.latest_window_end())
    polled = datetime.fromtimestamp(snap.polled_at, UTC).strftime("%H:%M:%S") if snap.polled_at else "never"
    err = f' · <span class="err">{html.escape(snap.error)}</span>' if snap.error else ""
    return (f'<div class="ccf-status"><span id="ccf-where">{where}</span> · latest window <b id="ccf-latest">'
            f'{latest}</b> UTC · read at {polled} UTC (poll #<span id="ccf-poll">{snap.version}</span>){err}</div>')


def kpis_html(rows: Sequence[Row], window_s: float) -> str:
    last = rows[-1] if rows else {}
    recent = rows[-10:]
    span_s = len(recent) * window_s
    events = sum((r.get("book_events") or 0) + (r.get("trade_count") or 0) for r in recent)
    eps = events / span_s if span_s else None
    return '<div class="ccf-kpis">' + "".join([
        _kpi("mid", fmt_num(last.get("mid"), 2), "ccf-mid"),
        _kpi("spread (bps)", fmt_num(last.get("spread_bps"), 3), "ccf-spread"),
        _kpi("imbalance top 1", fmt_num(last.get("imbalance_1"), 3), "ccf-imbalance"),
        _kpi("events/s (10 windows)", fmt_num(eps, 1), "ccf-eps"),
        _kpi("window end (UTC)", fmt_time(last.get("window_end"))[11:], "ccf-window"),
    ]) + "</div>"


def model_label(snap: Snapshot, key: str, model: str) -> str:
    """``model``, with its version and what the registry says of it for the TFT (``tft v3 (not promoted)``)."""
    if model != TFT:
        return model
    version = snap.model_version(key, model)
    if version is None:
        return model
    said = snap.promotion.get(version)
    return f"{model} v{version}" + (f" ({said})" if said else "")


def leaderboard_html(snap: Snapshot, key: str | None, shown: tuple[Any, Any]) -> str:
    scores = [s for s in snap.scores if key and f"{s['venue']}:{s['symbol']}" == key]
    if not key or not scores:
        return '<div class="ccf-empty">No scores yet: a model is scored once its first forecasts come due.</div>'
    scores.sort(key=lambda s: (s["horizon_steps"], -(s["skill"] if s["skill"] is not None else -math.inf)))
    rows = [[model_label(snap, key, str(s["model"])), str(s["horizon_steps"]), str(s["n"]), fmt_bps(s["mae"]),
             fmt_bps(s["rmse"]), fmt_bps(s.get("pinball")), fmt_num(s["hit_rate"], 2), fmt_num(s["coverage"], 2),
             fmt_num(s["skill"], 3)] for s in scores]
    marked = next((i for i, s in enumerate(scores) if (s["model"], s["horizon_steps"]) == shown), None)
    return table(["model", "h", "n", "MAE (bps)", "RMSE (bps)", "pinball (bps)", "hit", "coverage",
                  "skill vs naive"], rows, "ccf-leaderboard", marked)


def health_html(snap: Snapshot, width_ns: int) -> str:
    """Pipeline health: the health table's kinds by group (all symbols, all time), then the buffered windows."""
    groups: dict[str, list[Row]] = {}
    for h in snap.health:
        groups.setdefault(kinds.group_of(str(h["kind"])), []).append(h)
    lines = []
    for group in ("reconnects", "resyncs", "dead letters", "consumer lag", "restarts", "late records", "other"):
        found = groups.get(group, [])
        last = max((int(h["last_ts"] or 0) for h in found), default=None)
        if group == "consumer lag":  # a level: the newest value of each topic-partition, summed
            value = fmt_num(sum(float(h["last"] or 0) for h in found), 0) + f" messages ({len(found)} partitions)"
        else:
            by_kind: dict[str, float] = {}
            for h in found:
                by_kind[str(h["kind"])] = by_kind.get(str(h["kind"]), 0.0) + float(h["n"] or 0)
            value = fmt_num(sum(by_kind.values()), 0)
            if by_kind:
                value += " (" + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(by_kind.items())) + ")"
        if found or group not in ("restarts", "other"):
            lines.append([group, value if found else "none recorded", fmt_time(last) if found and last else "–"])
    for key, rows in sorted(snap.features.items()):
        last_row = rows[-1] if rows else {}
        valid = "valid" if last_row.get("book_valid") else "INVALID"
        lines.append([f"windows {key}", f"{len(rows)} buffered, {missing_windows(rows, width_ns)} missing; book "
                      f"{valid}, epoch {last_row.get('epoch', '–')}", fmt_time(last_row.get("window_end"))])
    return table(["what", "count", "last seen (UTC)"], lines, "ccf-health")


def news_html(snap: Snapshot) -> str:
    if snap.news is None:
        return ('<div class="ccf-empty" id="ccf-news-empty">No news table in the store yet: the news poller '
                "writes one when it runs (CCF_NEWS__ENABLED=true).</div>")
    if not snap.news:
        return '<div class="ccf-empty" id="ccf-news-empty">The news table is empty so far.</div>'
    items, scores = [], []
    for n in snap.news:
        title = html.escape(str(n.get("title") or n.get("id") or "untitled"))
        link = str(n.get("link") or "")
        head = f'<a href="{html.escape(link)}" target="_blank">{title}</a>' if link.startswith("http") else title
        s = n.get("sentiment")
        if isinstance(s, int | float) and math.isfinite(s):
            scores.append(float(s))
            badge = f"<span class='{'ccf-pos' if s > 0 else 'ccf-neg' if s < 0 else ''}'>{s:+.2f}</span> "
        else:
            badge = ""
        about = " · ".join(html.escape(str(v)) for v in (n.get("feed"), n.get("bases")) if v)
        when = fmt_time(n["fetched"])[11:] if isinstance(n.get("fetched"), int) else ""
        items.append(f"<li>{badge}{head} <span class='ccf-status'>{about} {when}</span></li>")
    mean = (f'<div class="ccf-status">mean sentiment of these {len(scores)}: <b id="ccf-news-mean">'
            f"{sum(scores) / len(scores):+.2f}</b> (−1 negative … +1 positive)</div>") if scores else ""
    return f'{mean}<ul id="ccf-news" style="margin:0;padding-left:18px">{"".join(items)}</ul>'
