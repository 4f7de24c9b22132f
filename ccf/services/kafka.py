"""Apache Kafka 4 as one KRaft node (broker and controller in one JVM), run straight from Maven Central jars.

Storage is formatted once with ``kafka.tools.StorageTool`` (the entry point in the ``kafka_2.13`` jar); the data
directory survives ``down``/``up``. Logging goes through log4j2 (``kafka-log4j2.xml``) to ``server.log``.
Delivery guarantees are Kafka's own: replication factor 1, so this is for development and tests only.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import uuid
from importlib import resources
from pathlib import Path
from string import Template

from ccf.errors import ServiceError
from ccf.services.base import Launch
from ccf.services.maven import Coordinate, find_java, resolve
from ccf.services.process import LOOPBACK, port_open

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
# Kafka's jars bring log4j-core but no SLF4J 1.7 binding; without one the broker would log nothing.
LOG4J_VERSION = "2.25.5"
COORDINATES = (
    Coordinate("org.apache.kafka", f"kafka_{SCALA_VERSION}", KAFKA_VERSION),
    Coordinate("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
)
JVM_OPTS = ("-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")


def render_server_properties(broker_port: int, controller_port: int, data_dir: Path) -> str:
    """``server.properties`` of a single-node KRaft cluster listening on loopback only.

    >>> text = render_server_properties(19092, 19093, Path("/d"))
    >>> "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093" in text, "log.dirs=/d" in text
    (True, True)
    """
    template = Template(resources.files("ccf.services").joinpath("kafka-server.properties").read_text())
    return template.substitute(broker_port=broker_port, controller_port=controller_port, data_dir=data_dir.as_posix())


def new_cluster_id() -> str:
    """A cluster id as Kafka writes them: a random UUID in URL-safe base64 without padding (22 characters).

    It may start with ``-``, so it is passed as ``--cluster-id=ID`` (as a separate argument the tool's argparse
    would take it for an option)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")


def jar_version(jars: list[Path]) -> str:
    """Kafka's version from the name of its ``kafka_<scala>-<version>.jar``.

    >>> jar_version([Path("/c/kafka-clients-4.4.0.jar"), Path("/c/kafka_2.13-4.4.0.jar")])
    '4.4.0'
    """
    prefix = f"kafka_{SCALA_VERSION}-"
    for jar in jars:
        if jar.name.startswith(prefix) and jar.suffix == ".jar":
            return jar.name.removeprefix(prefix).removesuffix(".jar")
    raise ServiceError(f"kafka: no {prefix}*.jar among {len(jars)} cached jars; remove the jar cache and retry")


class KafkaDriver:
    """Kafka ``KAFKA_VERSION`` on ports ``broker`` (PLAINTEXT) and ``controller`` (KRaft quorum)."""

    name: str = "kafka"
    port_roles: tuple[str, ...] = ("broker", "controller")
    startup_timeout_s: float = 90.0

    def prepare(self, home: Path, ports: dict[str, int], cache_dir: Path | None) -> Launch:
        """Fetch the jars, write config and log4j2 files under ``home``, format storage on first use."""
        jars = resolve(f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}", COORDINATES, cache_dir)
        java = find_java()
        config_dir, data_dir = home / "config", home / "data"
        config_dir.mkdir(parents=True, exist_ok=True)
        data_dir.mkdir(parents=True, exist_ok=True)
        props = config_dir / "server.properties"
        props.write_text(render_server_properties(ports["broker"], ports["controller"], data_dir))
        log4j = config_dir / "log4j2.xml"
        log4j.write_text(resources.files("ccf.services").joinpath("kafka-log4j2.xml").read_text())
        classpath = str(jars[0].parent / "*")
        base = [
            java,
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={home}",
            "-cp",
            classpath,
        ]
        if not (data_dir / "meta.properties").is_file():
            self._format(base, props, home)
        return Launch(
            cmd=[*base, "kafka.Kafka", str(props)],
            log=home / "kafka.out",
            cwd=home,
            version=jar_version(jars),
            detail_log=home / "server.log",
        )

    @staticmethod
    def _format(base: list[str], props: Path, home: Path) -> None:
        cmd = [*base, "kafka.tools.StorageTool", "format", f"--cluster-id={new_cluster_id()}", "-c", str(props)]
        logger.info("formatting Kafka storage in %s", home / "data")
        try:
            result = subprocess.run(cmd, cwd=home, capture_output=True, text=True, timeout=120, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ServiceError("kafka: storage format did not finish within 120 s") from exc
        (home / "format.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
            raise ServiceError(f"kafka: storage format failed (exit {result.returncode}):\n{tail}")

    def answering(self, ports: dict[str, int]) -> bool:
        """True when an AdminClient can list topics on the broker port."""
        if not port_open(ports["broker"]):
            return False
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": f"{LOOPBACK}:{ports['broker']}", "log_level": 0})
        try:
            admin.list_topics(timeout=5)
        except KafkaException as exc:
            logger.debug("kafka on %d not answering yet: %s", ports["broker"], exc)
            return False
        return True
