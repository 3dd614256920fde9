"""Settings: one frozen pydantic-settings model, read once, passed to constructors.

Sources, lowest to highest precedence: defaults, a TOML file (``EVENTSEAM_CONFIG_FILE``, or
``eventseam.toml`` in the working directory when it exists), ``EVENTSEAM_*`` environment
variables (``__`` nests: ``EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS``, ``EVENTSEAM_CONTEXTS__ORDERS=dual``),
then init values (Django ``settings.EVENTSEAM``, Flask ``app.config``) passed to ``load_settings``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from .modes import Mode
from .security import check_settings

ENV_PREFIX = "EVENTSEAM_"
CONFIG_FILE_ENV = "EVENTSEAM_CONFIG_FILE"
#: Read by the ``eventseam`` command line itself (``--app``), not by the settings model.
APP_ENV = "EVENTSEAM_APP"
DEFAULT_CONFIG_FILE = "eventseam.toml"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class BusSettings(_Section):
    """In-memory bus: retries with exponential backoff, then a dead letter."""

    max_attempts: int = Field(3, ge=1, description="attempts per handler before dead-lettering")
    backoff_initial: float = Field(0.05, gt=0, description="seconds before the first retry")
    backoff_max: float = Field(5.0, gt=0, description="cap on the delay between retries")
    buffer_size: int = Field(
        10_000, ge=1, description="events buffered per handler (backpressure beyond)"
    )
    drain_timeout: float = Field(
        30.0, gt=0, description="seconds shutdown waits for in-flight dispatch"
    )


class KafkaSettings(_Section):
    """Connection to Kafka, shared by the relay and the consumer workers.

    TLS and SASL (see outbox.kafka_security): every aiokafka client eventseam builds gets the same
    security options. Secrets are ``SecretStr`` (masked in reprs, dumps and ``config check``)
    or read from a ``*_file`` at connect time; errors never show the input values.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)

    bootstrap_servers: str | None = Field(
        None, description="host:port[,host:port]; unset = bundled broker where allowed"
    )
    client_id: str = "eventseam"
    enable_idempotence: Literal["auto", "on", "off"] = "auto"
    acks: Literal["all", "1", "0"] = "all"
    linger_ms: int = Field(5, ge=0)
    max_batch_size: int = Field(1_048_576, ge=1024, description="producer batch size in bytes")
    max_request_size: int = Field(1_048_576, ge=1024)
    request_timeout_ms: int = Field(30_000, ge=1000)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = (
        Field(None, description="needs security_protocol SASL_PLAINTEXT or SASL_SSL")
    )
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: FilePath | None = Field(
        None, description="file holding sasl_password (read at connect time)"
    )
    sasl_oauth_token_provider: str | None = Field(
        None, description="module:attribute of an aiokafka AbstractTokenProvider (OAUTHBEARER)"
    )
    ssl_cafile: FilePath | None = Field(None, description="CA bundle (PEM); unset: system CAs")
    ssl_certfile: FilePath | None = Field(None, description="client certificate (PEM), mTLS")
    ssl_keyfile: FilePath | None = Field(None, description="client private key (PEM)")
    ssl_password: SecretStr | None = Field(None, description="password of an encrypted ssl_keyfile")
    ssl_password_file: FilePath | None = Field(None, description="file holding ssl_password")
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _security_consistent(self) -> KafkaSettings:
        check_settings(self)
        return self


class TopicSettings(_Section):
    """How a context's topic is created by the relay."""

    partitions: int = Field(6, ge=1)
    replication_factor: int = Field(1, ge=1)
    retention_ms: int | None = Field(
        None, description="topic retention.ms; None keeps the broker default"
    )


class RelaySettings(_Section):
    """Outbox relay worker."""

    batch_size: int = Field(500, ge=1)
    poll_interval: float = Field(
        0.1, gt=0, description="seconds between polls when idle (LISTEN/NOTIFY wakes earlier)"
    )
    max_attempts: int = Field(10, ge=1, description="send attempts before a row is parked")
    slots: int = Field(64, ge=1, description="aggregate-hash slots leased among relay processes")
    lease_seconds: float = Field(10.0, gt=0, description="a dead relay's slots move on after this")
    backoff_initial: float = Field(0.2, gt=0)
    backoff_max: float = Field(30.0, gt=0)
    retention_seconds: float = Field(
        0.0, ge=0, description="keep published rows this long for replay; 0 deletes at once"
    )
    purge_batch: int = Field(5_000, ge=1)
    command_timeout: float = Field(
        30.0,
        ge=0,
        description="seconds a relay statement or connect on PostgreSQL may wait for the server "
        "before it fails like an outage (the connection is dropped and opened again); 0: no limit",
    )
    topic_template: str = Field(
        "{prefix}{context}", description="topic name; fields: prefix, context, event_type"
    )
    topic_prefix: str = Field("eventseam.", description="prepended to every topic name")


