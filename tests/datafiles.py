"""Where the real captures live: ``CCF_DATA_DIR``, else ``<repo root>/../shared/data`` (a relative
``CCF_DATA_DIR`` is taken from the repo root). Never copied into the repo.

A missing file fails the test loudly (``FileNotFoundError``): these tests exist to run on the real data.
``CCF_DATA_DIR`` is read when this module is imported too, because ``tests/conftest.py`` clears every ``CCF_*``
variable before each test.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
_AT_IMPORT = os.environ.get("CCF_DATA_DIR", "")


def data_dir() -> Path:
    """The data folder (it must exist)."""
    configured = os.environ.get("CCF_DATA_DIR") or _AT_IMPORT
    path = REPO_ROOT / configured if configured else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        raise FileNotFoundError(f"data folder {path} not found: set CCF_DATA_DIR to the shared/data folder")
    return path.resolve()


def data_file(relative: str) -> Path:
    """A file under the data folder, which must exist."""
    path = data_dir() / relative
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} not found (CCF_DATA_DIR={data_dir()})")
    return path
