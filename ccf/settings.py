"""One typed settings object for the whole platform.

Every value comes from an environment variable with the prefix ``CCF_``; nested sections use ``__``
(``CCF_KAFKA__BOOTSTRAP_SERVERS``). Entry points call :func:`load_settings` once and pass the object down;
library code never reads ``os.environ``.

>>> s = Settings(_env_prefix="CCF_DOCTEST_")  # no CCF_DOCTEST_* variables: embedded defaults
>>> s.kafka.enabled, s.questdb.enabled, s.features.window_s
(False, False, 1.0)
>>> "hunter2" in repr(Settings(questdb={"password": "hunter2"}))
False
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ccf.errors import ConfigError

BASELINE_MODELS = ("naive", "ewma", "river_lr", "river_ts", "blend")
"""The online models the features flow can run (``CCF_FORECAST__MODELS``; :mod:`ccf.forecast.baselines`)."""
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SYMBOL = re.compile(r"^[A-Z0-9]+-[A-Z0-9]+(-[A-Z0-9]+)*$")
_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9._-]*$")
_TABLE_PREFIX = re.compile(r"^[A-Za-z0-9_]*$")

ENV_PREFIX = "CCF_"
NESTED_DELIMITER = "__"


class _Section(BaseModel):
    """A settings section: a field's docstring is its description (``docs/configuration.md`` is made from them)."""

    model_config = ConfigDict(use_attribute_docstrings=True)


class KafkaSettings(_Section):
    """Kafka connection. Empty ``bootstrap_servers`` means: no Kafka, use in-process sources and sinks."""

    bootstrap_servers: str = ""
    """host:port list of the brokers; empty: no Kafka (in-process sources and sinks)"""
    security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (librdkafka's security.protocol)"""
    sasl_mechanism: str | None = None
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with a SASL protocol"""
    sasl_username: str | None = None
    """SASL user"""
    sasl_password: SecretStr | None = None
    """SASL password (secret: hidden in ccf config)"""
    topic_prefix: str = "ccf."
    """prefix of every topic name (ccf.book, ccf.trades, ccf.features, ...)"""

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, v: str) -> str:
        if not _TOPIC_PREFIX.match(v):
            raise ValueError(f"{v!r} cannot start a Kafka topic name (letters, digits, '.', '_', '-')")
        return v
    client_id: str = "ccf"
    """client id of CCF's producers and consumers (also names the transactional ids)"""
    group_id: str = "ccf-features"
    """consumer group of the features job (its committed offsets, its lag)"""
    idle_s: float = Field(
        default=2.0, ge=0, description="how long a topic-partition at its end may hold the event-time merge back"
    )
    start_from: Literal["committed", "earliest", "latest"] = Field(
        default="committed",
        description="where the features job starts without recovery state: its group's committed offsets "
        "(the beginning where none are committed), the beginning, or the end",
    )
    commit_every_s: float = Field(default=5.0, gt=0, description="how often released offsets are committed")
    lag_every_s: float = Field(default=10.0, gt=0, description="how often consumer lag is reported to health")
    exactly_once: bool = Field(
        default=True, description="the features job's Kafka outputs in one transaction per batch (read_committed "
        "consumers see each row once); false: a plain idempotent producer, at-least-once",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.bootstrap_servers.strip())

    def client_config(self) -> dict[str, str]:
        """librdkafka settings shared by producers and consumers (secrets revealed only here)."""
        conf = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        return conf


class QuestDBSettings(_Section):
    """QuestDB server. Empty ``http_url`` means: no QuestDB, write the embedded store."""

    http_url: str = ""
    """QuestDB's HTTP endpoint (REST queries, and ILP writes unless ilp_http_url); empty: the embedded DuckDB store"""
    ilp_http_url: str = ""
    """ILP-over-HTTP endpoint for writes when it is not http_url"""
    pg_host: str = "127.0.0.1"
    """host of QuestDB's PostgreSQL wire endpoint (Grafana, the app)"""
    pg_port: int = Field(default=8812, ge=1, le=65535)
    """port of QuestDB's PostgreSQL wire endpoint"""
    username: str = "admin"
    """user for the PostgreSQL wire endpoint and HTTP basic auth"""
    password: SecretStr = SecretStr("quest")
    """password for the PostgreSQL wire endpoint and HTTP basic auth (secret; change-me stops the roles using QuestDB)"""
    database: str = "qdb"
    """database name on the PostgreSQL wire endpoint"""
    table_prefix: str = ""
    """prefix of every table name (features, predictions, scores, health)"""

    @field_validator("table_prefix")
    @classmethod
    def _table_prefix(cls, v: str) -> str:
        if not _TABLE_PREFIX.match(v):
            raise ValueError(f"{v!r} cannot start a QuestDB table name (letters, digits, '_')")
        return v
    retry_timeout_s: float = Field(default=120.0, gt=0, description="total time a failing write is retried")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="the start-up reachability check's timeout")

    @property
    def enabled(self) -> bool:
        return bool(self.http_url.strip())

    @property
    def ilp_url(self) -> str:
        """Where ILP over HTTP is written: the explicit setting, else the HTTP endpoint (QuestDB serves both)."""
        return self.ilp_http_url or self.http_url


