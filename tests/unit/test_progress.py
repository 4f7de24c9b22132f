"""Progress bars: drawn on stderr with a terminal, silent without one (commands then print their summary line)."""

from __future__ import annotations

import pytest

from ccf.progress import interactive, progress


def test_a_bar_shows_the_count_and_a_silent_one_only_counts(capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with progress("backtest", unit="records", enabled=True) as bar:
        bar.advance(12_000)
        bar.advance(3_000)
    err = capsys.readouterr().err
    assert "backtest" in err and "15,000 records" in err
    with progress("walk-forward", total=4, unit="stages", enabled=True) as bar:
        bar.advance(4)
    assert "4/4 stages" in capsys.readouterr().err
    assert not interactive()  # pytest's stderr is no terminal
    with progress("quiet") as bar:
        bar.advance(7)
    assert bar.done == 7 and capsys.readouterr().err == ""
    monkeypatch.setenv("CCF_PROGRESS", "0")
    assert not interactive()
