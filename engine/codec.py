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

The outbox stores exactly these bytes, encoded once at write time, so the relay never re-encodes.
"""

from __future__ import annotations

import json
import json.encoder
from dataclasses import dataclass
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
from .personal_data import has_plaintext, parse_sealed

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
#: The string encoder json.dumps uses with ensure_ascii=True (the C one when available).
_quote: Final = json.encoder.encode_basestring_ascii


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

    @property
    def size(self) -> int:
        """Bytes this record takes on the wire (key + value + headers)."""
        return len(self.key) + len(self.value) + sum(len(k) + len(v) for k, v in self.headers)


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
    """
    if data is None:
        if type(event).personal_fields and has_plaintext(event):
            raise PersonalDataError(
                f"{event.event_name} has personal-data fields: publish it through EventSeam "
                "(which seals them) or encode it with engine.crypto_events.encode_sealed",
                event_type=event.event_name,
            )
        data = event.data()
    value = _PAYLOAD_JSON.encode(data).encode()
    key = event.aggregate_id.encode()
    headers: Headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", str(event.event_id).encode()),
        ("ce_type", event.event_name.encode()),
        ("ce_source", (event.source or "").encode()),
        ("ce_time", event.occurred_at.isoformat().encode()),
        ("ce_subject", key),
        ("ce_dataversion", str(event.event_version).encode()),
        ("content-type", CONTENT_TYPE),
    ]
    if event.correlation_id is not None:
        headers.append(("ce_correlationid", str(event.correlation_id).encode()))
    if event.causation_id is not None:
        headers.append(("ce_causationid", str(event.causation_id).encode()))
    if event.traceparent:
        headers.append(("traceparent", event.traceparent.encode()))
    record = EncodedEvent(
        event_id=event.event_id,
        event_type=event.event_name,
        version=event.event_version,
        context=event.source or "",
        aggregate_id=event.aggregate_id,
        occurred_at=event.occurred_at,
        key=key,
        value=value,
        headers=headers,
    )
    size = record.size
    if size > max_bytes:
        raise EventTooLargeError(event.event_name, str(event.event_id), size, max_bytes)
    return record


def encode_headers(headers: Headers) -> bytes:
    """Pack headers into one bytes value for storage (JSON object of latin-1 strings).

    The bytes are exactly ``json.dumps([[k, v.decode("latin-1")], ...], separators=(",", ":"))``,
    written out with json's own string encoder (about 3x faster than building the lists).
    """
    pairs = ",".join([f"[{_quote(k)},{_quote(v.decode('latin-1'))}]" for k, v in headers])
    return f"[{pairs}]".encode()


def decode_headers(blob: bytes) -> Headers:
    """Inverse of encode_headers; returns a list (never a tuple)."""
    return [(k, v.encode("latin-1")) for k, v in json.loads(blob)]


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
