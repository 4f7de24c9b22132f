"""Process and port plumbing shared by the local services: free ports, spawn, liveness, stop, log tails.

Every service runs in its own session (``start_new_session=True``), so its pid is also its process-group id and
:func:`stop_group` can stop the whole tree (MLflow's uvicorn worker, for instance) at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ccf.errors import ServiceError

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

# Popen objects of the services this process started, so that their exit can be reaped (no zombies, no
# "subprocess still running" ResourceWarning). Empty until a service is started; never filled on import.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def free_ports(count: int, host: str = LOOPBACK, avoid: Sequence[int] = ()) -> list[int]:
    """``count`` distinct ports that nothing listens on right now (the OS picks them; sockets held until all chosen).

    >>> a, b = free_ports(2)
    >>> a != b and 1024 < a < 65536
    True
    """
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
            if port not in avoid and port not in ports:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when a server could listen on ``port`` now (with ``SO_REUSEADDR``, as servers do, so TIME_WAIT is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(cmd: Sequence[str], *, log_path: Path, cwd: Path, env: Mapping[str, str] | None = None) -> int:
    """Start ``cmd`` in a new session with stdout and stderr appended to ``log_path``; return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger.debug("starting %s (log %s)", " ".join(cmd), log_path)
    with log_path.open("ab") as log:
        try:
            proc = subprocess.Popen(
                list(cmd),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServiceError(f"cannot start {cmd[0]}: {exc}") from exc
    _CHILDREN[proc.pid] = proc
    return proc.pid


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state, pgrp)`` from ``/proc/<pid>/stat``, or None when there is no such process (or no ``/proc``)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie."""
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_stat(pid)
    return stat is None or stat[0] != "Z"


def pid_matches(pid: int, marker: str) -> bool:
    """True when ``pid`` is alive and its command line mentions ``marker`` (guards against a reused pid)."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return True  # no /proc (not Linux): trust the pid
    return marker in cmdline


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process of group ``pgid`` remains."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc_dir.iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[0] != "Z":
                return True
    return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        pgid = pid  # the leader is gone; members of its group may remain
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if pgid == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def exit_code(pid: int) -> int | None:
    """The exit status of a service this process started, once it has exited (None otherwise)."""
    proc = _CHILDREN.get(pid)
    return None if proc is None else proc.poll()


def stop_group(pid: int, *, name: str, timeout: float = 20.0) -> None:
    """Stop the process group led by ``pid``: SIGTERM, wait up to ``timeout`` s, then SIGKILL."""
    if _group_alive(pid) or pid_alive(pid):
        logger.info("stopping %s (pid %d)", name, pid)
        _signal_group(pid, signal.SIGTERM)
        if not wait_for(lambda: not _alive_or_group(pid), timeout=timeout):
            logger.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", name, pid, timeout)
            _signal_group(pid, signal.SIGKILL)
            wait_for(lambda: not _alive_or_group(pid), timeout=10.0)
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5.0)


def _alive_or_group(pid: int) -> bool:
    return pid_alive(pid) or _group_alive(pid)


def wait_for(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of ``path`` ('' when it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
