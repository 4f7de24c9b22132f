"""The CCF live app: ``panel serve dashboards/app.py`` or ``ccf app``.

Live mid price with each model's forecasts and quantile bands (forecast price = mid when issued × exp(forecast
log-return), drawn at ``target_time``), the model leaderboard (latest scores), book depth of the latest window,
pipeline health and the latest news. Data comes from :mod:`dashboards.data`: one poller per server process, shared
by every session; each session only redraws from the poller's latest snapshot (HTML in :mod:`dashboards.panels`).

``ccf app`` (:func:`serve`) refuses to serve beyond loopback without a login, or with the ``change-me``
placeholder password, and accepts websocket connections only from the configured host (see :func:`check_exposure`).

Importing this module builds nothing: the layout is made per session by :func:`create_app`, called at the bottom
only when ``panel serve`` executes the file (its module name starts with ``bokeh_app``).
"""

from __future__ import annotations

import logging
import math
import secrets
from typing import Any

import panel as pn
from bokeh.models import ColumnDataSource, DatetimeTickFormatter, FactorRange, HoverTool
from bokeh.plotting import figure

from ccf.exposure import check_exposure, websocket_origins
from ccf.settings import Settings, load_settings
from dashboards import panels
from dashboards.data import Snapshot, shared_poller, start_polling
from dashboards.readers import Row

logger = logging.getLogger(__name__)



def _html(text: str = "", **kwargs: Any) -> pn.pane.HTML:
    # Panel renders each pane in its own shadow root: page-wide CSS does not reach it, a stylesheet per pane does
    return pn.pane.HTML(text, stylesheets=[panels.CSS], sizing_mode="stretch_width", **kwargs)


class LiveView:
    """One session's widgets and figures, redrawn from the shared poller's snapshot."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.width_ns = int(settings.features.window_s * 1e9)
        self.poller = shared_poller(settings)
        self.version = -1
        self.symbol = pn.widgets.Select(label="Symbol", options=[], width=200)
        models = list(settings.forecast.models)
        # naive forecasts no change: start on a learnt model, which says more
        first = next((m for m in ("tft", "river_lr") if m in models), models[0] if models else None)
        self.model = pn.widgets.Select(label="Model", options=models, value=first, width=140)
        self.horizon = pn.widgets.Select(label="Horizon (windows)", options=list(settings.forecast.horizons), width=140)
        self.status = _html()
        self.kpis = _html()
        self.leaderboard = _html(min_height=160)
        self.health = _html(min_height=160)
        self.news = _html(min_height=80)
        self.mid_src = ColumnDataSource({"t": [], "mid": []}, name="ccf-mid-src")
        self.fc_src = ColumnDataSource({"t": [], "fc": [], "lo": [], "hi": []}, name="ccf-forecast-src")
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
        fig = figure(height=360, sizing_mode="stretch_width", x_axis_type="datetime", toolbar_location="right",
                     tools="pan,wheel_zoom,box_zoom,reset,save", title="Mid price and forecasts")
        fig.varea(x="t", y1="lo", y2="hi", source=self.fc_src, fill_alpha=0.25, fill_color="#9467bd",
                  legend_label="forecast band")
        fig.line(x="t", y="fc", source=self.fc_src, line_dash="dashed", line_color="#9467bd", legend_label="forecast")
        fig.line(x="t", y="mid", source=self.mid_src, line_width=2, line_color="#1b2330", legend_label="mid")
        fig.xaxis.formatter = DatetimeTickFormatter(seconds="%H:%M:%S", minsec="%H:%M:%S", minutes="%H:%M")
        fig.yaxis.formatter.use_scientific = False
        # below the plot, not on it: the newest data sits at the right edge and must stay visible
        legend = fig.legend[0]
        legend.orientation = "horizontal"
        legend.location = "center"
        fig.add_layout(legend, "below")
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
                pn.Column(_html('<h3 class="ccf">Model leaderboard</h3>'), self.leaderboard, width=640),
                pn.Column(_html('<h3 class="ccf">Pipeline health (all symbols, all time)</h3>'), self.health,
                          width=520),
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
        self.status.object = panels.status_html(snap)
        key = self.symbol.value
        rows = snap.features.get(key, ()) if key else ()
        self._draw_prices(snap, key, rows)
        self._draw_depth(rows)
        self.kpis.object = panels.kpis_html(rows, self.settings.features.window_s)
        self.leaderboard.object = panels.leaderboard_html(snap, key, (self.model.value, self.horizon.value))
        self.health.object = panels.health_html(snap, self.width_ns)
        self.news.object = panels.news_html(snap)

    def _draw_prices(self, snap: Snapshot, key: str | None, rows: tuple[Row, ...]) -> None:
        self.mid_src.data = panels.with_gaps(rows, "window_end", self.width_ns, {"mid": "mid"})
        base = {r["window_end"]: r["mid"] for r in rows if r.get("mid") is not None}
        preds = snap.predictions.get((key, str(self.model.value), int(self.horizon.value or 0)), ()) if key else ()
        lo_col, hi_col = self._band_columns()
        prices = []
        for p in preds:
            m0 = base.get(p["issued_at"])
            if m0 is None or p.get("value") is None:
                continue

            def price(col: str, p: Row = p, m0: float = m0) -> float:
                return m0 * math.exp(p[col] if p.get(col) is not None else p["value"])

            prices.append({"t": p["target_time"], "fc": price("value"), "lo": price(lo_col), "hi": price(hi_col)})
        self.fc_src.data = panels.with_gaps(prices, "t", self.width_ns, {"fc": "fc", "lo": "lo", "hi": "hi"})
        label = panels.model_label(snap, key, str(self.model.value)) if key else self.model.value
        self.price_fig.title.text = (f"Mid price of {key or '…'} and {label} forecasts "
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


def create_app(settings: Settings | None = None) -> pn.viewable.Viewable:
    """One session's page. The poller behind it is shared by every session of this server process."""
    settings = settings or load_settings()
    pn.extension()
    view = LiveView(settings)
    start_polling(view.poller, settings.app.poll_interval_s)
    view.refresh()
    pn.state.add_periodic_callback(view.refresh, period=max(200, int(settings.app.poll_interval_s * 500)))
    return view.layout()


# ----------------------------------------------------------------------------------------------- serving
def serve(settings: Settings, *, show: bool = False) -> None:
    """Serve the app until interrupted (``ccf app``), with basic auth when a password is set; see
    :func:`check_exposure` and :func:`websocket_origins`."""
    app = settings.app
    check_exposure(app)
    kwargs: dict[str, Any] = {}
    password = app.basic_auth_password.get_secret_value() if app.basic_auth_password is not None else ""
    if password:  # an empty password (CCF_APP__BASIC_AUTH_PASSWORD=) means no login (loopback only)
        # {user: password} in memory (Panel's login handler accepts a dict as well as a file): no secret on disk;
        # a password alone lets any user name in
        kwargs["basic_auth"] = {app.basic_auth_user: password} if app.basic_auth_user else password
        kwargs["cookie_secret"] = secrets.token_urlsafe(32)
    origins = websocket_origins(app)
    logger.info("app on http://%s:%d/ (login %s; websocket origins %s)", app.host, app.port,
                "on" if password else "off", ", ".join(origins))
    pn.serve({"/": lambda: create_app(settings)}, port=app.port, address=app.host, show=show, title="CCF live",
             websocket_origin=origins, **kwargs)


if __name__.startswith("bokeh_app"):
    create_app().servable(title="CCF live")
