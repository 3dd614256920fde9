"""Errors raised by the engine.

    EngineError
    ├── EventDefinitionError      an event class is declared wrongly (missing wire name, bad version)
    ├── RegistryError
    │   ├── DuplicateEventError   two classes claim one (name, version)
    │   ├── EventNameError        a wire name does not read as a past-tense fact (strict mode)
    │   └── UnknownEventError     no class is registered for a (name, version)
    ├── UpcastError               an upcaster chain is broken or an upcaster failed
    ├── DecodeError               bytes or headers cannot be turned back into an event
    ├── EventTooLargeError        an encoded event is over the configured size limit
    ├── ContextError
    │   ├── UnknownContextError   a context name is not registered
    │   ├── OwnershipError        a context publishes an event it does not own
    │   ├── SubscriptionError     a handler subscribes to an event its context did not declare
    │   └── BoundaryViolationError a context imports another context's internals
    ├── HandlerError              a handler is declared wrongly (duplicate durable name, bad signature)
    │   └── UnknownHandlerError   a durable handler name no context declares
    ├── TransactionError          publish called outside a transaction, or on a closed one
    ├── BridgeError               a blocking/loop-only API is called from the wrong thread
    ├── UnknownDeadLetterError    a dead-letter id that the store does not hold
    ├── BusClosedError            the bus is not running, or is shutting down
    ├── ConsumeError              the Kafka consumer cannot reach the broker or is refused (retriable)
    ├── PersonalDataError         personal data cannot be sealed or opened (engine.personal_data)
    │   ├── MasterKeyError        no usable master key, or not the one that wrapped the subject keys
    │   └── CiphertextError       a personal-data envelope is malformed or fails authentication
    └── SettingsError             settings are invalid (unknown context, unknown mode)

Every class carries what went wrong as attributes, so callers never parse messages.
"""

from __future__ import annotations

from typing import ClassVar


class EngineError(Exception):
    """Root of every error the engine raises."""

    retriable: ClassVar[bool] = False


class EventDefinitionError(EngineError, TypeError):
    """Raised at class creation when a DomainEvent subclass is declared wrongly."""


class RegistryError(EngineError):
    """Root of registry errors."""


class DuplicateEventError(RegistryError):
    """Raised by EventRegistry.register when (name, version) is already taken by another class."""

    def __init__(self, name: str, version: int, existing: type, new: type) -> None:
        self.name, self.version = name, version
        super().__init__(
            f"event {name!r} version {version} is already registered by "
            f"{existing.__module__}.{existing.__qualname__}; "
            f"{new.__module__}.{new.__qualname__} must use another name or version"
        )


class EventNameError(RegistryError):
    """Raised by EventRegistry.register in strict mode when a name reads as a command."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"event name {name!r} does not read as a past-tense fact; "
            "name events after what happened (OrderPlaced, PaymentAuthorized), "
            "commands are imperatives (PlaceOrder)"
        )


class UnknownEventError(RegistryError):
    """Raised by EventRegistry.resolve when no class is registered for (name, version)."""

    def __init__(self, name: str, version: int | None) -> None:
        self.name, self.version = name, version
        which = f"{name!r}" if version is None else f"{name!r} version {version}"
        super().__init__(f"no event class is registered for {which}")


class UpcastError(RegistryError):
    """Raised when an older event version cannot be upcast to a registered one."""

    def __init__(self, name: str, version: int, reason: str) -> None:
        self.name, self.version = name, version
        super().__init__(f"cannot upcast {name!r} version {version}: {reason}")


class DecodeError(EngineError):
    """Raised by the codec when a record cannot be turned back into an event.

    `reason` is a short machine-readable tag (bad-json, unknown-type, unknown-version,
    missing-event-id, schema-mismatch, missing-header, bad-personal-data).
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


class EventTooLargeError(EngineError, ValueError):
    """Raised at publish time, before anything is written, when an event is over the limit."""

    def __init__(self, event_type: str, event_id: str, size: int, limit: int) -> None:
        self.event_type, self.event_id, self.size, self.limit = event_type, event_id, size, limit
        super().__init__(
            f"event {event_type} ({event_id}) encodes to {size} bytes, over the limit of "
            f"{limit} bytes; store large data elsewhere and publish a reference to it, "
            "or raise EVENTSEAM_MAX_EVENT_BYTES"
        )


class ContextError(EngineError):
    """Root of bounded-context errors."""


