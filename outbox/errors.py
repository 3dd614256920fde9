"""Errors raised by the outbox writer, migrations and the relay.

    OutboxError
    ├── OutsideTransactionError   writer called on a session/connection with no open transaction
    ├── MigrationError            the outbox schema cannot be created or upgraded
    ├── TopicMismatchError        an existing topic differs from its configured partitions/settings
    ├── PublishError              the broker refused or failed a send (``retriable`` says if it may pass)
    │   └── PermanentPublishError  the row cannot be published as is (too large, unauthorized, ...)
    ├── RowNotFoundError          an operator command names an outbox row that does not exist
    ├── KafkaSecurityError        TLS/SASL settings cannot be used (file, key password, token provider)
    │   └── KafkaTLSError         the broker's certificate is refused (untrusted CA, wrong host name)
    └── SchemaError               the database's eventseam schema does not fit the code (start-up)
        ├── SchemaOutOfDateError  at an older revision than the code
        └── SchemaMissingError    eventseam's tables are not there (migrations never ran)

Append new classes at the end; keep this tree up to date.
"""

from __future__ import annotations

from typing import ClassVar

from engine.errors import EngineError, TransactionError


class OutboxError(EngineError):
    """Root of outbox errors."""


class OutsideTransactionError(OutboxError, TransactionError):
    """Raised by the writer when the session or connection has no open transaction."""


class MigrationError(OutboxError):
    """Raised by outbox.migrate when the schema cannot be created or upgraded."""


class TopicMismatchError(OutboxError):
    """Raised (or logged) by the relay when an existing topic differs from its settings."""

    def __init__(self, topic: str, detail: str) -> None:
        self.topic, self.detail = topic, detail
        super().__init__(f"topic {topic!r} exists but differs from its settings: {detail}")


class PublishError(OutboxError):
    """Raised by a Publisher when a send failed; ``retriable`` says whether a retry may succeed."""

    retriable: ClassVar[bool] = True

    def __init__(self, topic: str, reason: str) -> None:
        self.topic, self.reason = topic, reason
        super().__init__(f"publishing to {topic!r} failed: {reason}")


class PermanentPublishError(PublishError):
    """A send that will fail again for the same row (too large, unauthorized, unserializable)."""

    retriable: ClassVar[bool] = False


class RowNotFoundError(OutboxError, LookupError):
    """Raised by operator commands (parked retry/discard) for an id that is not in the outbox."""

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        super().__init__(f"no outbox row with id {event_id}")


class KafkaSecurityError(OutboxError):
    """Raised when building a Kafka client from TLS/SASL settings that cannot be used.

    ``setting`` names the setting to fix (``kafka.ssl_keyfile``...). Never retriable: the relay
    and the consumer runner stop instead of retrying a configuration that cannot work. Messages
    never carry a secret.
    """

    def __init__(self, setting: str, reason: str) -> None:
        self.setting, self.reason = setting, reason
        super().__init__(f"{setting}: {reason}")


class KafkaTLSError(KafkaSecurityError):
    """Raised by client start-up when the TLS handshake with a broker fails verification.

    ``server`` is the ``host:port`` that was tried; the reason is the TLS library's (untrusted
    certificate authority, host name mismatch, expired certificate...).
    """

    def __init__(self, server: str, reason: str, setting: str = "kafka.ssl_cafile") -> None:
        self.server = server
        super().__init__(setting, f"TLS handshake with {server} failed: {reason}")


class SchemaError(OutboxError):
    """The database's eventseam schema does not fit this code; ``eventseam relay`` and
    ``eventseam worker`` exit with status 2 on it. ``database`` has its password hidden."""

    database: str


class SchemaOutOfDateError(SchemaError):
    """Raised by outbox.migrate.require_schema (``eventseam relay``/``worker`` start-up) when the
    database's eventseam schema is at an older revision than this code's head.

    ``database`` is the URL with its password hidden. Fix: run ``eventseam db upgrade``.
    """

    def __init__(self, database: str, current: str, expected: str) -> None:
        self.database, self.current, self.expected = database, current, expected
        super().__init__(
            f"the eventseam schema of {database} is at revision {current}, but this code "
            f"expects revision {expected}: run `eventseam db upgrade` before starting"
        )


class SchemaMissingError(SchemaError):
    """Raised at a process start on a database without eventseam's tables (migrations never
    ran): ``table`` was not found in ``database`` (the URL with its password hidden).

    Fix: run ``eventseam db upgrade`` (Django: ``python manage.py migrate``; Flask:
    ``flask eventseam db upgrade``).
    """

    def __init__(self, database: str, table: str) -> None:
        self.database, self.table = database, table
        super().__init__(
            f"table {table} does not exist in {database}: create eventseam's tables before "
            "starting (`eventseam db upgrade`; Django: `python manage.py migrate`; Flask: "
            "`flask eventseam db upgrade`)"
        )