class StoreSettings(_Section):
    """The embedded store used when QuestDB is not configured (default: ``<run_dir>/store.duckdb``)."""

    path: Path = Path(".ccf/store.duckdb")
    """the embedded DuckDB store file (default: <run_dir>/store.duckdb)"""


class VenueSettings(_Section):
    """Where market data comes from."""

    source: Literal["synthetic", "replay", "binance", "binance_futures", "coinbase", "kraken", "okx", "bybit"] = (
        "synthetic"
    )
    """where market data comes from: synthetic, replay (files), or a live venue"""
    symbols: list[str] = Field(default_factory=lambda: ["BTC-USDT", "ETH-USDT"])
    """symbols as BASE-QUOTE (BTC-USDT); JSON list"""

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: list[str]) -> list[str]:
        out = [s.strip().upper() for s in v]
        bad = [s for s in out if not _SYMBOL.match(s)]
        if not out or bad:
            raise ValueError(f"symbols are BASE-QUOTE, e.g. BTC-USDT; got {bad or '(none)'}")
        return out
    replay_files: list[Path] = Field(default_factory=list)
    """capture files for source=replay; JSON list of paths"""
    ws_url: str = Field(default="", description="websocket base URL override (e.g. the local venue server)")
    rest_url: str = Field(default="", description="REST base URL override for depth snapshots")
    channels: list[str] | None = Field(default=None, description="venue channels to subscribe (default: the venue's)")
    speed: float = Field(
        default=1.0, ge=0.0, description="pace of synthetic and replay sources: 1 = real time, N = N×, 0 = flat out"
    )
    seed: int = 7
    """seed of the synthetic market"""
    reconnect_max_tries: int = Field(default=10, ge=1)
    """websocket connects in a row that may fail before the connector gives up"""
    max_worker_restarts: int = Field(
        default=5, ge=0, description="restarts in a row of a websocket worker that died with no message in between"
    )
    backoff_initial_s: float = Field(default=0.5, gt=0)
    """first reconnect delay (doubling, jittered)"""
    backoff_max_s: float = Field(default=30.0, gt=0)
    """longest reconnect delay"""
    silence_timeout_s: float = Field(default=30.0, gt=0)
    """a connection with no message for this long is closed and reconnected (watchdog)"""
    checkpoint_s: float = Field(
        default=30.0, ge=0, description="event time between two checkpoints of a book in sync on ccf.book (0: none)"
    )


class NewsSettings(_Section):
    """RSS/Atom polling."""

    enabled: bool = False
    """poll the RSS/Atom feeds into ccf.news"""
    feeds: list[str] = Field(
        default_factory=lambda: [
            "https://www.coindesk.com/arc/outboundfeeds/rss/",
            "https://cointelegraph.com/rss",
            "https://decrypt.co/feed",
            "https://bitcoinmagazine.com/.rss/full/",
            "https://www.theblock.co/rss.xml",
        ]
    )
    """feed URLs; JSON list"""
    poll_interval_s: float = Field(default=60.0, gt=0)
    """seconds between two polls of a feed"""
    max_backoff_s: float = Field(default=900.0, gt=0)
    """longest delay before polling a failing feed again"""
    state_path: Path = Path(".ccf/news-seen.json")
    """which items were already published (default: <run_dir>/news-seen.json)"""


