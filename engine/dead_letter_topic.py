"""Dead-letter records: what the consumer runner writes to a dead-letter topic; reading them back.

A dead-letter record keeps the original key, value and headers byte for byte and appends these
headers (UTF-8 values; headers of an earlier dead-lettering, as on a replayed record, are replaced):

    dlq_reason             "handler-failed", or the DecodeError reason tag of a malformed record
                           (bad-json, unknown-type, unknown-version, missing-event-id,
                           missing-header, bad-header, schema-mismatch)
    dlq_handler            durable handler name (``<context>.<name>``)
    dlq_group              consumer group id
    dlq_attempts           handler attempts made (0: the record never reached the handler)
    dlq_original_topic     where the record was read
    dlq_original_partition
    dlq_original_offset
    dlq_original_timestamp milliseconds since the epoch, as Kafka gave it
    dlq_exception_type     qualified class name of the last error
    dlq_exception_message  its message, cut to MAX_MESSAGE_BYTES
    dlq_failed_at          RFC 3339, UTC
    dlq_value_dropped      only when the broker refused the full record: the original value size

Topic: ``ConsumerSettings.dlq_topic_template``, by default ``"{prefix}dlq.{handler}"``: one topic
per handler. Every handler has its own consumer group, so a malformed record is seen by each
handler of its topic; per-handler topics keep one dead letter per (record, handler), let a
replay feed exactly the handler that failed, and let a detached worker own its topics. The key is
kept, so a dead letter lands on the partition of its aggregate.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from .errors import SettingsError
from .types import Message

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .consumer import Record

HANDLER_FAILED: Final = "handler-failed"
"""``dlq_reason`` of a record whose handler failed on every attempt."""

HEADER_PREFIX: Final = "dlq_"
MAX_MESSAGE_BYTES: Final = 2_048
TEMPLATE_FIELDS: Final = frozenset({"prefix", "handler", "context", "topic"})
_LEGAL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class DeadLetterTopics:
    """Names dead-letter topics from a template (see the module docstring); cached."""

    def __init__(self, template: str, prefix: str) -> None:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        if fields - TEMPLATE_FIELDS:
            raise SettingsError(
                f"dlq_topic_template uses unknown fields {sorted(fields - TEMPLATE_FIELDS)}; "
                f"known: {sorted(TEMPLATE_FIELDS)}"
            )
        self.template, self.prefix = template, prefix
        self._cache: dict[tuple[str, str, str], str] = {}

    def __call__(self, handler: str, context: str, topic: str) -> str:
        """The dead-letter topic of ``handler`` for records read from ``topic``."""
        key = (handler, context, topic)
        name = self._cache.get(key)
        if name is None:
            name = self.template.format(
                prefix=self.prefix, handler=handler, context=context, topic=topic
            )
            if not _LEGAL_NAME.match(name) or name in {".", ".."}:
                raise SettingsError(
                    f"dead-letter topic name {name!r} is not a legal Kafka topic name"
                )
            self._cache[key] = name
        return name


def error_type(error: BaseException) -> str:
    """Qualified class name of ``error`` (builtins without their module)."""
    cls = type(error)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def dead_letter_message(
    record: Record,
    *,
    reason: str,
    handler: str,
    group: str,
    attempts: int,
    error: BaseException,
    drop_value: bool = False,
) -> Message:
    """The dead-letter record of ``record``: original key/value/headers plus ``dlq_*`` headers."""
    value = record.value if record.value is not None else b""
    headers = original_headers(record.headers)
    message = str(error).encode()[:MAX_MESSAGE_BYTES]
    added = {
        "reason": reason,
        "handler": handler,
        "group": group,
        "attempts": str(attempts),
        "original_topic": record.topic,
        "original_partition": str(record.partition),
        "original_offset": str(record.offset),
        "original_timestamp": str(record.timestamp),
        "exception_type": error_type(error),
        "failed_at": datetime.now(UTC).isoformat(),
    }
    headers.extend((HEADER_PREFIX + name, text.encode()) for name, text in added.items())
    headers.append((HEADER_PREFIX + "exception_message", message))
    if drop_value:
        headers.append((HEADER_PREFIX + "value_dropped", str(len(value)).encode()))
        value = b""
    return Message(key=record.key, value=value, headers=headers)


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """The ``dlq_*`` headers of a dead-letter record, parsed."""

    reason: str
    handler: str
    group: str
    attempts: int
    original_topic: str
    original_partition: int
    original_offset: int
    exception_type: str
    exception_message: str
    failed_at: datetime


def read_dead_letter(headers: Sequence[tuple[str, bytes]]) -> DeadLetterInfo:
    """Parse the ``dlq_*`` headers of a dead-letter record (KeyError when one is missing)."""
    found = {k[len(HEADER_PREFIX) :]: v.decode() for k, v in headers if k.startswith(HEADER_PREFIX)}
    return DeadLetterInfo(
        reason=found["reason"],
        handler=found["handler"],
        group=found["group"],
        attempts=int(found["attempts"]),
        original_topic=found["original_topic"],
        original_partition=int(found["original_partition"]),
        original_offset=int(found["original_offset"]),
        exception_type=found["exception_type"],
        exception_message=found["exception_message"],
        failed_at=datetime.fromisoformat(found["failed_at"]),
    )


def is_dead_letter_of(headers: Sequence[tuple[str, bytes]], handler: str, record: Record) -> bool:
    """True when ``headers`` are ``handler``'s dead-letter headers of ``record`` (its coordinates)."""
    wanted = {
        HEADER_PREFIX + "handler": handler.encode(),
        HEADER_PREFIX + "original_topic": record.topic.encode(),
        HEADER_PREFIX + "original_partition": str(record.partition).encode(),
        HEADER_PREFIX + "original_offset": str(record.offset).encode(),
    }
    found = {key: value for key, value in headers if key in wanted}
    return found == wanted


def original_headers(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The record's own headers without the ``dlq_*`` ones (what a replay sends again)."""
    return [(k, v) for k, v in headers if not k.startswith(HEADER_PREFIX)]
