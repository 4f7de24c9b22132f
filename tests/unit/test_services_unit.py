"""``ccf.services`` without Kafka, QuestDB or MLflow: ports, state, rendering, jar cache, and the manager's
start/reuse/stop/failure logic driven by a stand-in service (Python's ``http.server``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest

from ccf.errors import ServiceError
from ccf.services import maven
from ccf.services.base import Launch
from ccf.services.kafka import new_cluster_id, render_server_properties
from ccf.services.manager import ServiceManager, parse_only
from ccf.services.maven import Coordinate, cached_jars, default_cache_dir, render_pom, resolve
from ccf.services.process import free_ports, log_tail, pid_alive, port_is_free, port_open
from ccf.services.questdb import check_native_lib, jar_version, native_lib_dir, render_server_conf
from ccf.services.state import (
    ServiceRecord,
    State,
    env_vars,
    export_lines,
    load_state,
    save_state,
    status_payload,
)

RECORDS = {
    "mlflow": ServiceRecord("mlflow", 30, {"http": 5001}, "3.17.2", "/r/mlflow.out"),
    "kafka": ServiceRecord("kafka", 10, {"broker": 9092, "controller": 9093}, "4.4.0", "/r/kafka.out", 1.5),
    "questdb": ServiceRecord("questdb", 20, {"http": 9000, "pg": 8812}, "9.3.4", "/r/questdb.out"),
}


# ------------------------------------------------------------------------------------------------ ports
def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert all(port_is_free(p) for p in ports)
    assert not set(free_ports(3, avoid=ports)) & set(ports)


def test_port_open_and_free_follow_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_open(port)
        assert not port_is_free(port)
    assert not port_open(port)
    assert port_is_free(port)


# ------------------------------------------------------------------------------------------------ state
def test_state_round_trip_and_empty_state_removes_the_file(tmp_path: Path) -> None:
    state = State(services=dict(RECORDS), last_ports={"kafka": {"broker": 1, "controller": 2}})
    save_state(tmp_path, state)
    assert load_state(tmp_path) == state
    save_state(tmp_path, State())
    assert not (tmp_path / "state.json").exists()
    assert load_state(tmp_path) == State()


def test_unreadable_state_is_a_service_error(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(ServiceError, match="unreadable service state"):
        load_state(tmp_path)


def test_status_payload_has_the_documented_shape_in_fixed_order() -> None:
    payload = status_payload(RECORDS)
    assert json.dumps(payload) == json.dumps(
        {
            "kafka": {"bootstrap_servers": "127.0.0.1:9092", "version": "4.4.0"},
            "questdb": {
                "http_url": "http://127.0.0.1:9000",
                "pg_port": 8812,
                "ilp_http_url": "http://127.0.0.1:9000",
                "version": "9.3.4",
            },
            "mlflow": {"tracking_uri": "http://127.0.0.1:5001"},
        }
    )
    assert status_payload({"mlflow": RECORDS["mlflow"]}) == {"mlflow": {"tracking_uri": "http://127.0.0.1:5001"}}


def test_exports_name_the_settings_variables() -> None:
    assert export_lines(status_payload(RECORDS)) == [
        "export CCF_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092",
        "export CCF_QUESTDB__HTTP_URL=http://127.0.0.1:9000",
        "export CCF_QUESTDB__ILP_HTTP_URL=http://127.0.0.1:9000",
        "export CCF_QUESTDB__PG_PORT=8812",
        "export CCF_MLFLOW__TRACKING_URI=http://127.0.0.1:5001",
    ]


def test_exports_load_into_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from ccf.settings import load_settings

    for key, value in env_vars(status_payload(RECORDS)).items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert (s.questdb.http_url, s.questdb.ilp_url, s.questdb.pg_port) == ("http://127.0.0.1:9000",) * 2 + (8812,)
    assert s.mlflow.tracking_uri == "http://127.0.0.1:5001"


def test_parse_only() -> None:
    assert parse_only("questdb,kafka") == ("kafka", "questdb")
    assert parse_only("") == ("kafka", "questdb", "mlflow")
    with pytest.raises(ServiceError, match="unknown service"):
        parse_only("kafka,redis")


# -------------------------------------------------------------------------------------------- rendering
def test_questdb_server_conf_binds_loopback_and_disables_extras() -> None:
    conf = dict(
        line.split("=", 1) for line in render_server_conf(19000, 18812).splitlines() if not line.startswith("#")
    )
    assert conf["http.bind.to"] == "127.0.0.1:19000"
    assert conf["pg.net.bind.to"] == "127.0.0.1:18812"
    for key in ("line.tcp.enabled", "line.udp.enabled", "http.min.enabled", "telemetry.enabled"):
        assert conf[key] == "false"
    assert conf["shared.network.worker.count"] == "1"


def test_kafka_properties_are_single_node_kraft_on_loopback(tmp_path: Path) -> None:
    props = dict(
        line.split("=", 1)
        for line in render_server_properties(19092, 19093, tmp_path).splitlines()
        if line and not line.startswith("#")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == tmp_path.as_posix()
    assert props["offsets.topic.replication.factor"] == "1"
    assert len(new_cluster_id()) == 22


def test_pom_is_xml_with_each_dependency() -> None:
    pom = ElementTree.fromstring(render_pom([Coordinate("a.b", "c", "1"), Coordinate("d", "e&f", "2")]))
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    assert [d.findtext("m:artifactId", namespaces=ns) for d in pom.iterfind(".//m:dependency", ns)] == ["c", "e&f"]


def test_jar_version_reads_the_manifest(tmp_path: Path) -> None:
    jar = tmp_path / "x.jar"
    with zipfile.ZipFile(jar, "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\nImplementation-Version: 9.9.9\r\n")
    assert jar_version(jar) == "9.9.9"


def test_questdb_jar_without_native_lib_is_refused(tmp_path: Path) -> None:
    sub = native_lib_dir()
    if sub is None:
        pytest.skip("no QuestDB native library is expected on this platform")
    good, bad = tmp_path / "good.jar", tmp_path / "bad.jar"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr(f"io/questdb/bin/{sub}/libquestdb.so", b"")
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("io/questdb/ServerMain.class", b"")
    check_native_lib(good)
    with pytest.raises(ServiceError, match="native library"):
        check_native_lib(bad)


# ------------------------------------------------------------------------------------------------ maven
def test_cached_bundle_is_used_without_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "thing-1"
    bundle.mkdir()
    (bundle / "a.jar").write_bytes(b"")
    assert cached_jars(bundle) is None  # no manifest: incomplete
    (bundle / ".complete").write_text("a.jar\nb.jar\n")
    assert cached_jars(bundle) is None  # b.jar missing: incomplete
    (bundle / "b.jar").write_bytes(b"")
    monkeypatch.setattr(maven.shutil, "which", lambda _name: None)  # any download attempt would fail
    assert resolve("thing-1", [Coordinate("g", "a", "1")], tmp_path) == [bundle / "a.jar", bundle / "b.jar"]
    with pytest.raises(ServiceError, match="mvn"):
        resolve("other-1", [Coordinate("g", "a", "1")], tmp_path)


def test_default_cache_dir_follows_xdg() -> None:
    assert default_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/ccf/jars")
    assert default_cache_dir({}) == Path.home() / ".cache" / "ccf" / "jars"


def test_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert log_tail(log, 3) == "line 97\nline 98\nline 99"
    assert log_tail(tmp_path / "missing.log") == ""


# ------------------------------------------------------------------------------- manager, stand-in service
class HttpServerDriver:
    """A stand-in service: ``python -m http.server`` serving its home directory."""

    name = "mlflow"
    port_roles: tuple[str, ...] = ("http",)
    startup_timeout_s = 20.0

    def __init__(self, code: str | None = None) -> None:
        self.code = code  # when set, run this Python instead (to fail on purpose)

    def prepare(self, home: Path, ports: dict[str, int], cache_dir: Path | None) -> Launch:
        if self.code is not None:
            cmd = [sys.executable, "-c", self.code, str(home)]
        else:
            cmd = [sys.executable, "-m", "http.server", str(ports["http"]), "-b", "127.0.0.1", "-d", str(home)]
        return Launch(cmd=cmd, log=home / "out.log", cwd=home, version="0.1")

    def answering(self, ports: dict[str, int]) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{ports['http']}/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def test_manager_starts_reuses_and_stops(tmp_path: Path) -> None:
    manager = ServiceManager(tmp_path, drivers={"mlflow": HttpServerDriver()})
    payload = manager.up(["mlflow"])
    uri = payload["mlflow"]["tracking_uri"]
    pid = load_state(tmp_path).services["mlflow"].pid
    try:
        assert httpx.get(uri).status_code == 200
        assert manager.up(["mlflow"]) == payload  # reused, not restarted
        assert load_state(tmp_path).services["mlflow"].pid == pid
        assert manager.status() == payload
    finally:
        assert manager.down() == ["mlflow"]
    assert not pid_alive(pid)
    assert port_is_free(int(uri.rsplit(":", 1)[1]))
    assert manager.status() == {}
    assert manager.down() == []  # nothing running: a no-op
    assert manager.up(["mlflow"]) == payload  # the previous port was free, so it is offered again
    manager.down()


def test_dead_service_is_replaced_on_up(tmp_path: Path) -> None:
    manager = ServiceManager(tmp_path, drivers={"mlflow": HttpServerDriver()})
    manager.up(["mlflow"])
    first = load_state(tmp_path).services["mlflow"]
    try:
        os.kill(first.pid, signal.SIGKILL)
        manager.up(["mlflow"])
        assert load_state(tmp_path).services["mlflow"].pid != first.pid
    finally:
        manager.down()


def test_failed_start_reports_the_services_own_log(tmp_path: Path) -> None:
    code = "import sys; print('boom: cannot bind'); sys.exit(3)"
    manager = ServiceManager(tmp_path, drivers={"mlflow": HttpServerDriver(code)})
    with pytest.raises(ServiceError, match=r"(?s)mlflow exited with status 3.*boom: cannot bind"):
        manager.up(["mlflow"])
    assert load_state(tmp_path).services == {}


def test_cli_down_and_status_when_nothing_runs(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("ccf")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from ccf.cli import main; main()"]
    down = subprocess.run([*cmd, "services", "down", "--run-dir", str(tmp_path)], capture_output=True, text=True)
    assert down.returncode == 0, down.stderr
    status = subprocess.run(
        [*cmd, "services", "status", "--json", "--run-dir", str(tmp_path)], capture_output=True, text=True
    )
    assert status.returncode == 1
    assert json.loads(status.stdout) == {}
    bad = subprocess.run([*cmd, "services", "up", "--only", "redis"], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "unknown service" in bad.stderr