class FeatureSettings(_Section):
    """Event-time windows."""

    window_s: float = Field(default=1.0, gt=0)
    """width of the event-time windows, seconds"""
    allowed_lateness_s: float = Field(default=0.5, ge=0)
    """how late (event time) a record may arrive before its window closes without it"""
    depth_levels: list[int] = Field(default_factory=lambda: [1, 5, 10])
    """book depths (levels per side) of the depth and imbalance features; JSON list"""

    @field_validator("depth_levels")
    @classmethod
    def _depth_levels(cls, v: list[int]) -> list[int]:
        if not v or any(n < 1 for n in v):
            raise ValueError(f"depth levels must be a non-empty list of positive level counts; got {v}")
        return sorted(set(v))
    volatility_windows: int = Field(default=20, ge=2)
    """windows in the rolling volatility"""
    mode: Literal["book", "kline"] = "book"
    """book (order-book and trade windows) or kline (1-minute bars)"""
    feature_set: Literal["book", "seed"] = "book"
    """book (book.v1) or seed (seed.v1: book.v1 and the original CCF's level deltas, VWAPs and mid EMAs; window_s
    defaults to 3 with it)"""
    vwap_quantities: list[float] = Field(default_factory=lambda: [1.0, 10.0, 50.0])
    """seed set: quantities (base units) whose buy/sell VWAP walking the book is a feature; JSON list"""
    ema_spans: list[int] = Field(default_factory=lambda: [5, 10, 20])
    """seed set: spans (windows) of the mid EMAs; JSON list"""

    @field_validator("vwap_quantities", "ema_spans")
    @classmethod
    def _positive_list(cls, v: list[Any]) -> list[Any]:
        if any(x <= 0 for x in v):
            raise ValueError(f"must be a list of positive numbers; got {v}")
        return sorted(set(v))

    @model_validator(mode="after")
    def _seed_windows(self) -> FeatureSettings:
        if self.feature_set == "seed" and "window_s" not in self.model_fields_set:
            self.window_s = 3.0  # the original CCF's windows
        return self


class ForecastSettings(_Section):
    """Baselines and scoring."""

    horizons: list[int] = Field(default_factory=lambda: [1, 5, 10, 20])
    """forecast horizons in windows; JSON list"""
    models: list[str] = Field(default_factory=lambda: ["naive", "ewma", "river_lr", "river_ts"])
    """online models run and scored per window: naive, ewma, river_lr, river_ts, blend (the others weighted by
    their recent losses; not in the default list); JSON list"""
    quantiles: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9])
    """quantiles each model forecasts, increasing, in (0, 1); JSON list"""
    ewma_alpha: float = Field(default=0.1, gt=0, le=1)
    """smoothing factor of the ewma model"""

    @field_validator("horizons")
    @classmethod
    def _positive_horizons(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 for h in v):
            raise ValueError("horizons must be a non-empty list of positive window counts")
        return sorted(set(v))

    @field_validator("models")
    @classmethod
    def _known_models(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in BASELINE_MODELS]
        if not v or unknown:
            raise ValueError(f"unknown model(s) {unknown or '(none given)'}; choose from {', '.join(BASELINE_MODELS)}")
        return v

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < q < 1 for q in v) or any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError(f"quantiles must be strictly increasing, each in (0, 1); got {v}")
        return v


class MLflowSettings(_Section):
    """Tracking and registry. Empty ``tracking_uri`` means: a local sqlite store under ``.ccf/mlflow``."""

    tracking_uri: str = ""
    """MLflow tracking server; empty: a local sqlite store under <run_dir>/mlflow"""
    registry_uri: str = ""
    """model registry when it is not the tracking server"""
    experiment: str = "ccf-tft"
    """experiment of the TFT training runs"""
    model_name: str = "ccf-tft"
    """registered model name of the TFT"""
    username: str | None = None
    """MLflow basic-auth user (docker/compose.yaml: also the server's admin user)"""
    password: SecretStr | None = None
    """MLflow basic-auth password (secret; change-me stops ccf train and ccf predict at start)"""

    @property
    def enabled(self) -> bool:
        return bool(self.tracking_uri.strip())


class TrainerSettings(_Section):
    """The TFT sidecar's periodic retraining (``ccf train --every``)."""

    max_failures: int = Field(default=3, ge=1, description="failed runs in a row before the trainer exits unhealthy")


class AppSettings(_Section):
    """The Panel app."""

    host: str = "127.0.0.1"
    """address the Panel app listens on"""
    port: int = Field(default=5006, ge=0, le=65535)
    """port of the Panel app"""
    poll_interval_s: float = Field(default=1.0, gt=0)
    """seconds between two reads of the store by the app"""
    basic_auth_user: str | None = None
    """user of the app's basic auth (with basic_auth_password)"""
    basic_auth_password: SecretStr | None = None
    """password of the app's basic auth (secret); required when host is not loopback, never change-me"""
    websocket_origins: list[str] = Field(default_factory=list)
    """more host[:port] the browser reaches the app at (JSON list); the configured host, and localhost forms for a
    loopback or wildcard host, are always allowed"""


