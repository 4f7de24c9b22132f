"""Scores once warmed up: the one scorer over the predictions issued from a symbol's ``skip``-th window on.

Online models are scored from their first forecast by the flow and ``ccf backtest`` (warm-up included). To ask
whether a calibrated band covers what it says *once warmed up*, score again, leaving out what was issued during
the first ``skip`` windows of each symbol: same :class:`~ccf.forecast.scoring.Scorer`, same targets otherwise.

``python -m ccf.forecast.warm OUT_DIR [--skip N]`` reads a backtest's ``features.parquet`` and
``predictions.parquet`` and prints a table (bps; skill, coverage and pinball per model and horizon).

>>> from ccf.schemas import FeatureRow, Prediction
>>> rows = [FeatureRow("v", "A-B", i - 1, i, "x", True, 0, {"mid": 100.0 + i}) for i in range(1, 5)]
>>> preds = [Prediction("m", "1", "v", "A-B", 1, 1.0, i, i + 1, 0.0, {"0.1": -1.0, "0.9": 1.0}) for i in range(1, 4)]
>>> [(s.model, s.n, s.coverage) for s in warm_scores(rows, preds, skip=1)]
[('m', 2, 1.0)]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from ccf.forecast.scoring import Scorer
from ccf.schemas import FeatureRow, Prediction, Score, feature


def warm_scores(rows: Iterable[FeatureRow], predictions: Iterable[Prediction], skip: int) -> list[Score]:
    """Scores of ``predictions`` issued from each symbol's ``skip``-th row of ``rows`` on."""
    scorers: dict[tuple[str, str], Scorer] = {}
    start: dict[tuple[str, str], int] = {}
    seen: dict[tuple[str, str], int] = {}
    last = 0
    for r in rows:
        key = (r.venue, r.symbol)
        sc = scorers.get(key)
        if sc is None:
            sc = scorers[key] = Scorer(r.venue, r.symbol, keep=1 << 62)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == skip + 1:
            start[key] = r.window_end
        sc.observe_mid(r.window_end, feature(r, "mid") if r.book_valid else math.nan)
        last = max(last, r.window_end)
    for p in predictions:
        key = (p.venue, p.symbol)
        if key in start and p.issued_at >= start[key]:
            scorers[key].add_prediction(p)
    return [s for sc in scorers.values() for s in sc.scores(last)]


def read_backtest(out_dir: Path, quantiles: Sequence[float] = (0.1, 0.5, 0.9)) -> tuple[list[FeatureRow],
                                                                                           list[Prediction]]:
    """Feature rows (mid and book state only) and predictions from a backtest's parquet files."""
    import pyarrow.parquet as pq

    from ccf.store.tables import quantile_column

    f = pq.read_table(out_dir / "features.parquet", columns=["venue", "symbol", "window_start", "window_end",
                                                              "book_valid", "mid"]).to_pylist()
    rows = [FeatureRow(d["venue"], d["symbol"], d["window_start"], d["window_end"], "", bool(d["book_valid"]), 0,
                       {"mid": d["mid"]}) for d in f]
    cols = {str(q): quantile_column(q) for q in quantiles}
    preds = [
        Prediction(d["model"], d["model_version"], d["venue"], d["symbol"], d["horizon_steps"], d["horizon_s"],
                   d["issued_at"], d["target_time"], d["value"],
                   {k: d[c] for k, c in cols.items() if d.get(c) is not None})
        for d in pq.read_table(out_dir / "predictions.parquet").to_pylist()
    ]
    rows.sort(key=lambda r: (r.venue, r.symbol, r.window_end))
    return rows, preds


def table(scores: Sequence[Score]) -> str:
    """A markdown table of ``scores`` (MAE, RMSE and pinball in bps)."""
    def num(v: float | None, fmt: str, k: float = 1.0) -> str:
        return "–" if v is None else format(v * k, fmt)

    lines = ["| symbol | model | h | n | RMSE (bps) | skill | pinball (bps) | 10–90 % coverage |",
             "|---|---|---|---|---|---|---|---|"]
    for s in sorted(scores, key=lambda s: (s.symbol, s.model, s.horizon_steps)):
        lines.append(f"| {s.symbol} | {s.model} | {s.horizon_steps} | {s.n} | {num(s.rmse, '.3f', 1e4)} | "
                     f"{num(s.skill, '+.4f')} | {num(s.pinball, '.3f', 1e4)} | {num(s.coverage, '.3f')} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ccf.forecast.warm", description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path, help="a ccf backtest output directory")
    ap.add_argument("--skip", type=int, default=150, help="windows of each symbol left out at the start")
    args = ap.parse_args(argv)
    rows, preds = read_backtest(args.out_dir)
    sys.stdout.write(table(warm_scores(rows, preds, args.skip)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
