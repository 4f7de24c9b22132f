"""The settings as people read them: ``docs/configuration.md`` (made from the settings model, so it cannot go
stale: a test compares them) and ``ccf config``'s listing (sections, effective values, secrets hidden)."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from ccf.settings import Settings, env_var_for

HEADER = """# Configuration

<!-- generated from ccf/settings.py by `ccf config --doc > docs/configuration.md`; a test fails when it is stale -->

Every setting is a `CCF_*` environment variable, read once by an entry point into `ccf.settings.Settings`;
nested sections use `__`. Lists are JSON (`CCF_VENUES__SYMBOLS='["BTC-USDT"]'`). A bad value stops the program
at start, in one line naming the variable (exit 2). `ccf config` prints the effective settings (secrets hidden);
`ccf config --check` only validates them.
"""


def _sections() -> Iterator[tuple[str, type[BaseModel] | None, dict[str, FieldInfo]]]:
    """``(section name, its model, its fields)``; the top-level fields come first as section ``""``."""
    top = {n: f for n, f in Settings.model_fields.items() if not _is_section(f)}
    yield "", None, top
    for name, f in Settings.model_fields.items():
        if _is_section(f):
            model = typing.cast(type[BaseModel], f.annotation)
            yield name, model, dict(model.model_fields)


def _is_section(f: FieldInfo) -> bool:
    return isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)


def _default(f: FieldInfo) -> str:
    value = f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]
    if value is None or value == "":
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _constraints(f: FieldInfo) -> str:
    parts = []
    for meta in f.metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            if getattr(meta, attr, None) is not None:
                parts.append(f"{sign} {getattr(meta, attr)}")
    if typing.get_origin(f.annotation) is typing.Literal:
        parts.append("one of " + ", ".join(f"`{a}`" for a in typing.get_args(f.annotation)))
    if "SecretStr" in str(f.annotation):
        parts.append("secret")
    return "; ".join(parts)


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def markdown() -> str:
    """``docs/configuration.md``: every field with its variable, default, constraints and meaning."""
    out = [HEADER]
    for section, model, fields in _sections():
        if section:
            out += [f"## `CCF_{section.upper()}__*`", "", _cell(model.__doc__ if model else ""), ""]
        out += ["| variable | default | constraints | meaning |", "|---|---|---|---|"]
        for name, f in fields.items():
            var = env_var_for((section, name) if section else (name,))
            out.append(f"| `{var}` | {_default(f)} | {_constraints(f)} | {_cell(f.description)} |")
        out.append("")
    return "\n".join(out)


def _shown(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "********" if value.get_secret_value() else "(unset)"
    if isinstance(value, list):
        return json.dumps([str(v) for v in value]) if any(not isinstance(v, int | float | str) for v in value) \
            else json.dumps(value)
    return "(unset)" if value is None or value == "" else str(value)


def listing(settings: Settings) -> str:
    """The effective settings by section, one ``VARIABLE = value`` per line, secrets hidden."""
    out = []
    for section, _, fields in _sections():
        source = getattr(settings, section) if section else settings
        out.append(f"[{section or 'general'}]")
        width = max(len(env_var_for((section, n) if section else (n,))) for n in fields)
        for name in fields:
            var = env_var_for((section, name) if section else (name,))
            out.append(f"  {var:<{width}} = {_shown(getattr(source, name))}")
    return "\n".join(out)
