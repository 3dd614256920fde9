"""Personal data in events: the ``PersonalData`` marker, the sealed envelope and ``Erased``.

Mark a field of an event as personal data of a data subject named by another field::

    class CustomerRegistered(DomainEvent, name="crm.CustomerRegistered", version=1):
        customer_id: str
        email: Annotated[str, PersonalData(subject="customer_id")]

Contract:

- The field is sealed (AES-256-GCM, engine.crypto) with the subject's current key by
  ``EventSeam.prepare`` before it enters the outbox: the outbox row, the Kafka record, dead-letter
  records and replays carry only the envelope string
  ``pd1.<key version>.<nonce, base64url>.<ciphertext + tag, base64url>``. The additional data
  binds the event id, the wire name and the field name. The subject field stays clear text.
- Handlers run by the consumer runner receive the plaintext, opened with the subject's key from
  the key table (outbox/key_table.py). Handlers on the in-memory bus receive the published
  object itself (never encrypted: it never leaves the process).
- After the subject's keys were shredded (``eventseam erase --subject``), the field holds an
  ``Erased`` value instead: ``isinstance(event.email, Erased)`` (or ``is_erased``). Every other
  field of the event stays readable. A handler of a personal-data event must expect ``Erased``
  in place of the declared type; annotate ``Annotated[str | Erased, PersonalData(...)]`` to
  have the type checker remind you.
- ``PersonalData`` comes last in ``Annotated[...]`` (after constraints such as
  ``Field(max_length=...)``, which apply to the plaintext only).
- Only top-level fields of an event can be marked; the subject field must be a plain field
  (not personal data itself). Which fields of a class are personal is decided once, when the
  class is created (``DomainEvent.personal_fields``): events without any pay nothing.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeGuard

from pydantic import TypeAdapter
from pydantic_core import core_schema

from .errors import CiphertextError, EventDefinitionError, PersonalDataError

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
    from pydantic.fields import FieldInfo
    from pydantic.json_schema import JsonSchemaValue

    from .events import DomainEvent

__all__ = [
    "ENVELOPE_PATTERN",
    "Erased",
    "PersonalData",
    "PersonalField",
    "Sealed",
    "find_personal_fields",
    "has_plaintext",
    "is_erased",
    "parse_sealed",
]

ENVELOPE_PREFIX: Final = "pd1"
#: The JSON Schema pattern of a sealed value (12-byte nonce, ciphertext with its 16-byte tag).
ENVELOPE_PATTERN: Final = r"^pd1\.[1-9][0-9]*\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{22,}$"
_ENVELOPE: Final = re.compile(ENVELOPE_PATTERN)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Sealed:
    """A personal-data value still encrypted (decoded from a record, not opened yet)."""

    key_version: int
    nonce: bytes
    ciphertext: bytes

    @property
    def envelope(self) -> str:
        """The wire form: ``pd1.<key version>.<nonce>.<ciphertext>``."""
        return f"{ENVELOPE_PREFIX}.{self.key_version}.{_b64(self.nonce)}.{_b64(self.ciphertext)}"

    @classmethod
    def parse(cls, envelope: str) -> Sealed:
        """Parse an envelope string; CiphertextError when it is not one."""
        if not _ENVELOPE.match(envelope):
            raise CiphertextError(f"not a personal-data envelope: {envelope[:40]!r}")
        _, version, nonce, ciphertext = envelope.split(".")
        try:
            return cls(int(version), _unb64(nonce), _unb64(ciphertext))
        except (binascii.Error, ValueError) as exc:
            raise CiphertextError(f"malformed personal-data envelope: {exc}") from exc

    def __repr__(self) -> str:
        return f"Sealed(key_version={self.key_version})"


@dataclass(frozen=True, slots=True)
class Erased:
    """Stands in for a personal-data value whose subject's keys were shredded.

    ``field`` and ``subject`` say what was erased; ``envelope`` is the unreadable ciphertext,
    kept so that re-encoding the event writes the same bytes. Falsy, and prints as ``<erased>``.
    """

    field: str
    subject: str
    key_version: int
    envelope: str

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return "<erased>"

    def __repr__(self) -> str:
        return f"Erased(field={self.field!r}, subject={self.subject!r})"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Lets ``Erased`` appear in a field's declared type (``str | Erased``)."""
        return core_schema.is_instance_schema(
            cls,
            serialization=core_schema.plain_serializer_function_ser_schema(_serialize_protected),
        )


