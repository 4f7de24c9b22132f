"""``benchmarks/results/faults.json``: the figures of every scenario, merged by scenario name, with the run's context."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.faults.harness import ROOT

RESULTS = ROOT / "benchmarks" / "results" / "faults.json"


def record(figures: dict[str, Any], path: Path = RESULTS) -> None:
    """Put one scenario's figures into ``path`` (other scenarios' figures stay)."""
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}
    scenarios = data.get("scenarios", {})
    figures = {**figures, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": _commit()}
    scenarios[figures["scenario"]] = figures
    data = {
        "about": "tests/faults: the processes users run (venue server replaying a real capture, flows.ingest, Kafka, "
                 "flows.features, QuestDB) under faults, compared row for row with ccf backtest; "
                 "`python -m tests.faults` or `make faults`",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "summary": {name: _summary(f) for name, f in sorted(scenarios.items())},
        "scenarios": dict(sorted(scenarios.items())),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


def _summary(f: dict[str, Any]) -> dict[str, Any]:
    keys = ("faults_injected", "rows_compared", "missing", "extra", "duplicated", "differing",
            "differing_book_invalid", "differing_outage_book_valid", "history_after_outage", "downstream_of_outage",
            "recovery_s_max", "wall_s")
    out = {k: f.get(k) for k in keys if k in f}
    outs = f.get("kafka", {}).get("outputs")
    if outs:  # what a read_committed consumer of ccf.features/predictions/scores got
        out["kafka_outputs"] = {t: {"messages": o["messages"], "duplicated": o["duplicated"]} for t, o in outs.items()}
    out["passed"] = not f.get("failures")
    if f.get("failures"):
        out["failures"] = f["failures"]
    return out


def _commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return rev + ("+dirty" if dirty else "")
