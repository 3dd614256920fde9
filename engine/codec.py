"""Encoding events to Kafka-shaped records and back (CloudEvents Kafka binding, binary mode).

A record is ``key`` (the aggregate id, UTF-8), ``value`` (the event's own data as JSON) and
``headers`` (a list, never a tuple: OpenTelemetry's aiokafka instrumentation skips tuples):

    ce_specversion  "1.0"
    ce_id           event_id
    ce_type         wire name (orders.OrderPlaced)
    ce_source       publishing context
    ce_time         occurred_at, RFC 3339
    ce_subject      aggregate_id
    ce_dataversion  schema version (extension attribute)
    ce_correlationid, ce_causationid   when set (extension attributes)
    content-type    application/json
    traceparent     when set (W3C trace context)

The outbox stores exactly these headers, encoded once at write time in Kafka's own wire form
(engine.record_wire), so the relay copies them into record batches without re-encoding.

Encoding runs in every publishing transaction (bench/outbox_write.py), so it is built for speed:
the value comes from pydantic-core's JSON serializer when that gives json's bytes (see
``_serializes_like_json``), and the stored form of the headers (``encode_headers``) is written
in the same pass from per-class parts (``EncodedEvent.stored_headers``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError
from pydantic_core import from_json

from .errors import (
    CiphertextError,
    DecodeError,
    EventTooLargeError,
    PersonalDataError,
    UnknownEventError,
    UpcastError,
)
from .events import ENVELOPE_FIELDS
from .personal_data import has_plaintext, parse_sealed
from .record_wire import decode_headers as read_wire_headers
from .record_wire import encode_headers as encode_headers  # the form the outbox stores
from .record_wire import name_field, varint

if TYPE_CHECKING:
    import uuid
    from datetime import datetime

    from .events import DomainEvent
    from .registry import EventRegistry

Headers = list[tuple[str, bytes]]

DEFAULT_MAX_EVENT_BYTES = 256 * 1024
CONTENT_TYPE = b"application/json"

#: What ``json.dumps(data, separators=(",", ":"), ensure_ascii=False)`` builds on every call (it
#: makes a new encoder per call when given options); one shared instance gives the same bytes.
_PAYLOAD_JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event as bytes, ready for the outbox and for Kafka."""

    event_id: uuid.UUID
    event_type: str
    version: int
    context: str
    aggregate_id: str
    occurred_at: datetime
    key: bytes
    value: bytes
    headers: Headers
    #: ``encode_headers(headers)``, when ``encode`` built it (None: ``headers_blob`` computes it).
    #: Not an ``__init__`` argument: a copy made with ``dataclasses.replace`` (other headers,
    #: say) starts without it, so the blob never disagrees with ``headers``.
    stored_headers: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def size(self) -> int:
        """Bytes this record takes on the wire (key + value + headers)."""
        return len(self.key) + len(self.value) + sum(len(k) + len(v) for k, v in self.headers)

    def headers_blob(self) -> bytes:
        """The headers as the outbox stores them: exactly ``encode_headers(self.headers)``."""
        blob = self.stored_headers
        return blob if blob is not None else encode_headers(self.headers)


def encode(
    event: DomainEvent,
    *,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    data: dict[str, Any] | None = None,
) -> EncodedEvent:
    """Encode ``event``; raise EventTooLargeError when the record exceeds ``max_bytes``.

    The event's ``source`` must be set (the engine sets it at publish time). ``data`` replaces
    ``event.data()`` as the value: the sealed data of an event with personal-data fields
    (engine.crypto_events). Without it such an event raises PersonalDataError while a personal
    field holds plaintext, so plaintext never reaches the outbox, Kafka or a dead-letter store.
    The record's ``stored_headers`` is set (``encode_headers`` of its headers).
    """
    kind = type(event)
    if data is None:
        if kind.personal_fields and has_plaintext(event):
            raise PersonalDataError(
                f"{event.event_name} has personal-data fields: publish it through EventSeam "
                "(which seals them) or encode it with engine.crypto_events.encode_sealed",
                event_type=event.event_name,
            )
        if _serializes_like_json(kind):
            value = kind.__pydantic_serializer__.to_json(event, exclude=_ENVELOPE)
        else:
            value = _PAYLOAD_JSON.encode(event.data()).encode()
    else:
        value = _PAYLOAD_JSON.encode(data).encode()
    aggregate_id = event.aggregate_id
    key = aggregate_id.encode()
    event_id = str(event.event_id)
    occurred = event.occurred_at.isoformat()
    source = event.source or ""
    type_bytes, version_bytes, type_field, version_field = _type_parts(kind)
    id_bytes, source_bytes, time_bytes = event_id.encode(), source.encode(), occurred.encode()
    headers: Headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", id_bytes),
        ("ce_type", type_bytes),
        ("ce_source", source_bytes),
        ("ce_time", time_bytes),
        ("ce_subject", key),
        ("ce_dataversion", version_bytes),
        ("content-type", CONTENT_TYPE),
    ]
    # encode_headers(headers), written from the parts (the count goes first, once known)
    stored = [
        b"",
        _SPECVERSION_FIELD,
        _ID_NAME,
        varint(len(id_bytes)),
        id_bytes,
        type_field,
        _SOURCE_NAME,
        varint(len(source_bytes)),
        source_bytes,
        _TIME_NAME,
        varint(len(time_bytes)),
        time_bytes,
        _SUBJECT_NAME,
        varint(len(key)),
        key,
        version_field,
        _CONTENT_TYPE_FIELD,
    ]
    size = len(key) + len(value) + _FIXED_HEADER_BYTES + len(id_bytes) + len(type_bytes)
    size += len(source_bytes) + len(time_bytes) + len(key) + len(version_bytes)
    if event.correlation_id is not None:
        size += _append(headers, stored, "ce_correlationid", str(event.correlation_id))
    if event.causation_id is not None:
        size += _append(headers, stored, "ce_causationid", str(event.causation_id))
    if event.traceparent:
        size += _append(headers, stored, "traceparent", event.traceparent)
    if size > max_bytes:
        raise EventTooLargeError(event.event_name, event_id, size, max_bytes)
    stored[0] = varint(len(headers))
    record = EncodedEvent(
        event_id=event.event_id,
        event_type=event.event_name,
        version=event.event_version,
        context=source,
        aggregate_id=aggregate_id,
        occurred_at=event.occurred_at,
        key=key,
        value=value,
        headers=headers,
    )
    object.__setattr__(record, "stored_headers", b"".join(stored))
    return record