def is_erased(value: object) -> TypeGuard[Erased]:
    """True when ``value`` is the ``Erased`` stand-in of a shredded personal-data value."""
    return isinstance(value, Erased)


def _serialize_protected(value: Sealed | Erased) -> str:
    """Sealed and erased values serialize to their envelope (the unreadable ciphertext)."""
    return value.envelope


def _validate(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
    if isinstance(value, Sealed | Erased):
        return value
    return handler(value)


def _serialize(value: Any, handler: core_schema.SerializerFunctionWrapHandler) -> Any:
    if isinstance(value, Sealed | Erased):
        return value.envelope
    return handler(value)


@dataclass(frozen=True, slots=True)
class PersonalData:
    """Marks an event field as personal data of the subject named by the field ``subject``.

    The field accepts its declared type, plus ``Sealed`` (decoded, not opened yet) and
    ``Erased`` (the subject's keys were shredded). Its JSON Schema is the envelope string.
    """

    subject: str

    def __get_pydantic_core_schema__(
        self, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_wrap_validator_function(
            _validate,
            handler(source),
            serialization=core_schema.wrap_serializer_function_ser_schema(_serialize),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "pattern": ENVELOPE_PATTERN,
            "description": (
                f"personal data of the subject named by {self.subject!r}, sealed with "
                "AES-256-GCM (eventseam personal-data envelope)"
            ),
            "x-eventseam-personal-data": {"subject": self.subject},
        }


@dataclass(frozen=True, slots=True)
class PersonalField:
    """One personal-data field of an event class: its subject field and its value adapter."""

    name: str
    subject: str
    adapter: TypeAdapter[Any]

    def subject_of(self, event: DomainEvent) -> str:
        """The data subject of ``event`` for this field (its subject field, as text)."""
        value = getattr(event, self.subject)
        if value is None or value == "":
            raise PersonalDataError(
                f"{event.event_name} {event.event_id}: field {self.name!r} is personal data of "
                f"the subject in {self.subject!r}, which is empty"
            )
        return str(value)


def find_personal_fields(event_type: type[DomainEvent]) -> tuple[PersonalField, ...]:
    """The personal-data fields of ``event_type``; EventDefinitionError when one is misdeclared.

    Called once per class, when it is created (DomainEvent.__pydantic_init_subclass__).
    """
    from .events import ENVELOPE_FIELDS

    fields = event_type.model_fields
    found: list[PersonalField] = []
    for name, info in fields.items():
        markers = [m for m in info.metadata if isinstance(m, PersonalData)]
        if not markers:
            continue
        where = f"{event_type.__qualname__}.{name}"
        if len(markers) > 1 or name in ENVELOPE_FIELDS:
            raise EventDefinitionError(f"{where}: mark a data field once with PersonalData")
        if info.metadata[-1] is not markers[0]:
            raise EventDefinitionError(
                f"{where}: put PersonalData last in Annotated[...] (after Field(...) and other "
                "constraints), so that sealed and erased values pass the constraints"
            )
        subject = markers[0].subject
        if subject not in fields or subject == name:
            raise EventDefinitionError(
                f"{where}: PersonalData(subject={subject!r}) must name another field of the event"
            )
        if any(isinstance(m, PersonalData) for m in fields[subject].metadata):
            raise EventDefinitionError(
                f"{where}: the subject field {subject!r} is personal data itself; "
                "the subject must stay readable to find its key"
            )
        found.append(PersonalField(name, subject, TypeAdapter(_plain_type(info))))
    return tuple(found)


def _plain_type(info: FieldInfo) -> Any:
    """The field's declared type with its other constraints, without the PersonalData marker."""
    others = [m for m in info.metadata if not isinstance(m, PersonalData)]
    return Annotated[(info.annotation, *others)] if others else info.annotation


def parse_sealed(fields: tuple[PersonalField, ...], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a decoded payload) with each personal field's envelope parsed into ``Sealed``.

    A value that is not an envelope string is left as it is (written before the field was
    marked). CiphertextError when a value looks like an envelope but is malformed.
    """
    for field in fields:
        value = data.get(field.name)
        if isinstance(value, str) and value.startswith(ENVELOPE_PREFIX + "."):
            data[field.name] = Sealed.parse(value)
    return data


def has_plaintext(event: DomainEvent) -> bool:
    """True when a personal field of ``event`` holds a value that is neither sealed nor erased."""
    return any(
        not isinstance(getattr(event, field.name), Sealed | Erased)
        for field in type(event).personal_fields
    )
