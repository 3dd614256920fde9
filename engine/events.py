"""Domain events: frozen pydantic models with an explicit wire name and version.

Declare an event with its wire name and schema version as class keywords::

    class OrderPlaced(DomainEvent, name="orders.OrderPlaced", version=1):
        order_id: str
        total_cents: int

The wire name never comes from the module path, so renaming or moving the class keeps it.
A subclass declared without ``name`` is an abstract base: it cannot be instantiated.

Content-model policy: event schemas are *open for readers* (``engine.codec.decode`` drops fields
it does not know, so a newer producer never breaks an older consumer) and *closed for writers* (the
model rejects construction with fields it does not declare, so a typo never vanishes silently). Versions evolve by adding optional fields;
fields are never renamed or removed (add a new version and an upcaster instead).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from uuid_utils.compat import uuid7

from .errors import EventDefinitionError
from .personal_data import PersonalField, find_personal_fields

#: Field names that belong to the envelope, not to the event's own data.
ENVELOPE_FIELDS: frozenset[str] = frozenset(
    {
        "event_id",
        "occurred_at",
        "aggregate_id",
        "correlation_id",
        "causation_id",
        "source",
        "traceparent",
    }
)


def new_event_id() -> uuid.UUID:
    """Return a time-ordered UUIDv7 (keeps outbox and inbox index inserts local)."""
    return uuid7()


def utc_now() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class DomainEvent(BaseModel):
    """Base class of every domain event: an immutable fact with an envelope.

    Envelope fields: ``event_id`` (the idempotency key), ``occurred_at`` (UTC), ``aggregate_id``
    (the Kafka key: events of one aggregate keep their order), ``correlation_id`` and
    ``causation_id`` (set by the engine when a handler publishes a follow-up event), ``source``
    (the publishing context, set by the engine at publish time) and ``traceparent`` (W3C trace
    context, captured at publish time). Everything else is the event's data.

    Content-model policy: closed for writers, open for readers.

    - Writers are closed: the model rejects fields it does not declare (``extra="forbid"``), and
      the contracts say so: every object schema that ``eventseam contracts dump`` writes for an
      event (its own fields, as ``data()`` emits them) has ``additionalProperties: false``.
    - Readers are open: ``engine.codec.decode`` drops top-level fields it does not know, so an
      older consumer reads a newer producer's payload.
    - ``eventseam contracts check`` proves, with jsoncompat, that every payload a committed
      schema allows is valid under the current closed schema (backward). Adding an optional
      field passes; removing or renaming a field, narrowing a type or adding a required field
      fails. A breaking change is a new version plus an upcaster, never an edit in place.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)

    event_name: ClassVar[str] = ""
    event_version: ClassVar[int] = 0
    #: Fields marked ``PersonalData`` (engine.personal_data), found once when the class is
    #: created; empty for most events, which then skip every personal-data step.
    personal_fields: ClassVar[tuple[PersonalField, ...]] = ()

    event_id: uuid.UUID = Field(default_factory=new_event_id)
    occurred_at: AwareDatetime = Field(default_factory=utc_now)
    aggregate_id: str
    correlation_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None
    source: str | None = None
    traceparent: str | None = None

    def __init_subclass__(cls, *, name: str | None = None, version: int = 1, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is None:
            cls.event_name, cls.event_version = "", 0
            if cls.model_post_init is BaseModel.model_post_init:  # below a concrete event
                cls.model_post_init = DomainEvent.model_post_init  # type: ignore[method-assign]
            return
        if cls.model_post_init is DomainEvent.model_post_init:
            # A concrete event needs no abstract-base check: without a hook pydantic calls no
            # Python per instance (decoding thousands of events a second pays for it).
            cls.model_post_init = BaseModel.model_post_init  # type: ignore[method-assign]
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise EventDefinitionError(
                f"{cls.__qualname__}: the wire name must be a non-empty string without surrounding spaces"
            )
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise EventDefinitionError(
                f"{cls.__qualname__}: version must be an integer >= 1, got {version!r}"
            )
        cls.event_name, cls.event_version = name, version

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Find the personal-data fields once, when the class is complete."""
        super().__pydantic_init_subclass__(**kwargs)
        cls.personal_fields = find_personal_fields(cls)

    def model_post_init(self, context: Any, /) -> None:
        """Refuse instances of abstract bases (no wire name).

        A hook rather than an ``__init__`` override: pydantic validates twice when a model
        overrides ``__init__`` (once in ``model_validate``, once more in the custom ``__init__``).
        """
        if not type(self).event_name:
            raise EventDefinitionError(
                f"{type(self).__qualname__} has no wire name; declare it with "
                f'class {type(self).__name__}(DomainEvent, name="context.{type(self).__name__}", version=1)'
            )

    @field_validator("occurred_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @classmethod
    def is_abstract(cls) -> bool:
        """True for a base class declared without a wire name."""
        return not cls.event_name

    def data(self) -> dict[str, Any]:
        """The event's own fields (no envelope), in JSON-compatible form."""
        return self.model_dump(mode="json", exclude=set(ENVELOPE_FIELDS))

    def caused(self, follow_up: E) -> E:
        """Return ``follow_up`` stamped as caused by this event (same correlation id)."""
        return follow_up.model_copy(
            update={
                "correlation_id": self.correlation_id or self.event_id,
                "causation_id": self.event_id,
            }
        )

    @property
    def type_key(self) -> tuple[str, int]:
        """(wire name, version) of this event."""
        return (self.event_name, self.event_version)


E = TypeVar("E", bound=DomainEvent)