#: ``exclude`` of the value: the envelope fields (``DomainEvent.data`` leaves them out too).
_ENVELOPE: Final = set(ENVELOPE_FIELDS)
_SPECVERSION_FIELD: Final = name_field("ce_specversion") + varint(3) + b"1.0"
_CONTENT_TYPE_FIELD: Final = name_field("content-type") + varint(len(CONTENT_TYPE)) + CONTENT_TYPE
_ID_NAME: Final = name_field("ce_id")
_SOURCE_NAME: Final = name_field("ce_source")
_TIME_NAME: Final = name_field("ce_time")
_SUBJECT_NAME: Final = name_field("ce_subject")
#: Bytes of the headers whose name and value never change (names of the variable ones too).
_FIXED_HEADER_BYTES: Final = (
    sum(
        len(name)
        for name in ("ce_id", "ce_type", "ce_source", "ce_time", "ce_subject", "ce_dataversion")
    )
    + len("ce_specversion")
    + len(b"1.0")
    + len("content-type")
    + len(CONTENT_TYPE)
)


def _append(headers: Headers, stored: list[bytes], name: str, text: str) -> int:
    """Add header ``name`` = ``text`` to ``headers`` and its wire form to ``stored``; its size."""
    raw = text.encode()
    headers.append((name, raw))
    stored += (name_field(name), varint(len(raw)), raw)
    return len(name) + len(raw)


@functools.cache
def _type_parts(kind: type[DomainEvent]) -> tuple[bytes, bytes, bytes, bytes]:
    """(``ce_type`` value, ``ce_dataversion`` value, and the wire form of both headers) of a class."""
    name, version = kind.event_name.encode(), str(kind.event_version).encode()
    return (
        name,
        version,
        name_field("ce_type") + varint(len(name)) + name,
        name_field("ce_dataversion") + varint(len(version)) + version,
    )


#: Core schema types whose JSON pydantic-core writes differently from ``json`` (NaN, Infinity
#: and small floats such as 1e-07), or that may hold such values.
_UNLIKE_JSON: Final = frozenset({"float", "any", "complex", "json-or-python", "custom-error"})


@functools.cache
def _serializes_like_json(kind: type[DomainEvent]) -> bool:
    """True when pydantic-core's ``to_json`` of ``kind``'s data gives exactly json's bytes.

    ``json`` (with the compact separators, ``ensure_ascii=False``) of ``data()`` is the reference.
    The two differ only for floats (NaN / Infinity become ``null``; ``1e-07`` becomes ``1e-7``)
    and for custom serializers, which may return floats: a class whose schema holds any of them
    keeps the reference path.
    """
    return _plain_schema(kind.__pydantic_core_schema__)


def _plain_schema(schema: object) -> bool:
    """True when no part of a core schema is a float, Any, or custom serialization."""
    if isinstance(schema, dict):
        if schema.get("type") in _UNLIKE_JSON or "serialization" in schema:
            return False
        return all(_plain_schema(value) for value in schema.values())
    if isinstance(schema, list | tuple):
        return all(_plain_schema(value) for value in schema)
    return True


def decode_headers(blob: bytes) -> Headers:
    """Inverse of encode_headers; returns a list (never a tuple). ValueError when malformed.

    Also reads the JSON form earlier builds stored (see ``is_json_headers``): outbox and
    dead-letter rows written before the change are relayed and read as they are.
    """
    if is_json_headers(blob):
        return [(k, v.encode("latin-1")) for k, v in json.loads(blob)]
    return read_wire_headers(blob)


def is_json_headers(blob: bytes) -> bool:
    """True for headers an earlier build stored as JSON (``[["name","value"],...]``, values as
    latin-1 strings); a headers section never starts with ``[`` (a count's zigzag varint is even)."""
    return blob[:1] == b"["


