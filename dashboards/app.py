"""The CCF live app: ``panel serve dashboards/app.py`` or ``ccf app``.

Live mid price with each model's forecasts and quantile bands (forecast price = mid when issued × exp(forecast
log-return), drawn at ``target_time``), the model leaderboard (latest scores), book depth of the latest window,
pipeline health and the latest news. Data comes from :mod:`dashboards.data`: one poller per server process, shared
by every session; each session only redraws from the poller's latest snapshot.

Importing this module builds nothing: the layout is made per session by :func:`create_app`, called at the bottom
only when ``panel serve`` executes the file (its module name starts with ``bokeh_app``).
"""

from __future__ import annotations

import html
import logging
import math
import secrets
from datetime import UTC, datetime
from typing import Any

import panel as pn
from bokeh.models import ColumnDataSource, DatetimeTickFormatter, FactorRange, HoverTool
from bokeh.plotting import figure

from ccf.settings import Settings, load_settings
from dashboards.data import Row, Snapshot, shared_poller, start_polling

logger = logging.getLogger(__name__)

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


def _kpi(label: str, value: str, ident: str) -> str:
    return (f'<div class="ccf-kpi"><div class="label">{html.escape(label)}</div>'
            f'<div class="value" id="{ident}">{html.escape(value)}</div></div>')


