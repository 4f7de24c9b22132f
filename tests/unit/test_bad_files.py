"""Files that cannot be read, or only in part: one line naming the file (exit 2), or what was readable plus a
dead letter saying where the file broke; never a traceback, never a silent loss."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccf.capture.readers import read_records
from ccf.errors import DataFileError, ParseError
from tests.datafiles import data_file

CAPTURE = "hftbacktest_binance_raw_ws/spot_ethusdt_20240808.gz"


def _ccf(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    return subprocess.run([sys.executable, "-m", "ccf.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.mark.parametrize(("content", "says"), [(b"", "empty file"), (os.urandom(300) + b"\xff\xfe", "binary or corrupt"),
                                               (b"hello\nworld\n", "unknown capture format")])
def test_unreadable_file_is_one_line_exit_2(tmp_path: Path, content: bytes, says: str) -> None:
    bad = tmp_path / "bad.gz"
    bad.write_bytes(content)
    with pytest.raises(DataFileError, match=says):
        list(read_records([bad]))
    for cmd in (["book-replay", str(bad), "-o", str(tmp_path / "o.csv")],
                ["backtest", "-i", str(bad), "-o", str(tmp_path / "out")]):
        out = _ccf(*cmd)
        assert out.returncode == 2, out.stderr[-2000:]
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("ccf: error: ") and str(bad) in last and says in last
        assert "Traceback" not in out.stderr


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="no such file"):
        list(read_records([tmp_path / "nope.gz"]))


def test_truncated_gzip_keeps_what_it_read_and_says_where_it_broke(tmp_path: Path) -> None:
    whole = data_file(CAPTURE).read_bytes()
    cut = tmp_path / "cut.gz"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    full = list(read_records([data_file(CAPTURE)]))
    part = list(read_records([cut]))
    errors = [i for i in part if isinstance(i, ParseError)]
    assert len(errors) == 1 and "unreadable after" in errors[0].reason
    records = [i for i in part if not isinstance(i, ParseError)]
    assert 0 < len(records) < len(full)
    assert records == full[: len(records)]  # what was readable is exactly the start of the capture


def test_a_bad_byte_costs_one_line_not_the_file(tmp_path: Path) -> None:
    with gzip.open(data_file(CAPTURE), "rb") as f:
        lines = f.read().splitlines(keepends=True)[:2000]
    broken = list(lines)
    broken[1000] = broken[1000][:40] + b"\xff\xfe" + broken[1000][40:]
    path = tmp_path / "bad_byte.gz"
    path.write_bytes(gzip.compress(b"".join(broken)))
    good = tmp_path / "good.gz"
    good.write_bytes(gzip.compress(b"".join(lines)))
    got, want = list(read_records([path])), list(read_records([good]))
    errors = [i for i in got if isinstance(i, ParseError)]
    assert len(errors) == 1
    assert len(got) == len(want)  # the bad line became one dead letter in place of its record


@pytest.mark.parametrize(("args", "says"), [
    (["backtest", "nope.gz", "-o", "out"], "Invalid value for 'files': file 'nope.gz' does not exist."),
    (["backtest", CAPTURE, "--models", "nope", "-o", "out"], "unknown model(s) ['nope']"),
    (["backtest", CAPTURE, "--format", "nope", "-o", "out"], "'nope' is not one of auto, "),
    (["demo", "--port", "99999"], "Invalid value for '--port'"),
    (["nope"], "No such command 'nope'."),
])
def test_a_bad_option_or_argument_is_one_line_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    args = [str(data_file(a)) if a == CAPTURE else str(tmp_path / a) if a in ("out", "nope.gz") else a
            for a in args]
    out = _ccf(*args)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "╭" not in out.stderr, out.stderr[-2000:]
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("ccf: error: ") and says.replace("nope.gz", str(tmp_path / "nope.gz")) in line
    assert line.endswith("--help)")


@pytest.mark.parametrize(("env", "says"), [
    ({"CCF_STORE__PATH": "/proc/nope/store.duckdb"}, "CCF_STORE__PATH=/proc/nope/store.duckdb: cannot make its folder"),
    ({"CCF_VENUES__SOURCE": "replay", "CCF_VENUES__REPLAY_FILES": '["/nonexistent/cap.gz"]'},
     "/nonexistent/cap.gz: no such file"),
    ({"CCF_FEATURES__WINDOW_S": "abc"}, "CCF_FEATURES__WINDOW_S"),
])
def test_the_main_job_refuses_bad_settings_and_files_in_one_line(tmp_path: Path, env: dict[str, str],
                                                                  says: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    out = subprocess.run([sys.executable, "-m", "bytewax.run", "flows.features"], capture_output=True, text=True,
                         env={**base, "CCF_RUN_DIR": str(tmp_path), "CCF_STOP_AFTER": "1", **env}, timeout=120,
                         check=False, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ccf: error: ") and says in last


def test_a_capture_without_a_snapshot_says_so(tmp_path: Path) -> None:
    with gzip.open(data_file(CAPTURE), "rt") as f:
        depth = [line for line in f if "@depth" in line][:3000]  # diffs only: no book ever starts
    path = tmp_path / "depth_only.gz"
    path.write_bytes(gzip.compress("".join(depth).encode()))
    out = _ccf("backtest", str(path), "-o", str(tmp_path / "out"))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"ccf: error: {path}: 303 windows, none with a valid book from 3000 items: the capture has no book "
        "snapshot, so no book ever starts (3000 BookDelta)")
