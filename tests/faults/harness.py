"""The pipeline as users run it, as subprocesses: the local venue server replaying a real capture, ``python -m
bytewax.run flows.ingest`` (default channels), Kafka, ``python -m bytewax.run flows.features -r DIR`` and QuestDB.

:class:`Pipeline` owns one scenario's processes, its uuid topic and table prefixes and a :class:`Monitor` thread
that samples progress (rows in QuestDB, newest event time on Kafka) and restarts a flow that died by itself, as a
``restart: unless-stopped`` deployment would (every such exit is recorded). :class:`Stack` stops and starts one
service of a run dir on the same ports, with its data (``ccf services down/up --only NAME``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = (
    "hftbacktest_binance_raw_ws/spot_ethusdt_20240808.gz",
    "hftbacktest_binance_raw_ws/spot_ethusdt_20240809.gz",
)
RAW_TOPICS = ("book", "trades", "klines", "news", "dlq", "health")
TABLES = ("features", "predictions", "scores", "health")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    """The environment of a process users start: ours without any ``CCF_*`` variable, the repo on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---- services -------------------------------------------------------------------------------------------------------


@dataclass
class Stack:
    """Kafka and QuestDB: their ``CCF_*`` variables, and the run dir that started them when faults may stop them."""

    env: dict[str, str]
    run_dir: Path | None = None

    @property
    def bootstrap(self) -> str:
        return self.env["CCF_KAFKA__BOOTSTRAP_SERVERS"]

    @property
    def http_url(self) -> str:
        return self.env["CCF_QUESTDB__HTTP_URL"].rstrip("/")

    @classmethod
    def up(cls, run_dir: Path) -> Stack:
        """Start (or reuse) Kafka and QuestDB in ``run_dir``."""
        from ccf.services.manager import ServiceManager
        from ccf.services.state import env_vars

        payload = ServiceManager(run_dir).up(["kafka", "questdb"])
        return cls(env=env_vars(payload), run_dir=run_dir)

    def down(self) -> None:
        from ccf.services.manager import ServiceManager

        if self.run_dir is not None:
            ServiceManager(self.run_dir).down(["kafka", "questdb"])

    def stop(self, name: str) -> float:
        """``ccf services down --only NAME``; returns the wall time it was gone."""
        from ccf.services.manager import ServiceManager

        if self.run_dir is None:
            raise RuntimeError(f"cannot stop {name}: these services were not started by the fault suite")
        ServiceManager(self.run_dir).down([name])
        return time.monotonic()

    def start(self, name: str) -> float:
        """``ccf services up --only NAME`` on the same ports, with the same data; returns when it answers."""
        from ccf.services.manager import ServiceManager
        from ccf.services.state import env_vars

        assert self.run_dir is not None
        payload = ServiceManager(self.run_dir).up([name])
        now = env_vars(payload)
        moved = {k: (self.env.get(k), v) for k, v in now.items() if self.env.get(k) != v}
        if moved:
            raise RuntimeError(f"{name} came back on other ports: {moved}")
        return time.monotonic()


def qdb(http_url: str, sql: str, timeout: float = 30.0) -> dict[str, Any]:
    """One statement on QuestDB's ``/exec`` (as :func:`ccf.store.questdb_store.http_sql`)."""
    from ccf.store.questdb_store import http_sql

    return http_sql(http_url, sql, timeout=timeout)


# ---- processes ------------------------------------------------------------------------------------------------------


class Proc:
    """One process users run: its command line and environment, its log, its lifecycle."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], work: Path) -> None:
        self.name, self.cmd, self.env, self.work = name, cmd, env, work
        self.log_path = work / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.expected_exit = False  # set when the harness ends it, or lets it end (ingest at the end of data)

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"\n==== start {self.starts + 1}: {' '.join(self.cmd)}\n".encode())
            self.popen = subprocess.Popen(self.cmd, env=self.env, cwd=self.work, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        self.starts += 1
        self.expected_exit = False
        logger.info("%s started (pid %d)", self.name, self.popen.pid)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process (only ours, by pid) and wait for it."""
        self.expected_exit = True
        if self.alive:
            assert self.popen is not None
            os.kill(self.popen.pid, sig)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# ---- progress samples -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    t: float
    rows: dict[str, int] | None
    """QuestDB row counts by table (None while it does not answer)."""
    max_window_end: int | None
    """Newest ``window_end`` in the features table (ns)."""
    kafka_ts: int | None
    """Newest venue event time on the trades topic (ns), None while Kafka does not answer."""
    kafka_end: int | None
    """End offset of the trades topic."""


@dataclass
class Exit:
    proc: str
    t: float
    returncode: int | None
    tail: str


