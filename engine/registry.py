"""The event registry: maps (wire name, version) to the event class, and upcasts old versions."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from .errors import (
    DuplicateEventError,
    EventDefinitionError,
    EventNameError,
    UnknownEventError,
    UpcastError,
)
from .events import DomainEvent
from .naming import reads_as_past_tense

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the data of version N into the data of version N + 1 (a pure function on dicts)."""

T = TypeVar("T", bound=type[DomainEvent])


class EventNameWarning(UserWarning):
    """Emitted by the registry (non-strict mode) for names that read as commands."""


class EventRegistry:
    """Maps (wire name, version) to event classes and upcasts older versions on read.

    Registration is not thread safe: register everything at start-up, before publishing.
    Lookups are thread safe.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self._classes: dict[tuple[str, int], type[DomainEvent]] = {}
        self._latest: dict[str, int] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, event_type: T) -> T:
        """Register ``event_type``; usable as a class decorator.

        Raises DuplicateEventError when another class holds the same (name, version), and
        EventNameError in strict mode (a warning otherwise) when the name reads as a command.
        Registering the same class twice is a no-op.
        """
        if not isinstance(event_type, type) or not issubclass(event_type, DomainEvent):
            raise EventDefinitionError(f"{event_type!r} is not a DomainEvent subclass")
        if event_type.is_abstract():
            raise EventDefinitionError(
                f"{event_type.__qualname__} has no wire name and cannot be registered"
            )
        key = (event_type.event_name, event_type.event_version)
        existing = self._classes.get(key)
        if existing is event_type:
            return event_type
        if existing is not None:
            raise DuplicateEventError(key[0], key[1], existing, event_type)
        if not reads_as_past_tense(event_type.event_name):
            if self.strict:
                raise EventNameError(event_type.event_name)
            warnings.warn(
                str(EventNameError(event_type.event_name)), EventNameWarning, stacklevel=2
            )
        self._classes[key] = event_type
        self._latest[key[0]] = max(self._latest.get(key[0], 0), key[1])
        return event_type

    def register_all(self, event_types: Iterable[type[DomainEvent]]) -> None:
        """Register several classes."""
        for event_type in event_types:
            self.register(event_type)

    def upcaster(self, name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: register a function turning ``name`` v``from_version`` data into v+1 data."""

        def decorate(function: Upcaster) -> Upcaster:
            key = (name, from_version)
            if key in self._upcasters:
                raise UpcastError(
                    name, from_version, "an upcaster is already registered for this version"
                )
            self._upcasters[key] = function
            return function

        return decorate

    def resolve(self, name: str, version: int) -> type[DomainEvent]:
        """The class registered for (name, version); UnknownEventError otherwise."""
        try:
            return self._classes[(name, version)]
        except KeyError:
            raise UnknownEventError(name, version) from None

    def latest(self, name: str) -> type[DomainEvent]:
        """The class of the highest registered version of ``name``."""
        version = self._latest.get(name)
        if version is None:
            raise UnknownEventError(name, None)
        return self._classes[(name, version)]

    def upcast(
        self, name: str, version: int, data: Mapping[str, Any]
    ) -> tuple[type[DomainEvent], dict[str, Any]]:
        """Bring ``data`` of (name, version) up to a registered class.

        A registered version is returned as is. An unregistered older version is upcast step by
        step until it reaches a registered one; a missing step raises UpcastError, an unknown
        name UnknownEventError.
        """
        current = dict(data)
        if name not in self._latest:
            raise UnknownEventError(name, version)
        step = version
        while (name, step) not in self._classes:
            upcaster = self._upcasters.get((name, step))
            if upcaster is None:
                if step > self._latest[name]:
                    raise UnknownEventError(name, version)
                raise UpcastError(name, version, f"no upcaster from version {step} to {step + 1}")
            try:
                current = upcaster(current)
            except Exception as exc:
                raise UpcastError(
                    name, version, f"upcaster from version {step} failed: {exc!r}"
                ) from exc
            step += 1
        return self._classes[(name, step)], current

    def events(self) -> list[type[DomainEvent]]:
        """Every registered class, in registration order."""
        return list(self._classes.values())

    def __contains__(self, event_type: object) -> bool:
        return (
            isinstance(event_type, type)
            and self._classes.get(
                (getattr(event_type, "event_name", ""), getattr(event_type, "event_version", 0))
            )
            is event_type
        )

    def __len__(self) -> int:
        return len(self._classes)
