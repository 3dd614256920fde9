"""Dead letters: the record of a failed event and the thread-safe in-memory store."""

from __future__ import annotations

import threading

import pytest

from engine.dead_letters import (
    DeadLetter,
    DeadLetterStore,
    InMemoryDeadLetterStore,
)
from engine.errors import EngineError, UnknownDeadLetterError
from engine.events import DomainEvent, new_event_id


class ParcelShipped(DomainEvent, name="tests.dead_letters.ParcelShipped", version=1):
    parcel: str


def failure(message: str) -> ValueError:
    try:
        raise ValueError(message)
    except ValueError as exc:
        return exc


def letter(handler: str = "shipping.notify", parcel: str = "p-1") -> DeadLetter:
    event = ParcelShipped(aggregate_id=parcel, parcel=parcel)
    return DeadLetter.from_error(handler, event, failure(f"cannot ship {parcel}"), attempts=3)


def test_from_error_records_type_message_traceback_and_attempts() -> None:
    """A letter built from an exception keeps what an operator needs to diagnose it."""
    record = letter()
    assert (record.handler, record.attempts, record.reason) == ("shipping.notify", 3, "failed")
    assert (record.error_type, record.error_message) == ("ValueError", "cannot ship p-1")
    assert "in failure" in record.traceback
    assert "ValueError: cannot ship p-1" in record.traceback
    assert record.failed_at.utcoffset() is not None


def test_non_builtin_errors_are_named_with_their_module() -> None:
    """error_type is qualified by module for errors outside builtins."""
    event = ParcelShipped(aggregate_id="p", parcel="p")
    record = DeadLetter.from_error("h", event, EngineError("x"), 1, "shutdown")
    assert (record.error_type, record.reason) == ("engine.errors.EngineError", "shutdown")


def test_store_keeps_letters_in_insertion_order_and_filters_by_handler() -> None:
    """list and count return letters in the order added, optionally for one handler."""
    store = InMemoryDeadLetterStore()
    first, second, third = letter("a", "p-1"), letter("b", "p-2"), letter("a", "p-3")
    for record in (first, second, third):
        store.add(record)
    assert store.list() == [first, second, third]
    assert store.list(handler="a") == [first, third]
    assert (store.count(), store.count(handler="b"), store.count(handler="zzz")) == (3, 1, 0)


def test_get_and_remove_by_id() -> None:
    """get returns a letter, remove returns and forgets it, unknown ids raise."""
    store = InMemoryDeadLetterStore()
    record = letter()
    store.add(record)
    assert store.get(record.id) is record
    assert store.remove(record.id) is record
    assert store.count() == 0
    with pytest.raises(UnknownDeadLetterError) as info:
        store.get(record.id)
    assert info.value.letter_id == record.id
    assert str(record.id) in str(info.value)
    with pytest.raises(KeyError):
        store.remove(new_event_id())


def test_store_is_safe_to_use_from_many_threads() -> None:
    """Concurrent adds and removes from threads neither lose nor duplicate letters."""
    store = InMemoryDeadLetterStore()
    records = [letter(parcel=f"p-{n}") for n in range(2000)]

    def add_then_remove_odd(chunk: list[DeadLetter]) -> None:
        for index, record in enumerate(chunk):
            store.add(record)
            if index % 2:
                store.remove(record.id)
            store.list()

    threads = [
        threading.Thread(target=add_then_remove_odd, args=(records[i::8],)) for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.count() == sum(len(range(0, len(records[i::8]), 2)) for i in range(8))


def test_in_memory_store_implements_the_protocol() -> None:
    """InMemoryDeadLetterStore satisfies the DeadLetterStore protocol."""
    store: DeadLetterStore = InMemoryDeadLetterStore()
    assert isinstance(store, DeadLetterStore)