class UnknownContextError(ContextError, KeyError):
    """Raised when a context name is not registered."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name, self.known = name, known
        super().__init__(f"unknown context {name!r}; known contexts: {', '.join(known) or 'none'}")

    def __str__(self) -> str:
        return str(self.args[0])


class OwnershipError(ContextError):
    """Raised when a context publishes an event type that another context (or none) owns."""

    def __init__(self, context: str | None, event_type: str, owner: str | None) -> None:
        self.context, self.event_type, self.owner = context, event_type, owner
        by = (
            f"it is owned by {owner!r}"
            if owner
            else "no context owns it; add it to a context's owns=[...]"
        )
        who = f"context {context!r}" if context else "no context"
        super().__init__(f"{who} cannot publish {event_type}: {by}")


class SubscriptionError(ContextError):
    """Raised at start-up (handler declaration, ContextMap) when a handler subscribes to an event
    type that its context does not list in ``subscribes=[...]``."""

    def __init__(self, context: str, handler: str, event_type: str) -> None:
        self.context, self.handler, self.event_type = context, handler, event_type
        super().__init__(
            f"handler {handler!r} subscribes to {event_type}, which context {context!r} does "
            f"not declare; add it to BoundedContext({context!r}, subscribes=[...])"
        )


class BoundaryViolationError(ContextError):
    """Raised by the boundary check when contexts import each other's internals."""

    def __init__(self, violations: list[str]) -> None:
        self.violations = violations
        super().__init__("context boundary violations:\n  " + "\n  ".join(violations))


class HandlerError(EngineError):
    """Raised when a handler is declared wrongly (duplicate durable name, bad signature)."""


class UnknownHandlerError(HandlerError, KeyError):
    """Raised by engine.redelivery (``eventseam dlq replay``, ``eventseam replay --handler``) for
    a durable handler name that no context of the application declares."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name, self.known = name, known
        super().__init__(f"unknown handler {name!r}; known handlers: {', '.join(known) or 'none'}")

    def __str__(self) -> str:
        return str(self.args[0])


class TransactionError(EngineError):
    """Raised when publish is called outside an open transaction."""


class BridgeError(EngineError):
    """Raised when a blocking API runs on the event-loop thread, or a loop-only one off it.

    The sync bridge raises it when called from an event loop; ``Bus.publish_nowait`` when called
    from another thread than the bus's loop.
    """


class UnknownDeadLetterError(EngineError, KeyError):
    """Raised by DeadLetterStore.get/remove and Bus.redeliver for an id the store does not hold."""

    def __init__(self, letter_id: object) -> None:
        self.letter_id = letter_id
        super().__init__(f"no dead letter with id {letter_id}")

    def __str__(self) -> str:
        return str(self.args[0])


class BusClosedError(EngineError):
    """Raised when events are handed to a bus that is not running or is shutting down."""


class ConsumeError(EngineError):
    """Raised by engine.consumer.KafkaConsumer when the broker cannot be reached or refuses.

    Retriable: the consumer runner backs off and tries again; it never exits because of it.
    """

    retriable = True

    def __init__(self, group_id: str, reason: str) -> None:
        self.group_id, self.reason = group_id, reason
        super().__init__(f"consumer group {group_id!r}: {reason}")


class SettingsError(EngineError, ValueError):
    """Raised when settings name an unknown context or mode, or are otherwise invalid."""


class PersonalDataError(EngineError):
    """Raised when a personal-data field cannot be sealed or opened (see engine.personal_data).

    Also raised by ``engine.codec.encode`` for an event whose personal-data fields still hold
    plaintext: such events are sealed by ``EventSeam.prepare``, never encoded directly.
    """

    def __init__(self, message: str, *, event_type: str | None = None, field: str | None = None):
        self.event_type, self.field = event_type, field
        super().__init__(message)


class MasterKeyError(PersonalDataError):
    """Raised when the personal-data master key is missing or malformed, or does not unwrap the
    subject keys in the key table (wrong key): fix ``EVENTSEAM_PERSONAL_DATA__MASTER_KEY``.

    Retriable for consumers: the event is not at fault, so the runner waits instead of
    dead-lettering it.
    """

    retriable = True


class CiphertextError(PersonalDataError):
    """Raised when a personal-data envelope is malformed, or its key exists but authentication
    fails (tampered ciphertext, or an envelope moved to another event or field)."""


def error_line(error: BaseException) -> str:
    """An error in one line, for logs and reports: its type, then its message's first line
    (the type once: aiokafka's errors already start their message with it)."""
    name = type(error).__name__
    lines = str(error).strip().splitlines()
    if not lines:
        return name
    return lines[0] if lines[0].startswith(f"{name}:") else f"{name}: {lines[0]}"


#: Added to a database error that says one of eventseam's tables or columns does not exist.
SCHEMA_HINT = "eventseam's tables are missing or older than this code: run `eventseam db upgrade`"
#: SQLSTATEs of PostgreSQL's undefined_table and undefined_column.
_UNDEFINED_SQLSTATES = frozenset({"42P01", "42703"})


def database_error_line(error: BaseException) -> str:
    """``error_line`` of a database error, with SCHEMA_HINT when the error says a table or a
    column does not exist (the state of a database eventseam's migrations did not reach)."""
    line = error_line(error)
    return f"{line} ({SCHEMA_HINT})" if schema_missing(error) else line


def schema_missing(error: BaseException) -> bool:
    """True when a database error says a table or a column does not exist."""
    driver_error = getattr(error, "orig", None)  # a SQLAlchemy DBAPIError wraps the driver's
    codes = {getattr(driver_error, name, None) for name in ("sqlstate", "pgcode")}
    if codes & _UNDEFINED_SQLSTATES:
        return True
    text = str(driver_error if driver_error is not None else error)
    return text.startswith(("no such table", "no such column")) or "has no column named" in text
