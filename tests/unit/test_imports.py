"""Importing any CCF module does nothing: no connection, no file written, no thread, no logging handler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ccf", "flows", "models", "dashboards")

_PROBE = r"""
import importlib, json, logging, sys, threading, pkgutil

events = []

def hook(event, args):
    if event == "socket.connect" or event == "socket.bind":
        events.append([event, repr(args[1])])
    elif event == "open":
        path, mode = args[0], args[1]
        if isinstance(mode, str) and any(c in mode for c in "wax+"):
            events.append([event, repr(path)])
    elif event in ("os.mkdir", "os.rename", "os.remove", "subprocess.Popen", "os.system"):
        events.append([event, repr(args[0])])

threads_before = {t.ident for t in threading.enumerate()}
handlers_before = len(logging.getLogger().handlers)
sys.addaudithook(hook)
names = []
for pkg_name in PACKAGES:
    pkg = importlib.import_module(pkg_name)
    names.append(pkg_name)
    for info in pkgutil.walk_packages(pkg.__path__, pkg_name + "."):
        importlib.import_module(info.name)
        names.append(info.name)
new_threads = [t.name for t in threading.enumerate() if t.ident not in threads_before]
print(json.dumps({
    "modules": names,
    "events": events,
    "threads": new_threads,
    "handlers": len(logging.getLogger().handlers) - handlers_before,
}))
"""


def test_importing_every_module_has_no_side_effects(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # our own .pyc writes are not the module's doing
    code = f"PACKAGES = {PACKAGES!r}\n" + _PROBE
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=True
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert "ccf.settings" in report["modules"] and "ccf.schemas" in report["modules"]
    assert report["events"] == [], f"import did I/O: {report['events'][:10]}"
    assert report["threads"] == [], f"import started threads: {report['threads']}"
    assert report["handlers"] == 0, "import added a logging handler"
    # nothing appeared in the working directory either
    assert not (ROOT / "mlruns").exists()
