"""docs/configuration.md is the settings model's own reference, and ``ccf config`` hides secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccf.config_doc import listing, markdown
from ccf.settings import Settings, load_settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_reference_is_not_stale() -> None:
    assert DOC.read_text() == markdown(), "regenerate it: ccf config --doc > docs/configuration.md"


def test_every_setting_has_a_variable_default_and_meaning() -> None:
    rows = [line for line in markdown().splitlines() if line.startswith("| `CCF_")]
    sections = [f for f in Settings.model_fields.values() if hasattr(f.annotation, "model_fields")]
    fields = len(Settings.model_fields) - len(sections) + sum(len(s.annotation.model_fields) for s in sections)  # type: ignore[union-attr]
    assert len(rows) == fields
    assert all(not row.rstrip().endswith("|  |") for row in rows), [r for r in rows if r.rstrip().endswith("|  |")]


def test_listing_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCF_QUESTDB__PASSWORD", "hunter2")
    monkeypatch.setenv("CCF_VENUES__SYMBOLS", '["SOL-USDT"]')
    text = listing(load_settings())
    assert "hunter2" not in text and "CCF_QUESTDB__PASSWORD" in text
    assert '["SOL-USDT"]' in text and "[venues]" in text