class Settings(BaseSettings):
    """Everything CCF can be told. See ``docs/configuration.md`` for the variable of each field."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        extra="ignore",
        validate_default=True,
        use_attribute_docstrings=True,
    )

    stop_after: float | None = Field(
        default=None, gt=0, description="seconds of event time after which sources and flows end cleanly"
    )
    data_dir: Path = Path("../shared/data")
    """where the shared real captures live (tests, benchmarks, the demo's replays)"""
    run_dir: Path = Field(default=Path(".ccf"), description="the one writable data directory (see run_paths)")
    log_level: str = "INFO"
    """DEBUG, INFO, WARNING, ERROR or CRITICAL (any case); DEBUG also prints tracebacks of errors"""

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        if v.upper() not in LOG_LEVELS:
            raise ValueError(f"unknown log level {v!r}; choose from {', '.join(LOG_LEVELS)}")
        return v.upper()
    debug: bool = Field(default=False, description="print tracebacks of errors (ccf --debug)")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    questdb: QuestDBSettings = Field(default_factory=QuestDBSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    venues: VenueSettings = Field(default_factory=VenueSettings)
    news: NewsSettings = Field(default_factory=NewsSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    forecast: ForecastSettings = Field(default_factory=ForecastSettings)
    mlflow: MLflowSettings = Field(default_factory=MLflowSettings)
    app: AppSettings = Field(default_factory=AppSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)

    @model_validator(mode="after")
    def _paths_under_run_dir(self) -> Settings:
        # writable paths not set explicitly live under run_dir (one directory a container owns)
        if "path" not in self.store.model_fields_set:
            self.store.path = self.run_dir / "store.duckdb"
        if "state_path" not in self.news.model_fields_set:
            self.news.state_path = self.run_dir / "news-seen.json"
        return self

    @property
    def recovery_dir(self) -> Path:
        """Bytewax recovery partitions (``python -m bytewax.run ... -r``)."""
        return self.run_dir / "recovery"

    @property
    def checkpoint_dir(self) -> Path:
        """TFT training checkpoints."""
        return self.run_dir / "tft-checkpoints"

    @property
    def status_dir(self) -> Path:
        """Heartbeat/status files that container healthchecks read."""
        return self.run_dir / "status"

    @property
    def trainer_status_path(self) -> Path:
        """The periodic retrain's status (``ccf train --every`` writes it, ``ccf trainer-health`` reads it)."""
        return self.status_dir / "trainer.json"


def env_var_for(loc: tuple[int | str, ...]) -> str:
    """The environment variable behind a validation error location.

    >>> env_var_for(("kafka", "bootstrap_servers"))
    'CCF_KAFKA__BOOTSTRAP_SERVERS'
    >>> env_var_for(("forecast", "horizons", 0))
    'CCF_FORECAST__HORIZONS'
    """
    parts = [str(p) for p in loc if isinstance(p, str)]
    return ENV_PREFIX + NESTED_DELIMITER.join(p.upper() for p in parts)


PLACEHOLDER_SECRET = "change-me"
"""What ``docker/.env.example`` sets every secret to: a role refuses to start while a secret it uses still says so."""


def placeholder_secrets(settings: Settings, sections: Iterable[str]) -> list[str]:
    """The variables of the secrets (``SecretStr`` fields) of ``sections`` still set to :data:`PLACEHOLDER_SECRET`;
    a section with an ``enabled`` property that is false (no QuestDB, no MLflow server) is not in use and not checked.

    >>> s = Settings(_env_prefix="CCF_DOCTEST_", questdb={"http_url": "http://q:9000", "password": "change-me"})
    >>> placeholder_secrets(s, ["questdb", "mlflow"])
    ['CCF_QUESTDB__PASSWORD']
    >>> placeholder_secrets(s.model_copy(update={"questdb": s.questdb.model_copy(update={"http_url": ""})}),
    ...                     ["questdb"])
    []
    """
    found = []
    for name in sections:
        section = getattr(settings, name)
        if not getattr(section, "enabled", True):
            continue
        for field in type(section).model_fields:
            value = getattr(section, field)
            if isinstance(value, SecretStr) and value.get_secret_value().strip().lower() == PLACEHOLDER_SECRET:
                found.append(env_var_for((name, field)))
    return found


def refuse_placeholder_secrets(settings: Settings, sections: Iterable[str]) -> None:
    """:class:`ConfigError` naming every secret of ``sections`` (those in use) still set to ``change-me``."""
    found = placeholder_secrets(settings, sections)
    if found:
        raise ConfigError(f"{', '.join(found)} {'is' if len(found) == 1 else 'are'} still {PLACEHOLDER_SECRET!r}: "
                          "set a real secret (docker/.env) before starting this role")


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (entry points only). Raises :class:`ConfigError` naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{env_var_for(err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
                             for err in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from exc