def _table(headers: list[str], rows: list[list[str]], ident: str, marked: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(("<tr class='mark'>" if i == marked else "<tr>") + "".join(f"<td>{html.escape(c)}</td>" for c in r)
                   + "</tr>" for i, r in enumerate(rows))
    return f'<table class="ccf" id="{ident}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _html(text: str = "", **kwargs: Any) -> pn.pane.HTML:
    # Panel renders each pane in its own shadow root: page-wide CSS does not reach it, a stylesheet per pane does
    return pn.pane.HTML(text, stylesheets=[CSS], sizing_mode="stretch_width", **kwargs)


class LiveView:
    """One session's widgets and figures, redrawn from the shared poller's snapshot."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.poller = shared_poller(settings)
        self.version = -1
        self.symbol = pn.widgets.Select(name="Symbol", options=[], width=200)
        models = list(settings.forecast.models)
        # naive forecasts no change: start on a learnt model, which says more
        first = next((m for m in ("tft", "river_lr") if m in models), models[0] if models else None)
        self.model = pn.widgets.Select(name="Model", options=models, value=first, width=140)
        self.horizon = pn.widgets.Select(name="Horizon (windows)", options=list(settings.forecast.horizons), width=140)
        self.status = _html()
        self.kpis = _html()
        self.leaderboard = _html(min_height=160)
        self.health = _html(min_height=160)
        self.news = _html(min_height=80)
        self.mid_src = ColumnDataSource({"t": [], "mid": []})
        self.fc_src = ColumnDataSource({"t": [], "fc": [], "lo": [], "hi": []})
        self.depth_src = ColumnDataSource({"x": [], "depth": [], "color": []})
        self.price_fig = self._price_figure()
        self.depth_fig = figure(x_range=FactorRange(), height=300, width=420, toolbar_location=None,
                                title="Book depth of the latest window (base units)")
        self.depth_fig.vbar(x="x", top="depth", width=0.8, color="color", source=self.depth_src)
        self.depth_fig.y_range.start = 0
        self.depth_fig.xgrid.grid_line_color = None
        for w in (self.symbol, self.model, self.horizon):
            w.param.watch(lambda _e: self.refresh(force=True), "value")

    def _price_figure(self) -> Any:
        fig = figure(height=340, sizing_mode="stretch_width", x_axis_type="datetime", toolbar_location="right",
                     tools="pan,wheel_zoom,box_zoom,reset,save", title="Mid price and forecasts")
        fig.varea(x="t", y1="lo", y2="hi", source=self.fc_src, fill_alpha=0.25, fill_color="#9467bd",
                  legend_label="forecast band")
        fig.line(x="t", y="fc", source=self.fc_src, line_dash="dashed", line_color="#9467bd", legend_label="forecast")
        fig.line(x="t", y="mid", source=self.mid_src, line_width=2, line_color="#1b2330", legend_label="mid")
        fig.xaxis.formatter = DatetimeTickFormatter(seconds="%H:%M:%S", minsec="%H:%M:%S", minutes="%H:%M")
        fig.yaxis.formatter.use_scientific = False
        fig.legend.location = "bottom_right"
        fig.legend.background_fill_alpha = 0.6
        fig.add_tools(HoverTool(tooltips=[("time", "@t{%H:%M:%S}"), ("mid", "@mid{0,0.00}")],
                                formatters={"@t": "datetime"}, mode="vline"))
        return fig

    def layout(self) -> pn.viewable.Viewable:
        left = pn.Column(
            pn.Row(self.symbol, self.model, self.horizon),
            self.kpis,
            pn.pane.Bokeh(self.price_fig, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
        return pn.Column(
            _html('<h2 style="margin:0">CCF live</h2>'),
            self.status,
            pn.Row(left, pn.pane.Bokeh(self.depth_fig, width=420), sizing_mode="stretch_width"),
            pn.Row(
                pn.Column(_html('<h3 class="ccf">Model leaderboard</h3>'), self.leaderboard, width=560),
                pn.Column(_html('<h3 class="ccf">Pipeline health</h3>'), self.health, width=420),
                pn.Column(_html('<h3 class="ccf">Latest news</h3>'), self.news, min_width=300,
                          sizing_mode="stretch_width"),
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
            styles={"padding": "8px 16px"},
        )

    # -- refresh ----------------------------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        snap = self.poller.snapshot()
        if snap.version == self.version and not force:
            return
        self.version = snap.version
        if snap.keys and list(self.symbol.options) != snap.keys:
            keep = self.symbol.value if self.symbol.value in snap.keys else snap.keys[0]
            self.symbol.param.update(options=snap.keys, value=keep)
        models = sorted({m for _, m, _ in snap.predictions} | set(self.settings.forecast.models))
        if models != sorted(self.model.options):  # a model the settings do not list (the TFT sidecar) appeared
            self.model.options = models
        self.status.object = self._status_html(snap)
        key = self.symbol.value
        rows = snap.features.get(key, ()) if key else ()
        self._draw_prices(snap, key, rows)
        self._draw_depth(rows)
        self.kpis.object = self._kpis_html(rows)
        self.leaderboard.object = self._leaderboard_html(snap, key)
        self.health.object = self._health_html(snap, rows)
        self.news.object = self._news_html(snap)

    def _status_html(self, snap: Snapshot) -> str:
        where = html.escape(snap.where)
        if snap.polled_at is None and snap.error is None:
            return f'<div class="ccf-status">Waiting for the first read of {where}…</div>'
        latest = fmt_time(snap.latest_window_end())
        polled = datetime.fromtimestamp(snap.polled_at, UTC).strftime("%H:%M:%S") if snap.polled_at else "never"
        err = f' · <span class="err">{html.escape(snap.error)}</span>' if snap.error else ""
        return (f'<div class="ccf-status">{where} · latest window <b id="ccf-latest">{latest}</b> UTC · '
                f'read at {polled} UTC (poll #<span id="ccf-poll">{snap.version}</span>){err}</div>')

    def _draw_prices(self, snap: Snapshot, key: str | None, rows: tuple[Row, ...]) -> None:
        mids = [(r["window_end"], r["mid"]) for r in rows if r.get("mid") is not None]
        self.mid_src.data = {"t": [t / 1e6 for t, _ in mids], "mid": [m for _, m in mids]}
        base = dict(mids)
        preds = snap.predictions.get((key, str(self.model.value), int(self.horizon.value or 0)), ()) if key else ()
        lo_col, hi_col = self._band_columns()
        t, fc, lo, hi = [], [], [], []
        for p in preds:
            m0 = base.get(p["issued_at"])
            if m0 is None or p.get("value") is None:
                continue
            t.append(p["target_time"] / 1e6)
            fc.append(m0 * math.exp(p["value"]))
            lo.append(m0 * math.exp(p.get(lo_col) if p.get(lo_col) is not None else p["value"]))
            hi.append(m0 * math.exp(p.get(hi_col) if p.get(hi_col) is not None else p["value"]))
        self.fc_src.data = {"t": t, "fc": fc, "lo": lo, "hi": hi}
        self.price_fig.title.text = (f"Mid price of {key or '…'} and {self.model.value} forecasts "
                                     f"{self.horizon.value} windows ahead ({lo_col}–{hi_col} band)")

    def _band_columns(self) -> tuple[str, str]:
        from ccf.store.tables import quantile_column

        qs = sorted(self.settings.forecast.quantiles)
        return (quantile_column(qs[0]), quantile_column(qs[-1])) if qs else ("value", "value")

    def _draw_depth(self, rows: tuple[Row, ...]) -> None:
        last = rows[-1] if rows else {}
        levels = sorted(self.settings.features.depth_levels)
        xs, depth, color = [], [], []
        for n in levels:
            for side, col in (("bid", "#2ca02c"), ("ask", "#d62728")):
                xs.append((f"top {n}", side))
                depth.append(float(last.get(f"depth_{side}_{n}") or 0.0))
                color.append(col)
        self.depth_fig.x_range.factors = xs
        self.depth_src.data = {"x": xs, "depth": depth, "color": color}

    def _kpis_html(self, rows: tuple[Row, ...]) -> str:
        last = rows[-1] if rows else {}
        recent = rows[-10:]
        span_s = len(recent) * self.settings.features.window_s
        events = sum((r.get("book_events") or 0) + (r.get("trade_count") or 0) for r in recent)
        eps = events / span_s if span_s else None
        return '<div class="ccf-kpis">' + "".join([
            _kpi("mid", fmt_num(last.get("mid"), 2), "ccf-mid"),
            _kpi("spread (bps)", fmt_num(last.get("spread_bps"), 3), "ccf-spread"),
            _kpi("imbalance top 1", fmt_num(last.get("imbalance_1"), 3), "ccf-imbalance"),
            _kpi("events/s (10 windows)", fmt_num(eps, 1), "ccf-eps"),
            _kpi("window end (UTC)", fmt_time(last.get("window_end"))[11:], "ccf-window"),
        ]) + "</div>"

    def _leaderboard_html(self, snap: Snapshot, key: str | None) -> str:
        scores = [s for s in snap.scores if key and f"{s['venue']}:{s['symbol']}" == key]
        if not scores:
            return '<div class="ccf-empty">No scores yet: a model is scored once its first forecasts come due.</div>'
        scores.sort(key=lambda s: (s["horizon_steps"], -(s["skill"] if s["skill"] is not None else -math.inf)))
        rows = [[str(s["model"]), str(s["horizon_steps"]), str(s["n"]), fmt_num(s["mae"] * BPS, 3),
                 fmt_num(s["rmse"] * BPS, 3), fmt_num(s["hit_rate"], 2), fmt_num(s["coverage"], 2),
                 fmt_num(s["skill"], 3)] for s in scores]
        shown = next((i for i, s in enumerate(scores)  # the model and horizon on the chart
                      if s["model"] == self.model.value and s["horizon_steps"] == self.horizon.value), None)
        return _table(["model", "h", "n", "MAE bps", "RMSE bps", "hit", "coverage", "skill vs naive"], rows,
                      "ccf-leaderboard", shown)

    def _health_html(self, snap: Snapshot, rows: tuple[Row, ...]) -> str:
        windows = sum(len(v) for v in snap.features.values())
        last = rows[-1] if rows else {}
        late = sum(int(r.get("late_trades") or 0) for r in rows)
        lines = [
            ["symbols", str(len(snap.features))],
            ["windows buffered", str(windows)],
            ["book valid (latest)", "yes" if last.get("book_valid") else ("–" if not last else "no")],
            ["book epoch (resyncs)", str(last.get("epoch", "–"))],
            ["late trades (buffered windows)", str(late)],
        ]
        by_kind: dict[str, float] = {}
        for h in snap.health:
            by_kind[str(h["kind"])] = by_kind.get(str(h["kind"]), 0.0) + float(h["n"] or 0)
        lines += [[f"health: {k}", f"{v:,.0f}"] for k, v in sorted(by_kind.items())]
        if not by_kind:
            lines.append(["health events", "none recorded"])
        return _table(["metric", "value"], lines, "ccf-health")

    def _news_html(self, snap: Snapshot) -> str:
        if snap.news is None:
            return ('<div class="ccf-empty" id="ccf-news-empty">No news table in the store yet: the news poller '
                    "writes one when it runs (CCF_NEWS__ENABLED=true).</div>")
        if not snap.news:
            return '<div class="ccf-empty" id="ccf-news-empty">The news table is empty so far.</div>'
        items = []
        for n in snap.news:
            title = html.escape(str(n.get("title") or n.get("id") or "untitled"))
            link = str(n.get("link") or "")
            head = f'<a href="{html.escape(link)}" target="_blank">{title}</a>' if link.startswith("http") else title
            items.append(f"<li>{head} <span class='ccf-status'>{html.escape(str(n.get('feed') or ''))}</span></li>")
        return f'<ul id="ccf-news" style="margin:0;padding-left:18px">{"".join(items)}</ul>'


def create_app(settings: Settings | None = None) -> pn.viewable.Viewable:
    """One session's page. The poller behind it is shared by every session of this server process."""
    settings = settings or load_settings()
    pn.extension()
    view = LiveView(settings)
    start_polling(view.poller, settings.app.poll_interval_s)
    view.refresh()
    pn.state.add_periodic_callback(view.refresh, period=max(200, int(settings.app.poll_interval_s * 500)))
    return view.layout()


def serve(settings: Settings, *, show: bool = False) -> None:
    """Serve the app until interrupted (``ccf app``), with basic auth when a user and password are set."""
    app = settings.app
    kwargs: dict[str, Any] = {}
    password = app.basic_auth_password.get_secret_value() if app.basic_auth_password is not None else ""
    if password:  # an empty password (CCF_APP__BASIC_AUTH_PASSWORD=) means no login
        # {user: password} in memory (Panel's login handler accepts a dict as well as a file): no secret on disk;
        # a password alone lets any user name in
        kwargs["basic_auth"] = {app.basic_auth_user: password} if app.basic_auth_user else password
        kwargs["cookie_secret"] = secrets.token_urlsafe(32)
    anywhere = app.host in ("0.0.0.0", "::", "")
    origins = ["*"] if anywhere else [f"{app.host}:{app.port}", f"localhost:{app.port}"]
    pn.serve({"/": lambda: create_app(settings)}, port=app.port, address=app.host, show=show, title="CCF live",
             websocket_origin=origins, **kwargs)

if __name__.startswith("bokeh_app"):
    create_app().servable(title="CCF live")
