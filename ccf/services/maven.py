"""Jars from Maven Central, resolved once with ``mvn dependency:copy-dependencies`` and cached per user.

The cache lives in ``${XDG_CACHE_HOME:-~/.cache}/ccf/jars/<bundle>/`` (never in the repository). A bundle is
complete when its ``.complete`` manifest lists jars that all exist; a complete bundle is never downloaded again.
Concurrent resolutions of the same bundle serialize on a lock file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from ccf.errors import ServiceError

logger = logging.getLogger(__name__)

MANIFEST = ".complete"
MVN_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Coordinate:
    """One Maven artifact, ``group:artifact:version``."""

    group: str
    artifact: str
    version: str

    def __str__(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/ccf/jars`` (the XDG convention, not a CCF setting).

    >>> default_cache_dir({"XDG_CACHE_HOME": "/c"}).as_posix()
    '/c/ccf/jars'
    """
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ccf" / "jars"


def render_pom(coords: Sequence[Coordinate]) -> str:
    """A throwaway pom whose dependencies are ``coords``.

    >>> "<artifactId>questdb</artifactId>" in render_pom([Coordinate("org.questdb", "questdb", "9.3.4")])
    True
    """
    deps = "\n".join(
        "    <dependency>"
        f"<groupId>{escape(c.group)}</groupId>"
        f"<artifactId>{escape(c.artifact)}</artifactId>"
        f"<version>{escape(c.version)}</version>"
        "</dependency>"
        for c in coords
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        "  <groupId>ccf.local</groupId><artifactId>ccf-services-jars</artifactId><version>0</version>\n"
        "  <packaging>pom</packaging>\n"
        f"  <dependencies>\n{deps}\n  </dependencies>\n"
        "</project>\n"
    )


def cached_jars(bundle_dir: Path) -> list[Path] | None:
    """The jars of a complete bundle, or None when the bundle is missing or incomplete."""
    manifest = bundle_dir / MANIFEST
    if not manifest.is_file():
        return None
    jars = [bundle_dir / name for name in manifest.read_text().split()]
    if not jars or not all(j.is_file() for j in jars):
        return None
    return jars


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def resolve(bundle: str, coords: Sequence[Coordinate], cache_dir: Path | None = None) -> list[Path]:
    """Jars of ``coords`` plus their runtime dependencies in ``<cache_dir>/<bundle>``, downloading only if absent."""
    bundle_dir = (cache_dir or default_cache_dir()) / bundle
    jars = cached_jars(bundle_dir)
    if jars is not None:
        logger.debug("jars for %s cached in %s", bundle, bundle_dir)
        return jars
    with _locked(bundle_dir.parent / f".{bundle}.lock"):
        jars = cached_jars(bundle_dir)  # another process may have finished while we waited for the lock
        if jars is not None:
            return jars
        return _download(bundle, coords, bundle_dir)


def _download(bundle: str, coords: Sequence[Coordinate], bundle_dir: Path) -> list[Path]:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(
            f"cannot fetch {bundle}: `mvn` (Apache Maven) is not on PATH; install it (apt install maven)"
        )
    logger.info("downloading %s from Maven Central into %s (once)", ", ".join(map(str, coords)), bundle_dir)
    with tempfile.TemporaryDirectory(prefix=f"ccf-{bundle}-", dir=bundle_dir.parent) as tmp:
        work = Path(tmp)
        (work / "pom.xml").write_text(render_pom(coords))
        out = work / "jars"
        cmd = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(work / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={out}",
        ]
        try:
            result = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=MVN_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"mvn did not fetch {bundle} within {MVN_TIMEOUT_S:.0f} s") from exc
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
            raise ServiceError(f"mvn could not fetch {bundle} ({', '.join(map(str, coords))}):\n{tail}")
        names = sorted(p.name for p in out.glob("*.jar"))
        if not names:
            raise ServiceError(f"mvn fetched no jars for {bundle}")
        (out / MANIFEST).write_text("\n".join(names) + "\n")
        if bundle_dir.exists():
            shutil.rmtree(bundle_dir)
        os.replace(out, bundle_dir)
    jars = cached_jars(bundle_dir)
    if jars is None:  # pragma: no cover - the manifest was written just above
        raise ServiceError(f"jar cache {bundle_dir} is incomplete after download")
    return jars


def find_java(environ: Mapping[str, str] | None = None) -> str:
    """The ``java`` executable: ``$JAVA_HOME/bin/java``, else the one on PATH (17 or newer is needed)."""
    env = os.environ if environ is None else environ
    home = env.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise ServiceError("no `java` found: install a JDK 17+ or set JAVA_HOME")
    return java
