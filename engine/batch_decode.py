"""Decoding a fetched batch of records with one pydantic-core call per event class.

The consumer runner decodes every fetched record (engine.codec.decode: header map, JSON parse,
envelope, one validation each). ``BatchDecoder.decode`` gives the same events with less Python
per record for the common case: for the records of a registered class without personal-data
fields (no upcast, nothing to leave sealed), it splices each record's envelope (from its
CloudEvents headers) into its JSON value and validates all of them in ONE
``TypeAdapter(list[EventClass]).validate_json`` call.

Contract: the result is, record by record, what ``engine.codec.decode`` gives (an event, or the
DecodeError it raises), or None for a record whose ``ce_type`` is in ``skip``. Anything the
splice cannot take as is goes through ``codec.decode`` on its own: a header value that would need
JSON escaping (``"`` or ``\\``), a value not shaped ``{...}``, a missing ``ce_id``, headers that
are not (name, bytes) pairs. When the batch call fails (one malformed record, an unknown field
a newer producer added, ...), every record of that call is decoded on its own, so a malformed
record gets its own precise DecodeError and its neighbours decode as usual. A class whose batch
call failed is decoded record by record for the next ``RETRY_AFTER`` batches (a producer that
adds a field would otherwise make every batch pay twice).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from pydantic import TypeAdapter, ValidationError

from .codec import decode
from .errors import DecodeError, UnknownEventError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .consumer import Record
    from .events import DomainEvent
    from .registry import EventRegistry

#: Batches a class is decoded record by record after its batch call failed.
RETRY_AFTER: Final = 64

_LEFT_BRACE: Final = ord("{")
_RIGHT_BRACE: Final = ord("}")
_QUOTE: Final = b'"'
_NULL: Final = b"null"
#: The envelope members appended to a value (``%b``: event_id, aggregate_id, then source,
#: correlation_id, causation_id, traceparent as JSON (quoted or null), then occurred_at's member).
_ENVELOPE: Final = (
    b'"event_id":"%b","aggregate_id":"%b","source":%b,"correlation_id":%b,'
    b'"causation_id":%b,"traceparent":%b%b}'
)
#: Quotes in ``_ENVELOPE`` with every optional member null and no occurred_at.
_FIXED_QUOTES: Final = 16


class _Plan:
    """How the records of one (type, version) header pair decode."""

    __slots__ = ("adapter", "event_class", "skipped_batches")

    def __init__(self, event_class: type[DomainEvent] | None) -> None:
        #: None: decode record by record (unknown, upcast or personal-data class).
        self.event_class = event_class
        self.adapter: TypeAdapter[list[DomainEvent]] | None = None
        self.skipped_batches = 0


class BatchDecoder:
    """Decodes fetched batches for one registry (see the module docstring for the contract).

    Not thread safe: one per handler loop. Register every event class before the first batch.
    """

    def __init__(self, registry: EventRegistry, skip: frozenset[str] = frozenset()) -> None:
        self.registry = registry
        self._skip = frozenset(name.encode() for name in skip)
        self._plans: dict[tuple[bytes, bytes], _Plan] = {}

    def decode(self, records: Sequence[Record]) -> list[DomainEvent | DecodeError | None]:
        """One result per record, in order (see the module docstring)."""
        results: list[DomainEvent | DecodeError | None] = [None] * len(records)
        groups: dict[_Plan, tuple[list[int], list[bytes]]] = {}
        skip, plans = self._skip, self._plans
        for index, record in enumerate(records):
            try:
                found = dict(record.headers)
                kind = found.get("ce_type", b"")
                if kind in skip:
                    continue
                plan = plans.get((kind, found.get("ce_dataversion", b"1")))
                if plan is None:
                    plan = self._plan(kind, found.get("ce_dataversion", b"1"))
                part = None if plan.skipped_batches else _spliced(record.key, record.value, found)
            except (TypeError, ValueError, AttributeError):
                part = plan = None  # not (name, bytes) pairs: codec.decode reports it
            if part is None or plan is None:
                results[index] = self._one(record)
                continue
            group = groups.get(plan)
            if group is None:
                group = groups[plan] = ([], [])
            group[0].append(index)
            group[1].append(part)
        for plan, (indexes, parts) in groups.items():
            self._validate(plan, indexes, parts, records, results)
        for plan in plans.values():
            if plan.skipped_batches:
                plan.skipped_batches -= 1
        return results

    def _plan(self, kind: bytes, version: bytes) -> _Plan:
        """The plan of a header pair, made once: a splice plan for a plain registered class."""
        try:
            event_class: type[DomainEvent] | None = self.registry.resolve(
                kind.decode(), int(version)
            )
        except (UnknownEventError, UnicodeDecodeError, ValueError):
            event_class = None
        if event_class is not None and event_class.personal_fields:
            event_class = None
        plan = self._plans[(kind, version)] = _Plan(event_class)
        return plan

    def _validate(
        self,
        plan: _Plan,
        indexes: list[int],
        parts: list[bytes],
        records: Sequence[Record],
        results: list[DomainEvent | DecodeError | None],
    ) -> None:
        """One validation for a class's records; each on its own when it fails."""
        if plan.event_class is None:
            for index in indexes:
                results[index] = self._one(records[index])
            return
        if plan.adapter is None:
            plan.adapter = TypeAdapter(list[plan.event_class])  # type: ignore[name-defined]
        try:
            events = plan.adapter.validate_json(b"[" + b",".join(parts) + b"]")
        except ValidationError:
            plan.skipped_batches = RETRY_AFTER + 1  # this batch's decrement included
            for index in indexes:
                results[index] = self._one(records[index])
            return
        for index, event in zip(indexes, events, strict=True):
            results[index] = event

    def _one(self, record: Record) -> DomainEvent | DecodeError:
        try:
            return decode(self.registry, record.key, record.value, record.headers)
        except DecodeError as exc:
            return exc


def _spliced(key: bytes | None, value: bytes | None, found: dict[str, bytes]) -> bytes | None:
    """``value`` with the envelope members added (JSON text), or None when it cannot be spliced.

    The header values go into JSON strings unescaped, so a value holding a quote or a backslash
    is refused (counted, not searched per header). Empty headers count as absent, as in decode.
    """
    if not value or value[0] != _LEFT_BRACE or value[-1] != _RIGHT_BRACE:
        return None
    get = found.get
    ident = get("ce_id")
    if not ident:
        return None
    quotes = _FIXED_QUOTES
    source, correlation = get("ce_source"), get("ce_correlationid")
    causation, traceparent = get("ce_causationid"), get("traceparent")
    when = get("ce_time")
    if source:
        source, quotes = _QUOTE + source + _QUOTE, quotes + 2
    if correlation:
        correlation, quotes = _QUOTE + correlation + _QUOTE, quotes + 2
    if causation:
        causation, quotes = _QUOTE + causation + _QUOTE, quotes + 2
    if traceparent:
        traceparent, quotes = _QUOTE + traceparent + _QUOTE, quotes + 2
    if when:
        when, quotes = b',"occurred_at":"' + when + _QUOTE, quotes + 4
    envelope = _ENVELOPE % (
        ident,
        key or get("ce_subject") or b"",
        source or _NULL,
        correlation or _NULL,
        causation or _NULL,
        traceparent or _NULL,
        when or b"",
    )
    if envelope.count(_QUOTE) != quotes or b"\\" in envelope:
        return None
    return value[:-1] + envelope if len(value) == 2 else value[:-1] + b"," + envelope