class ConsumerSettings(_Section):
    """Kafka consumer runner (``eventseam worker``): groups, retries, dead-letter topic, fetches.

    ``dlq_topic_template`` fields: ``prefix`` (RelaySettings.topic_prefix), ``handler`` (durable
    name), ``context`` (the handler's context) and ``topic`` (the record's topic).
    """

    group_prefix: str = Field("eventseam.", description="consumer group id = prefix + handler name")
    max_attempts: int = Field(5, ge=1, description="handler attempts before the dead-letter topic")
    backoff_initial: float = Field(0.2, gt=0, description="seconds before the first retry")
    backoff_max: float = Field(10.0, gt=0, description="cap on the delay between retries")
    session_timeout_ms: int = Field(10_000, ge=1_000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1_000)
    fetch_max_wait_ms: int = Field(
        100, ge=1, description="the bundled broker holds every fetch this long"
    )
    max_poll_records: int = Field(500, ge=1, description="records per fetch")
    max_batch_records: int = Field(
        2_000,
        ge=1,
        description="records applied in one transaction at most: records fetched while a"
        " transaction runs join the next one (group commit), and at most this many (plus one"
        " fetch) wait decoded",
    )
    max_batch_bytes: int = Field(
        8 * 1_048_576,
        ge=1_024,
        description="record value bytes in one transaction, and waiting decoded, at most"
        " (a single larger fetch still goes)",
    )
    max_partition_fetch_bytes: int = Field(1_048_576, ge=1_024)
    fetch_max_bytes: int = Field(16 * 1_048_576, ge=1_024)
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest",
        description="where a new group starts (earliest: the inbox absorbs what was applied)",
    )
    dlq_topic_template: str = Field("{prefix}dlq.{handler}", description="dead-letter topic name")
    stop_timeout: float = Field(
        45.0,
        gt=0,
        description="seconds `eventseam worker` gives a graceful stop after SIGTERM/SIGINT before"
        " it stops at once, as a second signal does (handled offsets not committed by then are"
        " delivered again and skipped by the inbox)",
    )

    def group_id(self, handler: str) -> str:
        """The consumer group of the handler with durable name ``handler``."""
        return f"{self.group_prefix}{handler}"

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> ConsumerSettings:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be at most a third of session_timeout_ms")
        return self


class InboxSettings(_Section):
    """Retention of inbox rows ``(handler, event_id)`` (engine.inbox).

    A row is what makes a redelivered event a no-op, so keep it at least as long as any copy of
    the event can still be delivered: the Kafka topics' retention (broker default 7 days), the
    relay's ``retention_seconds`` and the ``eventseam replay --since`` windows you use. The relay
    holding slot 0 purges older rows (outbox.retention); ``eventseam inbox purge`` does it once.
    The runner's dead-letter marks (``eventseam_dlq_sent``) are kept and purged alike.
    """

    retention_seconds: float = Field(
        7 * 86_400.0, gt=0, description="inbox rows older than this are purged (default 7 days)"
    )
    purge_batch: int = Field(5_000, ge=1, description="inbox rows deleted per statement")


class PersonalDataSettings(_Section):
    """Personal-data encryption (engine.personal_data): the master key wrapping subject keys.

    Give the key (32 bytes, base64url; ``eventseam keys generate`` prints one) either inline or
    as a file; it is a SecretStr, never logged. Needed as soon as an event declares a
    ``PersonalData`` field; ``eventseam erase`` needs only the database.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)

    master_key: SecretStr | None = Field(None, description="master key, base64url (32 bytes)")
    master_key_file: Path | None = Field(None, description="file holding the master key")

    @model_validator(mode="after")
    def _one_source(self) -> PersonalDataSettings:
        if self.master_key is not None and self.master_key_file is not None:
            raise ValueError("set personal_data.master_key or master_key_file, not both")
        return self


class AclSettings(_Section):
    """Kafka principals that ``eventseam acl`` grants access to (engine.acl)."""

    relay_principal: str = Field(
        "User:eventseam-relay", description="principal of the relay (writes every context's topics)"
    )
    principals: dict[str, str] = Field(
        default_factory=dict, description="principal per context; default User:<context>"
    )

    def principal_of(self, context: str) -> str:
        """The principal ``context``'s handlers (workers) connect as."""
        return self.principals.get(context, f"User:{context}")


