"""QuestDB 9 run from its Maven Central jar (``io.questdb.ServerMain -d <root>``), which carries the Linux native libs.

``<root>/conf/server.conf`` binds HTTP (SQL over ``/exec`` and ILP over HTTP) and PG wire to loopback, turns off
ILP/TCP, UDP, the health ("min") server and telemetry, and keeps worker pools small. QuestDB logs to stdout, which
lands in ``questdb.out``.
"""

from __future__ import annotations

import logging
import platform
import sys
import zipfile
from pathlib import Path

from ccf.errors import ServiceError
from ccf.services.base import Launch
from ccf.services.maven import Coordinate, find_java, resolve
from ccf.services.process import LOOPBACK, port_open

logger = logging.getLogger(__name__)

QUESTDB_VERSION = "9.3.4"
COORDINATES = (Coordinate("org.questdb", "questdb", QUESTDB_VERSION),)
JVM_OPTS = (
    "-Xms64m",
    "-Xmx512m",
    "-XX:+UseParallelGC",
    "-Djava.awt.headless=true",
    # QuestDB reads JDK internals for fast float parsing; on the class path it needs this export.
    "--add-exports",
    "java.base/jdk.internal.math=ALL-UNNAMED",
)


def render_server_conf(http_port: int, pg_port: int, workers: int = 1) -> str:
    """``server.conf`` for a small loopback-only QuestDB.

    >>> conf = render_server_conf(9000, 8812)
    >>> "http.bind.to=127.0.0.1:9000" in conf, "pg.net.bind.to=127.0.0.1:8812" in conf, "telemetry.enabled=false" in conf
    (True, True, True)
    """
    lines = [
        "# written by `ccf services up`",
        f"http.bind.to={LOOPBACK}:{http_port}",
        f"pg.net.bind.to={LOOPBACK}:{pg_port}",
        "line.tcp.enabled=false",
        "line.udp.enabled=false",
        "http.min.enabled=false",
        "telemetry.enabled=false",
        f"shared.network.worker.count={workers}",
        f"shared.query.worker.count={workers}",
        f"shared.write.worker.count={workers}",
        f"wal.apply.worker.count={workers}",
        f"mat.view.refresh.worker.count={workers}",
    ]
    return "\n".join(lines) + "\n"


def jar_version(jar: Path) -> str:
    """``Implementation-Version`` from a jar's manifest ('' when absent)."""
    with zipfile.ZipFile(jar) as zf:
        try:
            manifest = zf.read("META-INF/MANIFEST.MF").decode("utf-8", "replace")
        except KeyError:
            return ""
    for line in manifest.splitlines():
        if line.startswith("Implementation-Version:"):
            return line.split(":", 1)[1].strip()
    return ""


def native_lib_dir() -> str | None:
    """Where the QuestDB jar keeps the native library for this machine (None off Linux or on other CPUs)."""
    if sys.platform != "linux":
        return None
    return {
        "x86_64": "linux-x86-64",
        "amd64": "linux-x86-64",
        "aarch64": "linux-aarch64",
        "arm64": "linux-aarch64",
    }.get(platform.machine().lower())


def check_native_lib(jar: Path) -> None:
    """Fail early, with a clear message, when ``jar`` has no native library for this Linux machine."""
    sub = native_lib_dir()
    if sub is None:
        return
    with zipfile.ZipFile(jar) as zf:
        if f"io/questdb/bin/{sub}/libquestdb.so" not in zf.namelist():
            raise ServiceError(f"questdb: {jar.name} has no native library for {sub}")


class QuestDBDriver:
    """QuestDB ``QUESTDB_VERSION`` on ports ``http`` (REST, web console, ILP over HTTP) and ``pg`` (PG wire)."""

    name: str = "questdb"
    port_roles: tuple[str, ...] = ("http", "pg")
    startup_timeout_s: float = 90.0

    def prepare(self, home: Path, ports: dict[str, int], cache_dir: Path | None) -> Launch:
        """Fetch the jar and write ``<home>/root/conf/server.conf``."""
        jars = resolve(f"questdb-{QUESTDB_VERSION}", COORDINATES, cache_dir)
        main_jar = next((j for j in jars if j.name.startswith("questdb-")), jars[0])
        check_native_lib(main_jar)
        root = home / "root"
        (root / "conf").mkdir(parents=True, exist_ok=True)
        (root / "conf" / "server.conf").write_text(render_server_conf(ports["http"], ports["pg"]))
        cmd = [find_java(), *JVM_OPTS, "-cp", str(main_jar.parent / "*"), "io.questdb.ServerMain", "-d", str(root)]
        return Launch(cmd=cmd, log=home / "questdb.out", cwd=home, version=jar_version(main_jar) or QUESTDB_VERSION)

    def answering(self, ports: dict[str, int]) -> bool:
        """True when ``/exec?query=select 1`` returns a row and the PG port accepts connections."""
        if not port_open(ports["http"]):
            return False
        import httpx

        try:
            resp = httpx.get(f"http://{LOOPBACK}:{ports['http']}/exec", params={"query": "select 1"}, timeout=5.0)
            ok = resp.status_code == 200 and resp.json().get("dataset") == [[1]]
        except (httpx.HTTPError, ValueError) as exc:
            logger.debug("questdb on %d not answering yet: %s", ports["http"], exc)
            return False
        return ok and port_open(ports["pg"])