def _header_map(headers: Any) -> dict[str, bytes]:
    """Header name -> value as bytes; the last of repeated names wins, a null value is empty.

    DecodeError (bad-header) when ``headers`` is not a sequence of (name, bytes-like) pairs.
    """
    result: dict[str, bytes] = {}
    try:
        for item in headers or ():
            name, raw = item
            result[str(name)] = bytes(raw) if raw is not None else b""
    except (TypeError, ValueError) as exc:
        raise DecodeError("bad-header", f"headers are not (name, value) pairs: {exc}") from exc
    return result


_EMPTY: Final = b""


def _required(found: dict[str, bytes], name: str) -> str:
    raw = found.get(name)
    if raw is None:
        raise DecodeError(
            "missing-event-id" if name == "ce_id" else "missing-header",
            f"header {name!r} is missing",
        )
    return raw.decode("utf-8", errors="strict")


def decode(
    registry: EventRegistry, key: bytes | None, value: bytes | None, headers: Any
) -> DomainEvent:
    """Turn a record back into an event, upcasting older versions.

    Raises DecodeError with a reason tag for every malformed input; never anything else.
    The consume hot path: the header map is built once (``dict`` of the pairs, normalized only
    when a value turns out not to be bytes), the value parsed by pydantic-core's JSON parser
    and the event validated once by its class's validator.
    """
    try:
        found = dict(headers or ())
    except (TypeError, ValueError):  # not (name, value) pairs: the general path reports it
        return _decode(registry, key, value, _header_map(headers))
    try:
        return _decode(registry, key, value, found)
    except AttributeError:  # a header value without .decode (null, memoryview...): normalize
        return _decode(registry, key, value, _header_map(headers))


def _decode(
    registry: EventRegistry, key: bytes | None, value: bytes | None, found: dict[str, bytes]
) -> DomainEvent:
    """``decode`` on a header map."""
    get = found.get
    try:
        event_type = _required(found, "ce_type")
        event_id = _required(found, "ce_id")
        raw_version = get("ce_dataversion")
        version = 1 if raw_version is None else int(raw_version.decode())
    except DecodeError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise DecodeError("bad-header", f"unreadable CloudEvents header: {exc}") from exc
    try:
        data = from_json(value or _EMPTY)
    except ValueError as exc:
        raise DecodeError(
            "bad-json", f"value of {event_type} {event_id} is not JSON: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise DecodeError("bad-json", f"value of {event_type} {event_id} is not a JSON object")
    try:  # a registered version needs no upcast (and no copy of ``data``)
        event_class = registry.resolve(event_type, version)
    except UnknownEventError:
        event_class, data = _upcast(registry, event_type, version, data)
    known = event_class.__pydantic_fields__
    if not data.keys() <= known.keys():  # open for readers: drop what this version lacks
        data = {name: value for name, value in data.items() if name in known}
    if event_class.personal_fields:  # left sealed: the consumer opens them (crypto_events)
        try:
            data = parse_sealed(event_class.personal_fields, data)
        except CiphertextError as exc:
            raise DecodeError("bad-personal-data", f"{event_type} {event_id}: {exc}") from exc
    data["event_id"] = event_id
    try:
        _envelope(data, key, found)
    except UnicodeDecodeError as exc:
        raise DecodeError("bad-header", f"unreadable key or CloudEvents header: {exc}") from exc
    try:
        event: DomainEvent = event_class.__pydantic_validator__.validate_python(data)
    except ValidationError as exc:
        raise DecodeError("schema-mismatch", f"{event_type} v{version} {event_id}: {exc}") from exc
    return event


def _upcast(
    registry: EventRegistry, event_type: str, version: int, data: dict[str, Any]
) -> tuple[type[DomainEvent], dict[str, Any]]:
    """``registry.upcast``, its errors as DecodeError (unknown-type or unknown-version)."""
    try:
        return registry.upcast(event_type, version, data)
    except UnknownEventError as exc:
        reason = (
            "unknown-version"
            if event_type in {e.event_name for e in registry.events()}
            else "unknown-type"
        )
        raise DecodeError(reason, str(exc)) from exc
    except UpcastError as exc:
        raise DecodeError("unknown-version", str(exc)) from exc


def _envelope(data: dict[str, Any], key: bytes | None, found: dict[str, bytes]) -> None:
    """Set the envelope fields but ``event_id`` from the key and the headers (strict UTF-8).

    An empty header counts as absent; a missing ``ce_time`` leaves ``occurred_at`` unset.
    """
    get = found.get
    occurred_at = get("ce_time")
    if occurred_at:
        data["occurred_at"] = occurred_at.decode()
    data["aggregate_id"] = (key.decode() if key else "") or get("ce_subject", _EMPTY).decode()
    source = get("ce_source")
    data["source"] = source.decode() if source else None
    correlation = get("ce_correlationid")
    data["correlation_id"] = correlation.decode() if correlation else None
    causation = get("ce_causationid")
    data["causation_id"] = causation.decode() if causation else None
    traceparent = get("traceparent")
    data["traceparent"] = traceparent.decode() if traceparent else None