#: The database backends eventseam's outbox, relay and inbox run on.
SUPPORTED_DATABASES: Final = ("postgresql", "sqlite")


class EventSeamSettings(BaseSettings):
    """Every setting of eventseam. Frozen: read once at start-up."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,  # a failing section must not print its secrets
    )

    database_url: str = Field(
        "sqlite:///eventseam.db", description="SQLAlchemy URL of the outbox database"
    )
    max_event_bytes: int = Field(256 * 1024, ge=1024, description="size guard at publish time")
    strict_names: bool = Field(
        False, description="an event name that reads as a command is an error, not a warning"
    )
    flag_refresh_seconds: float = Field(
        2.0, gt=0, description="how often runtime flags are re-read"
    )
    contexts: dict[str, Mode] = Field(
        default_factory=dict, description="mode per context (local, dual, broker)"
    )
    topics: dict[str, TopicSettings] = Field(
        default_factory=dict, description="topic settings per context"
    )
    bus: BusSettings = BusSettings()
    kafka: KafkaSettings = KafkaSettings()
    relay: RelaySettings = RelaySettings()
    consumer: ConsumerSettings = ConsumerSettings()
    inbox: InboxSettings = InboxSettings()
    acl: AclSettings = AclSettings()
    personal_data: PersonalDataSettings = PersonalDataSettings()
    detached: list[str] = Field(
        default_factory=list,
        description="contexts whose handlers run in their own process (eventseam worker), not in this one",
    )

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, url: str) -> str:
        try:
            backend = make_url(url).get_backend_name()
        except ArgumentError:
            raise ValueError(
                "not a SQLAlchemy URL; for example postgresql+psycopg://user@host/dbname "
                "or sqlite:///eventseam.db"
            ) from None
        if backend not in SUPPORTED_DATABASES:
            raise ValueError(f"eventseam runs on PostgreSQL or SQLite, not {backend}")
        return url

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = config_file()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        sources.append(file_secret_settings)
        return tuple(sources)

    def mode_of(self, context: str) -> Mode:
        """The configured mode of ``context`` (LOCAL when not configured)."""
        return self.contexts.get(context, Mode.LOCAL)

    def topic_settings(self, context: str) -> TopicSettings:
        """Topic settings of ``context`` (defaults when not configured)."""
        return self.topics.get(context, TopicSettings())


def config_file() -> Path | None:
    """The TOML settings file: ``$EVENTSEAM_CONFIG_FILE`` (even when it does not exist), else
    ``eventseam.toml`` in the working directory when it is a file, else None."""
    explicit = os.environ.get(CONFIG_FILE_ENV)
    if explicit:
        return Path(explicit)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_settings(**overrides: Any) -> EventSeamSettings:
    """Read settings from every source; ``overrides`` (framework settings) win."""
    return EventSeamSettings(**overrides)


def known_env_names(
    model: type[BaseModel] = EventSeamSettings, prefix: str = ENV_PREFIX
) -> set[str]:
    """Every ``EVENTSEAM_*`` variable name the model understands (dict fields end in ``__``)."""
    names: set[str] = {CONFIG_FILE_ENV, APP_ENV}
    for field_name, info in model.model_fields.items():
        name = f"{prefix}{field_name.upper()}"
        names.add(name)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= known_env_names(annotation, f"{name}__")
        elif getattr(annotation, "__origin__", None) is dict:
            names.add(f"{name}__")
    return names


def unknown_env_vars(environ: dict[str, str] | None = None) -> list[str]:
    """``EVENTSEAM_*`` variables that no setting reads (pydantic-settings ignores them silently)."""
    environ = dict(os.environ if environ is None else environ)
    known = known_env_names()
    prefixes = tuple(n for n in known if n.endswith("__"))
    unknown = []
    for name in environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        if upper.startswith(prefixes):
            continue
        unknown.append(name)
    return sorted(unknown)
