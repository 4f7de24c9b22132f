"""The stack's supervisord event listener: every state change of a role becomes a line of ``stack/events.jsonl``,
and every unexpected end, restart and give-up a ``health`` record on Kafka (``<prefix>health``, so it lands in the
QuestDB ``health`` table with the venues' own entries and in Grafana's pipeline-health panels).

Events (``event`` field): ``died`` (ended while it should run: ``exit_status``, ``last_error``), ``backoff`` (ended
before it counted as started; supervisord retries it), ``fatal`` (given up after its retries), ``ended`` (exit
0, for which a role that may finish, such as ingest of a replay, is not restarted), ``running``, ``stopped``. A
health record has ``venue = "stack"``, ``symbol`` = the role, ``kind`` = ``role_died``, ``role_backoff``,
``role_fatal`` or ``role_restarted``, ``value`` = the role's restarts so far, ``detail``.

Runs as ``python -m ccf.stack.events RUN_DIR`` under supervisord (its stdout is supervisord's protocol channel:
nothing else may be written there).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from ccf.stack.supervisor import Paths

logger = logging.getLogger(__name__)

KINDS = {"PROCESS_STATE_EXITED": "died", "PROCESS_STATE_BACKOFF": "backoff", "PROCESS_STATE_FATAL": "fatal",
         "PROCESS_STATE_RUNNING": "running", "PROCESS_STATE_STOPPED": "stopped"}
_ERROR = re.compile(r"error|exception|traceback|fatal|panic|killed", re.IGNORECASE)


def last_error(log: Path, max_bytes: int = 32_768) -> str:
    """The last line of ``log`` that looks like an error (else its last line), at most 300 characters."""
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, log.stat().st_size - max_bytes))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if _ERROR.search(line):
            return line[:300]
    return lines[-1][:300] if lines else ""


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event of ``stack/events.jsonl`` (an unreadable line is skipped)."""
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def restarts(events: list[dict[str, Any]]) -> dict[str, int]:
    """Per role: how many times it ended unexpectedly (``died`` or ``backoff``) and was to be started again."""
    counts: dict[str, int] = {}
    for e in events:
        if e.get("event") in ("died", "backoff"):
            counts[e["role"]] = counts.get(e["role"], 0) + 1
    return counts


class Recorder:
    """Writes events to the log file and health records to Kafka (when the stack's Kafka is configured)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.counts = restarts(read_events(paths.events))
        self.pending_restart: set[str] = set()
        self._producer: Any = None
        self._topic = ""

    def _kafka(self) -> Any:
        if self._producer is None and os.environ.get("CCF_KAFKA__BOOTSTRAP_SERVERS"):
            from confluent_kafka import Producer

            from ccf.settings import load_settings

            settings = load_settings()
            self._topic = settings.kafka.topic_prefix + "health"
            self._producer = Producer({**settings.kafka.client_config(), "message.timeout.ms": 120_000,
                                       "client.id": "ccf-stack-events"})
        return self._producer

    def handle(self, eventname: str, payload: dict[str, str], info: dict[str, Any] | None) -> dict[str, Any] | None:
        kind = KINDS.get(eventname)
        role = payload.get("processname", "")
        if kind is None or not role or role == "ccf-events":
            return None
        if kind == "died" and payload.get("expected") == "1":
            kind = "ended"  # an exit code its policy expects (0): a finished replay; not a restart
        entry: dict[str, Any] = {"ts": time.time_ns(), "role": role, "event": kind, "pid": payload.get("pid")}
        if kind in ("died", "backoff", "fatal"):
            ended = info is not None and info.get("statename") in ("EXITED", "BACKOFF", "FATAL")
            entry["exit_status"] = info.get("exitstatus") if ended and info is not None else None
            entry["last_error"] = last_error(self.paths.log(role))
        if kind in ("died", "backoff"):
            self.counts[role] = self.counts.get(role, 0) + 1
            self.pending_restart.add(role)
        entry["restarts"] = self.counts.get(role, 0)
        self.paths.events.parent.mkdir(parents=True, exist_ok=True)
        with self.paths.events.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")
        health_kind = {"died": "role_died", "backoff": "role_backoff", "fatal": "role_fatal"}.get(kind)
        if kind == "running" and role in self.pending_restart:
            self.pending_restart.discard(role)
            health_kind = "role_restarted"
        if health_kind is not None:
            self._publish(role, health_kind, entry)
        return entry

    def _store_row(self, record: dict[str, Any]) -> None:
        """The same record as a row of the store's health table: written here too, since the features job that
        would copy it from ``ccf.health`` may be the role that died (``seq`` makes both the same row)."""
        from ccf.settings import load_settings
        from ccf.store.sinks import write_health

        row = {k: record[k] for k in ("ts", "venue", "symbol", "kind", "value", "detail")}
        write_health(load_settings(), [{**row, "detail": str(row["detail"])[:500], "seq": record["seq"]}],
                     what=f"the {record['kind']} of {record['symbol']}")

    def _publish(self, role: str, kind: str, entry: dict[str, Any]) -> None:
        from ccf.ingest.health import health

        detail = entry.get("last_error") or f"pid {entry.get('pid')}"
        record = health(kind, "stack", role, symbol=role, ts=entry["ts"], value=float(entry["restarts"]),
                        detail=detail, exit_status=entry.get("exit_status"), seq=int(entry["restarts"]))
        try:
            producer = self._kafka()
            if producer is not None:
                producer.produce(self._topic, json.dumps(record).encode(), key=f"stack:{role}".encode())
                producer.poll(0)
        except Exception as exc:  # a health record must never stop the listener (Kafka may be the role that died)
            print(f"health record for {role} not sent to Kafka: {exc}", file=sys.stderr, flush=True)
        if os.environ.get("CCF_QUESTDB__HTTP_URL"):
            self._store_row(record)


def main(argv: list[str] | None = None) -> None:
    from supervisor import childutils

    args = sys.argv[1:] if argv is None else argv
    paths = Paths(Path(args[0]))
    recorder = Recorder(paths)
    rpc = childutils.getRPCInterface(os.environ)
    while True:
        headers, body = childutils.listener.wait(sys.stdin, sys.stdout)
        try:
            payload = childutils.get_headers(body.split("\n", 1)[0])
            info = None
            if headers["eventname"] in ("PROCESS_STATE_EXITED", "PROCESS_STATE_BACKOFF", "PROCESS_STATE_FATAL"):
                try:
                    info = rpc.supervisor.getProcessInfo(payload.get("processname", ""))
                except Exception as exc:  # supervisord is shutting down
                    print(f"process info: {exc}", file=sys.stderr, flush=True)
            recorder.handle(headers["eventname"], payload, info)
            if recorder._producer is not None:
                recorder._producer.poll(0)
        except Exception as exc:  # never leave supervisord waiting on this listener
            print(f"event not recorded: {exc}", file=sys.stderr, flush=True)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
