"""Fixtures of the broker suite: the bundled Kafka-protocol broker, per-test topics and outboxes.

The session broker is shared (each test uses its own topic prefix); tests that stop the broker
get a private one. A broker that cannot start fails the tests, never skips them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.kafka_broker import create_outbox, start_broker, unique_prefix

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy import Engine

    from outbox.bundled_broker import BundledBroker


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[BundledBroker]:
    """The bundled broker shared by the session (memory storage)."""
    broker = start_broker()
    yield broker
    broker.stop()


@pytest.fixture
def private_broker() -> Iterator[BundledBroker]:
    """A broker of this test alone, which it may stop and start again on the same port."""
    broker = start_broker()
    yield broker
    broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix of this test alone."""
    return unique_prefix()


@pytest.fixture
def outbox_db(database_url: str) -> Iterator[Engine]:
    """A sync engine on a fresh SQLite or PostgreSQL database with the eventseam tables."""
    engine = create_outbox(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_outbox(postgres_url: str) -> Iterator[Engine]:
    """A sync engine on a fresh PostgreSQL database with the eventseam tables and NOTIFY trigger."""
    engine = create_outbox(postgres_url)
    yield engine
    engine.dispose()
