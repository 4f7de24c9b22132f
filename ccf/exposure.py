"""Who may reach the Panel app: refuse to serve beyond loopback without a login, or with a placeholder password,
and the websocket origins it accepts (the configured host, never ``*``). Plain settings checks, so every entry point
that starts the app (``ccf app``, ``ccf demo``) can run them before it starts anything.
"""

from __future__ import annotations

import ipaddress

from ccf.errors import ConfigError
from ccf.settings import PLACEHOLDER_SECRET, AppSettings


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, True, False)
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_exposure(app: AppSettings) -> None:
    """:class:`ConfigError` (one line naming the variables) when the app would serve beyond loopback without a
    login, or when its password is still the ``change-me`` placeholder."""
    password = app.basic_auth_password.get_secret_value() if app.basic_auth_password is not None else ""
    if password.strip().lower() == PLACEHOLDER_SECRET:
        raise ConfigError(f"CCF_APP__BASIC_AUTH_PASSWORD is still {PLACEHOLDER_SECRET!r}: set a real password "
                          "(docker/.env), or leave it empty and keep CCF_APP__HOST on loopback")
    if not password and not is_loopback(app.host):
        raise ConfigError(f"CCF_APP__HOST={app.host} serves the app beyond this machine without a login: set "
                          "CCF_APP__BASIC_AUTH_PASSWORD (and CCF_APP__BASIC_AUTH_USER), or CCF_APP__HOST=127.0.0.1")


def websocket_origins(app: AppSettings) -> list[str]:
    """Origins (``host:port``) whose pages may open the app's websocket: the configured host, its localhost forms
    when it is loopback or a wildcard (a published container port is reached as localhost), and
    ``CCF_APP__WEBSOCKET_ORIGINS``. (Bokeh's allowlist takes no IPv6 literal: a page served from ``[::1]`` is
    refused; use a name.)

    >>> websocket_origins(AppSettings(host="127.0.0.1", port=5006))
    ['127.0.0.1:5006', 'localhost:5006']
    >>> websocket_origins(AppSettings(host="ccf.example.org", port=80, websocket_origins=["ccf.example.org"]))
    ['ccf.example.org:80', 'ccf.example.org']
    """
    port = app.port
    wildcard = app.host in ("0.0.0.0", "::", "")
    out = [] if wildcard or ":" in app.host else [f"{app.host}:{port}"]
    if wildcard or is_loopback(app.host):
        out += [f"127.0.0.1:{port}", f"localhost:{port}"]
    return list(dict.fromkeys([*out, *app.websocket_origins]))
