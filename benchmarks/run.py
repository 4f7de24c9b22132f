"""Run every ``benchmarks/bench_*.py`` and write each one's results to ``benchmarks/results/<name>.json``.

``python -m benchmarks.run [NAME ...]`` (``make bench``). Each module exposes ``run() -> dict``.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    wanted = set(argv if argv is not None else sys.argv[1:])
    out_dir = HERE / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if wanted and name not in wanted:
            continue
        module = importlib.import_module(f"benchmarks.{path.stem}")
        t0 = time.perf_counter()
        results = module.run()
        results["_meta"] = {"seconds": round(time.perf_counter() - t0, 2), "unix_time": int(time.time())}
        (out_dir / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"{name}: written to {out_dir / (name + '.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
