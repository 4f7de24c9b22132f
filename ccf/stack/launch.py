"""Start one role of the stack: ``python -m ccf.stack.launch SPEC`` waits out the role's restart backoff, then
execs its command (same pid, so supervisord's signals reach the role itself).

The backoff counts the role's unexpected ends in the last :data:`WINDOW_S` seconds from the stack's event log
(:mod:`ccf.stack.events`): a role that keeps dying after it has started is restarted ever more slowly (supervisord
itself only backs off a role that fails *before* ``startsecs``).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

from ccf.backoff import backoff_delay
from ccf.stack.supervisor import Spec

WINDOW_S = 300.0


def recent_deaths(events: Path, role: str, now_ns: int, window_s: float = WINDOW_S) -> int:
    """Unexpected exits of ``role`` recorded in ``events`` in the last ``window_s`` seconds."""
    try:
        lines = events.read_text().splitlines()[-2000:]
    except OSError:
        return 0
    since = now_ns - int(window_s * 1e9)
    count = 0
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("role") == role and e.get("event") == "died" and int(e.get("ts", 0)) >= since:
            count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ccf.stack.launch SPEC.json", file=sys.stderr)
        raise SystemExit(2)
    spec = Spec.read(Path(args[0]))
    deaths = recent_deaths(Path(spec.events), spec.name, time.time_ns())
    delay = backoff_delay(deaths, spec.base_s, spec.max_s, random.Random()) if deaths else 0.0
    if delay > 0:
        print(f"[ccf stack] {spec.name} died {deaths} times in {WINDOW_S:.0f} s: starting it in {delay:.0f} s",
              file=sys.stderr, flush=True)
        time.sleep(delay)
    os.chdir(spec.cwd)
    os.execvpe(spec.argv[0], spec.argv, spec.env)


if __name__ == "__main__":
    main()
