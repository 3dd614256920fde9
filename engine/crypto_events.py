"""Sealing events' personal-data fields for the outbox, and opening them for handlers.

- ``seal_events`` (EventSeam.prepare, in the publish transaction: its SQLAlchemy connection, or
  a KeyExecutor of it such as Django's cursor, engine.crypto_keys): the data dict of each event
  with personal fields, every such field replaced by its envelope (the value's JSON, AES-GCM
  with the subject's current key, aad = event id + wire name + field name). Events without
  personal fields get None and cost nothing more than one tuple check.
- ``open_events`` (the consumer runner, in the handler's transaction): events whose fields hold
  ``Sealed`` values (engine.codec.decode leaves them so) come back with the plaintext, or with
  ``Erased`` where the subject's key version was shredded. One key query per call.
- ``encode_sealed``: ``engine.codec.encode`` for an event that may carry personal data (a
  store that persists events, such as a dead-letter table, must use it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .codec import DEFAULT_MAX_EVENT_BYTES, encode
from .crypto import open_sealed, seal, value_aad
from .errors import CiphertextError
from .personal_data import Erased, Sealed

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Connection

    from .codec import EncodedEvent
    from .crypto_keys import KeyExecutor, SubjectKeys
    from .events import DomainEvent

__all__ = ["encode_sealed", "open_events", "seal_events"]


def seal_events(
    keys: SubjectKeys, connection: Connection | KeyExecutor, events: Sequence[DomainEvent]
) -> list[dict[str, Any] | None]:
    """For each event, its data with personal fields sealed; None for events without any."""
    subjects = {
        field.subject_of(event)
        for event in events
        for field in type(event).personal_fields
        if not isinstance(getattr(event, field.name), Sealed | Erased)
    }
    if not subjects:
        return [None] * len(events)
    current = keys.current(connection, subjects)
    sealed: list[dict[str, Any] | None] = []
    for event in events:
        fields = type(event).personal_fields
        if not fields:
            sealed.append(None)
            continue
        data = event.data()  # Sealed and Erased values are already their envelopes here
        for field in fields:
            value = getattr(event, field.name)
            if isinstance(value, Sealed | Erased):
                continue
            version, key = current[field.subject_of(event)]
            plaintext = field.adapter.dump_json(value)
            aad = value_aad(event.event_id, event.event_name, field.name)
            data[field.name] = seal(key, version, plaintext, aad)
        sealed.append(data)
    return sealed


def encode_sealed(
    keys: SubjectKeys | None,
    connection: Connection | None,
    event: DomainEvent,
    *,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> EncodedEvent:
    """``encode(event)`` with its personal fields sealed (keys and connection needed then)."""
    if keys is None or connection is None or not type(event).personal_fields:
        return encode(event, max_bytes=max_bytes)
    (data,) = seal_events(keys, connection, [event])
    return encode(event, max_bytes=max_bytes, data=data)


def open_events(
    keys: SubjectKeys, connection: Connection | KeyExecutor, events: Sequence[DomainEvent]
) -> list[DomainEvent]:
    """``events`` with ``Sealed`` fields opened (plaintext) or ``Erased`` (key shredded).

    Raises MasterKeyError when the master key does not unwrap a stored key, CiphertextError
    when a value fails authentication or its plaintext does not fit the field's type.
    """
    wanted = {
        (field.subject_of(event), value.key_version)
        for event in events
        for field in type(event).personal_fields
        if isinstance(value := getattr(event, field.name), Sealed)
    }
    if not wanted:
        return list(events)
    found = keys.lookup(connection, wanted)
    return [_opened(event, found) for event in events]


def _opened(event: DomainEvent, found: dict[tuple[str, int], bytes | None]) -> DomainEvent:
    updates: dict[str, Any] = {}
    for field in type(event).personal_fields:
        value = getattr(event, field.name)
        if not isinstance(value, Sealed):
            continue
        subject = field.subject_of(event)
        key = found.get((subject, value.key_version))
        if key is None:
            updates[field.name] = Erased(field.name, subject, value.key_version, value.envelope)
            continue
        aad = value_aad(event.event_id, event.event_name, field.name)
        plaintext = open_sealed(key, value, aad)
        try:
            updates[field.name] = field.adapter.validate_json(plaintext)
        except ValidationError as exc:
            raise CiphertextError(
                f"{event.event_name} {event.event_id}: the opened value of {field.name!r} does "
                f"not fit the field's type: {exc}",
                event_type=event.event_name,
                field=field.name,
            ) from exc
    return event.model_copy(update=updates) if updates else event