class _KafkaProbe:
    """The newest trade on a topic: its end offset and venue time."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False, "log_level": 0, "socket.timeout.ms": 2000})

    def read(self) -> tuple[int | None, int | None]:
        from confluent_kafka import KafkaException, TopicPartition

        from ccf.schemas import decode

        try:
            _lo, hi = self.consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=1.5, cached=False)
        except KafkaException:
            return None, None
        if hi <= 0:
            return 0, None
        self.consumer.assign([TopicPartition(self.topic, 0, hi - 1)])
        m = self.consumer.poll(1.5)
        if m is None or m.error() is not None:
            return hi, None
        return hi, int(decode(m.value()).ts_event)  # type: ignore[union-attr,arg-type]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.consumer.close()


class Monitor(threading.Thread):
    """Samples progress every ``interval`` seconds and restarts a flow that exited on its own (recorded)."""

    def __init__(self, pipeline: Pipeline, interval: float = 0.5) -> None:
        super().__init__(name="faults-monitor", daemon=True)
        self.p = pipeline
        self.interval = interval
        self.samples: list[Sample] = []
        self.exits: list[Exit] = []
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        probe = _KafkaProbe(self.p.stack.bootstrap, self.p.topic("trades"))
        try:
            while not self.halt.is_set():
                self._supervise()
                self.samples.append(self._sample(probe))
                self.halt.wait(self.interval)
        finally:
            probe.close()

    def _supervise(self) -> None:
        with self.lock:
            for proc in (self.p.features, self.p.ingest):
                if proc.popen is None or proc.alive or proc.expected_exit:
                    continue
                if proc is self.p.ingest and proc.returncode == 0:
                    proc.expected_exit = True  # the feed ended: the ingest job is done
                    continue
                self.exits.append(Exit(proc.name, time.monotonic(), proc.returncode, proc.tail(30)))
                logger.warning("%s exited by itself (rc %s); restarting it", proc.name, proc.returncode)
                self.p.restart(proc)

    def _sample(self, probe: _KafkaProbe) -> Sample:
        rows: dict[str, int] | None = None
        max_we: int | None = None
        try:
            rows = {}
            for t in ("features", "predictions", "scores"):
                body = qdb(self.p.stack.http_url, f'select count(), max(window_end) from "{self.p.table(t)}"'
                           if t == "features" else f'select count() from "{self.p.table(t)}"', timeout=3)
                rows[t] = int(body["dataset"][0][0])
                if t == "features" and body["dataset"][0][1]:
                    max_we = iso_ns(body["dataset"][0][1])
        except Exception:  # a table not created yet, or QuestDB away: no figure this time
            rows = rows if rows else None
        end, ts = probe.read()
        return Sample(time.monotonic(), rows, max_we, ts, end)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def iso_ns(text: str) -> int:
    """QuestDB's ``2024-08-08T23:54:15.123456Z`` as int ns."""
    from datetime import datetime

    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (int(dt.timestamp()) * 1_000_000 + dt.microsecond) * 1000


# ---- one scenario's pipeline ----------------------------------------------------------------------------------------


