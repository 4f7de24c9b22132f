"""``python -m tests.faults [a b c ...]``: run fault scenarios, write ``benchmarks/results/faults.json``, print a
summary; exit 1 when a scenario breaks its criteria.

Kafka and QuestDB come from ``--run-dir`` (started there, or reused when already running; scenarios d and e stop
and start them), stopped at the end unless they were already running or ``--keep-services``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from tests.datafiles import data_file
from tests.faults.harness import CAPTURES, Stack
from tests.faults.results import RESULTS, record
from tests.faults.scenarios import SCENARIOS, Context


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", default=sorted(SCENARIOS), help=f"any of {', '.join(sorted(SCENARIOS))}")
    ap.add_argument("--run-dir", type=Path, default=None, help="services run dir (default: a new temporary one)")
    ap.add_argument("--keep-services", action="store_true", help="leave Kafka and QuestDB running")
    ap.add_argument("--speed", type=float, default=10.0, help="venue server replay speed (default 10x)")
    ap.add_argument("--seed", type=int, default=20240808)
    ap.add_argument("--work", type=Path, default=None, help="where logs and recovery dirs go")
    ap.add_argument("--keep", action="store_true", help="keep the scenario's topics and tables")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "ccf.services"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}")
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="ccf-faults-services-"))
    from ccf.services.manager import ServiceManager

    already = {v.name for v in ServiceManager(run_dir).inspect(["kafka", "questdb"]) if v.answering}
    stack = Stack.up(run_dir)
    work = args.work or Path(tempfile.mkdtemp(prefix="ccf-faults-"))
    ctx = Context(stack, work, tuple(data_file(c) for c in CAPTURES), speed=args.speed, seed=args.seed,
                  keep=args.keep)
    failed = []
    t0 = time.monotonic()
    try:
        for name in args.scenarios:
            figures = SCENARIOS[name](ctx)
            record(figures, args.out)
            print(json.dumps({"scenario": figures["scenario"], "failures": figures["failures"]}), flush=True)
            if figures["failures"]:
                failed.append(name)
    finally:
        if not args.keep_services and not already:
            stack.down()
    print(f"{len(args.scenarios)} scenario(s) in {time.monotonic() - t0:.0f} s; failed: {failed or 'none'}; "
          f"figures in {args.out}; logs in {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
