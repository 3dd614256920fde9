"""eventseam's transactional outbox: table, writer, migrations and the relay to Kafka.

``Relay`` is imported on first use: it needs the ``kafka`` extra (aiokafka), the rest does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import flag_table as flag_table  # registers eventseam_flags on metadata
from . import inbox_table as inbox_table  # registers eventseam_inbox on metadata
from . import key_table as key_table  # registers eventseam_subject_keys on metadata
from .errors import KafkaSecurityError as KafkaSecurityError
from .errors import KafkaTLSError as KafkaTLSError
from .errors import MigrationError as MigrationError
from .errors import OutboxError as OutboxError
from .errors import OutsideTransactionError as OutsideTransactionError
from .errors import PermanentPublishError as PermanentPublishError
from .errors import PublishError as PublishError
from .errors import RowNotFoundError as RowNotFoundError
from .errors import SchemaError as SchemaError
from .errors import SchemaMissingError as SchemaMissingError
from .errors import SchemaOutOfDateError as SchemaOutOfDateError
from .errors import TopicMismatchError as TopicMismatchError
from .migrate import check_schema as check_schema
from .migrate import current as current
from .migrate import downgrade as downgrade
from .migrate import upgrade as upgrade
from .parked import ParkedRow as ParkedRow
from .parked import discard_parked as discard_parked
from .parked import list_parked as list_parked
from .parked import retry_all_parked as retry_all_parked
from .parked import retry_parked as retry_parked
from .table import Status as Status
from .table import metadata as metadata
from .writer import write as write
from .writer import write_async as write_async

if TYPE_CHECKING:
    from .relay import Relay as Relay

__all__ = [
    "KafkaSecurityError",
    "KafkaTLSError",
    "MigrationError",
    "OutboxError",
    "OutsideTransactionError",
    "ParkedRow",
    "PermanentPublishError",
    "PublishError",
    "Relay",
    "RowNotFoundError",
    "SchemaError",
    "SchemaMissingError",
    "SchemaOutOfDateError",
    "Status",
    "TopicMismatchError",
    "check_schema",
    "current",
    "discard_parked",
    "downgrade",
    "list_parked",
    "metadata",
    "retry_all_parked",
    "retry_parked",
    "upgrade",
    "write",
    "write_async",
]


def __getattr__(name: str) -> Any:
    if name == "Relay":
        from .relay import Relay

        return Relay
    raise AttributeError(f"module 'outbox' has no attribute {name!r}")