@dataclass
class Pipeline:
    """The processes of one scenario. ``start`` brings them up; ``drain`` waits for the end of the feed."""

    stack: Stack
    work: Path
    captures: tuple[Path, ...]
    speed: float = 10.0
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    recovery: bool = True

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.kafka_prefix = f"f{self.tag}."
        self.table_prefix = f"f{self.tag}_"
        self.recovery_dir = self.work / "recovery"
        py = sys.executable
        files = [a for f in self.captures for a in ("--file", str(f))]
        ccf = [str(Path(py).with_name("ccf"))] if Path(py).with_name("ccf").is_file() else [py, "-m", "ccf.cli"]
        self.venue = Proc("venue-server", [*ccf, "venue-server", "serve", "--mode", "replay", *files,
                                           "--speed", str(self.speed), "--port", str(self.port)],
                          base_env(), self.work)
        ingest_env = {**base_env(), **{k: v for k, v in self.stack.env.items() if k.startswith("CCF_KAFKA__")},
                      "CCF_VENUES__SOURCE": "binance", "CCF_VENUES__SYMBOLS": '["ETH-USDT"]',
                      "CCF_VENUES__WS_URL": self.ws_url, "CCF_VENUES__REST_URL": self.rest_url,
                      "CCF_KAFKA__TOPIC_PREFIX": self.kafka_prefix}
        self.ingest = Proc("ingest", [py, "-m", "bytewax.run", "flows.ingest"], ingest_env, self.work)
        features_env = {**base_env(), **self.stack.env, "CCF_KAFKA__TOPIC_PREFIX": self.kafka_prefix,
                        "CCF_QUESTDB__TABLE_PREFIX": self.table_prefix}
        self.features = Proc("features", self.features_cmd(self.recovery), features_env, self.work)
        self.monitor = Monitor(self)
        self.t_start = 0.0
        self.events: list[dict[str, Any]] = []

    # names
    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def topic(self, name: str) -> str:
        return self.kafka_prefix + name

    def table(self, name: str) -> str:
        return self.table_prefix + name

    def features_cmd(self, recovery: bool) -> list[str]:
        cmd = [sys.executable, "-m", "bytewax.run", "flows.features"]
        return [*cmd, "-r", str(self.recovery_dir), "-s", "1", "-b", "0"] if recovery else cmd

    def note(self, what: str, **extra: Any) -> None:
        """A timeline entry (seconds since start)."""
        entry = {"t": round(time.monotonic() - self.t_start, 2), "what": what, **extra}
        self.events.append(entry)
        logger.info("[%s] %s", self.tag, entry)

    # lifecycle
    def start(self) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.stack.bootstrap})
        for f in admin.create_topics([NewTopic(self.topic(t), 1, 1) for t in RAW_TOPICS]).values():
            f.result(30)
        self.init_recovery()
        self.t_start = time.monotonic()
        self.venue.start()
        deadline = time.monotonic() + 60
        while not _answers(self.rest_url + "/api/v3/ping"):
            if not self.venue.alive or time.monotonic() > deadline:
                raise RuntimeError(f"venue server did not start:\n{self.venue.tail()}")
            time.sleep(0.2)
        self.note("venue server up")
        self.features.start()
        self.ingest.start()
        self.note("flows started")
        self.monitor.start()

    def init_recovery(self) -> None:
        import shutil

        shutil.rmtree(self.recovery_dir, ignore_errors=True)
        self.recovery_dir.mkdir(parents=True)
        subprocess.run([sys.executable, "-m", "bytewax.recovery", str(self.recovery_dir), "1"], check=True,
                       timeout=60, capture_output=True)

    def restart(self, proc: Proc, cmd: list[str] | None = None) -> float:
        """Start ``proc`` again (with ``cmd`` when given); returns the time it was started."""
        if cmd is not None:
            proc.cmd = cmd
        proc.start()
        return time.monotonic()

    def sigkill(self, proc: Proc) -> float:
        with self.monitor.lock:
            proc.kill(signal.SIGKILL)
        return time.monotonic()

    def post_faults(self, faults: list[Any]) -> dict[str, Any]:
        resp = httpx.post(self.rest_url + "/control/faults", json={"faults": faults}, timeout=5)
        resp.raise_for_status()
        out: dict[str, Any] = resp.json()
        return out

    def venue_stats(self) -> dict[str, Any]:
        resp = httpx.get(self.rest_url + "/control/stats", timeout=5)
        resp.raise_for_status()
        out: dict[str, Any] = resp.json()
        return out

    def wait_until(self, pred: Callable[[], bool], timeout: float, what: str) -> float:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise TimeoutError(f"[{self.tag}] {what} not within {timeout:.0f} s")
            time.sleep(0.2)
        return time.monotonic()

    def sent(self) -> int:
        try:
            return int(self.venue_stats().get("messages_sent", 0))
        except httpx.HTTPError:
            return -1

    def wait_fraction(self, fraction: float, total_messages: int, timeout: float = 300) -> float:
        """Wait until the venue server has sent ``fraction`` of the capture's streamed messages."""
        return self.wait_until(lambda: self.sent() >= fraction * total_messages, timeout, f"{fraction:.0%} sent")

    def drain(self, timeout: float = 240.0, stable_s: float = 6.0) -> float:
        """Wait until the feed ended, the ingest job finished, and QuestDB's row counts stopped moving."""
        self.wait_until(lambda: self.ingest.expected_exit and not self.ingest.alive, timeout, "ingest finished")
        self.note("ingest finished", rc=self.ingest.returncode)
        deadline = time.monotonic() + timeout
        last: tuple[Any, ...] | None = None
        since = time.monotonic()
        while time.monotonic() < deadline:
            s = self.monitor.samples[-1] if self.monitor.samples else None
            key = (s.rows, s.max_window_end) if s is not None else None
            if key != last or s is None or s.rows is None:
                last, since = key, time.monotonic()
            elif time.monotonic() - since >= stable_s:
                self.note("drained", rows=s.rows)
                return time.monotonic()
            time.sleep(0.5)
        raise TimeoutError(f"[{self.tag}] QuestDB rows still moving after {timeout:.0f} s")

    def close(self, keep: bool = False) -> None:
        """Stop every process; drop the topics and tables unless ``keep``."""
        self.monitor.stop()
        for proc in (self.ingest, self.features, self.venue):
            proc.kill(signal.SIGKILL if proc is not self.venue else signal.SIGTERM)
        if keep:
            return
        from confluent_kafka.admin import AdminClient

        names = [self.topic(t) for t in (*RAW_TOPICS, "features", "predictions", "scores")]
        with contextlib.suppress(Exception):
            AdminClient({"bootstrap.servers": self.stack.bootstrap}).delete_topics(names, operation_timeout=30)
        for t in TABLES:
            with contextlib.suppress(Exception):
                qdb(self.stack.http_url, f'DROP TABLE IF EXISTS "{self.table(t)}"')

    def describe(self) -> dict[str, Any]:
        return {"tag": self.tag, "speed": self.speed, "kafka_prefix": self.kafka_prefix,
                "table_prefix": self.table_prefix, "work": str(self.work),
                "commands": {p.name: " ".join(p.cmd) for p in (self.venue, self.ingest, self.features)},
                "env": {p.name: {k: v for k, v in p.env.items() if k.startswith("CCF_")}
                        for p in (self.ingest, self.features)}}


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
