"""The report of a backtest or a walk-forward: the scores per horizon in bps, figures, ``report.md`` and ``report.html``.

Rows are flat score dicts: ``model``, ``horizon`` (or ``horizon_steps``), ``n``, ``mae``, ``rmse``, ``hit_rate``,
``pinball``, ``coverage``, ``skill``, and ``symbol`` when the scores are per symbol (a plain backtest's are; a
walk-forward pools its symbols). Errors are returns, shown in basis points.

>>> rows = [{"model": "naive", "horizon_steps": 1, "n": 10, "mae": 1.2e-4, "rmse": 2e-4, "hit_rate": None,
...          "pinball": None, "coverage": None, "skill": 0.0, "symbol": "ETH-USDT"}]
>>> print(markdown_table(rows).splitlines()[2])
| ETH-USDT | 1 | naive | 10 | 1.200 | 2.000 | 0.0000 | – | – | – |
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BPS = 1e4
Row = Mapping[str, Any]


def horizon(row: Row) -> int:
    return int(row.get("horizon", row.get("horizon_steps")) or 0)


def _fmt(v: Any, scale: float = 1.0, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and v != v) or v in (float("inf"), float("-inf")):
        return "–"
    if isinstance(v, int):
        return str(v)
    return f"{v * scale:.{digits}f}"


def _cells(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    per_symbol = any("symbol" in r for r in rows)
    head = ["h", "model", "n", "MAE (bps)", "RMSE (bps)", "skill", "hit rate", "pinball (bps)", "band coverage"]
    out = []
    for r in sorted(rows, key=lambda r: (str(r.get("symbol", "")), horizon(r), str(r["model"]))):
        line = [str(horizon(r)), str(r["model"]), _fmt(r["n"]), _fmt(r["mae"], BPS), _fmt(r["rmse"], BPS),
                _fmt(r["skill"], 1, 4), _fmt(r["hit_rate"]), _fmt(r["pinball"], BPS), _fmt(r["coverage"])]
        out.append([str(r.get("symbol", "")), *line] if per_symbol else line)
    return (["symbol", *head] if per_symbol else head), out


def markdown_table(rows: Sequence[Row]) -> str:
    """The scores as a Markdown table (MAE, RMSE and pinball in bps, three decimals)."""
    head, body = _cells(rows)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def html_table(rows: Sequence[Row]) -> str:
    head, body = _cells(rows)
    th = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in body)
    return f"<table><tr>{th}</tr>{trs}</table>"


def write_report(out_dir: Path, title: str, intro: str, rows: Sequence[Row],
                 images: Sequence[tuple[str, str]] = ()) -> Path:
    """Write ``report.md`` and ``report.html`` (the table, then each ``(png name, caption)``); returns the HTML."""
    md = [f"# {title}", "", intro, "", markdown_table(rows)]
    md += [f"![{cap}]({name})\n\n*{cap}*\n" for name, cap in images]
    (out_dir / "report.md").write_text("\n".join(md), encoding="utf-8")
    figs = "".join(f'<figure><img src="{html.escape(n)}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}'
                   "</figcaption></figure>" for n, c in images)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>CCF {html.escape(title)}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>{html_table(rows)}{figs}</body></html>"
    )
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _figure(w: float = 8.0, h: float = 4.0) -> Any:
    from matplotlib.figure import Figure  # the object API: no pyplot, no global backend state

    return Figure(figsize=(w, h), dpi=90, layout="constrained")


def _by_model(rows: Sequence[Row], key: str) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for r in rows:
        v = r.get(key)
        out.setdefault(str(r["model"]), {})[horizon(r)] = float("nan") if v is None else float(v)
    return out


def skill_figure(rows: Sequence[Row], title: str = "skill vs naive per horizon") -> Any:
    """Grouped bars: ``1 - SSE/SSE(naive)`` per model and horizon (naive itself is 0 by definition)."""
    import numpy as np

    table = _by_model(rows, "skill")
    fig = _figure(7, 3.5)
    ax = fig.add_subplot()
    models = [m for m in sorted(table) if m != "naive"]
    horizons = sorted({h for m in models for h in table[m]})
    width = 0.8 / max(len(models), 1)
    for i, m in enumerate(models):
        ax.bar(np.arange(len(horizons)) + i * width, [table[m].get(h, np.nan) for h in horizons], width, label=m)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(horizons)) + width * (len(models) - 1) / 2, [f"h={h}" for h in horizons])
    ax.set_ylabel("skill (0 = naive)")
    ax.set_title(title)
    if models:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def coverage_figure(rows: Sequence[Row], target: float) -> Any:
    """Coverage of each model's outer quantile band per horizon (target: the band's nominal width)."""
    table = _by_model(rows, "coverage")
    fig = _figure(7, 3.5)
    ax = fig.add_subplot()
    for m in sorted(table):
        hs = sorted(table[m])
        ax.plot(hs, [table[m][h] for h in hs], marker="o", label=m)
    ax.axhline(target, color="black", lw=0.8, ls="--", label=f"nominal {target:g}")
    ax.set_xlabel("horizon (steps)")
    ax.set_ylabel("band coverage")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def score_figures(out_dir: Path, rows: Sequence[Row], band: float, prefix: str = "") -> list[tuple[str, str]]:
    """``skill.png`` and ``coverage.png`` of ``rows`` saved under ``out_dir``; returns their (name, caption)."""
    out = []
    name = f"{prefix}skill.png"
    skill_figure(rows, f"{prefix.rstrip('_') or 'all'}: skill vs naive per horizon").savefig(out_dir / name)
    out.append((name, f"{prefix.rstrip('_') or 'All'}: skill vs naive per horizon (1 - SSE/SSE(naive), same targets)"))
    name = f"{prefix}coverage.png"
    coverage_figure(rows, band).savefig(out_dir / name)
    out.append((name, f"{prefix.rstrip('_') or 'All'}: coverage of each model's outer quantile band per horizon"))
    return out
