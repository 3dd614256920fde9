"""publish() of personal-data events through Django: sealed on Django's cursor, in its transaction.

The crm world of tests/personal_data_world.py (CustomerRegistered: ``email`` is personal data of
``customer_id``) is added to the test project with a master key, once per database (SQLite and
PostgreSQL).
"""

from __future__ import annotations

import re
import sqlite3
import threading
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import pytest
from django.db import connections, transaction
from django.test import override_settings
from sqlalchemy import create_engine, func, select

from engine.codec import decode, decode_headers
from engine.crypto_events import open_events
from engine.crypto_keys import erase_subject
from engine.integrations.django import get_seam, publish
from engine.integrations.django.conf import database_url
from engine.integrations.django.cursor_sql import CursorExecutor
from engine.personal_data import ENVELOPE_PATTERN, Erased
from outbox.key_table import subject_keys
from outbox.table import Status, outbox
from tests.django import settings as test_settings
from tests.django.conftest import drain
from tests.django.shop.models import Order
from tests.personal_data_world import EMAIL, LOCK, MASTER_KEY, RECEIVED, customer

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy import Engine

    from engine.events import DomainEvent
    from engine.seam import EventSeam


class Undo(Exception):
    """Raised by a test to roll an atomic block back (suppressed around it)."""


def crm_eventseam(alias: str, crm_mode: str) -> dict[str, Any]:
    """settings.EVENTSEAM of the test project plus the crm world on ``alias``."""
    base = test_settings.EVENTSEAM
    return {
        **base,
        "bounded_contexts": [
            *base["bounded_contexts"],
            "tests.personal_data_world:crm",
            "tests.personal_data_world:mailing",
        ],
        "contexts": {**base["contexts"], "crm": crm_mode},
        "database": alias,
        "personal_data": {"master_key": MASTER_KEY},
    }


@pytest.fixture
def sql(alias: str) -> Iterator[Engine]:
    """A SQLAlchemy engine on ``alias``'s database (the consumer's side); empties the key table."""
    url = database_url(alias)
    assert url is not None
    engine = create_engine(url)
    with LOCK:
        RECEIVED.clear()
    try:
        yield engine
    finally:
        engine.dispose()
        with connections[alias].cursor() as cursor:
            cursor.execute("DELETE FROM eventseam_subject_keys")


@pytest.fixture
def broker_crm(alias: str) -> Iterator[str]:
    """The crm world in ``broker`` mode (rows pending, no in-process dispatch) on ``alias``."""
    with override_settings(EVENTSEAM=crm_eventseam(alias, "broker")):
        yield alias


def payloads(alias: str) -> list[bytes]:
    """The payload of every outbox row on ``alias``, in write order."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT payload FROM eventseam_outbox ORDER BY seq")
        return [bytes(row[0]) for row in cursor.fetchall()]


def key_rows(engine: Engine) -> list[tuple[str, int]]:
    """(subject, version) of every committed subject key, seen from another connection."""
    with engine.connect() as connection:
        query = select(subject_keys.c.subject, subject_keys.c.version).order_by(
            subject_keys.c.subject, subject_keys.c.version
        )
        return [(str(s), int(v)) for s, v in connection.execute(query)]


def consumed_sealed(seam: EventSeam, engine: Engine) -> list[DomainEvent]:
    """Every outbox row decoded, personal fields still Sealed."""
    with engine.connect() as connection:
        rows = connection.execute(select(outbox).order_by(outbox.c.seq)).all()
    return [
        decode(seam.registry, row.aggregateid.encode(), row.payload, decode_headers(row.headers))
        for row in rows
    ]


def consumed(seam: EventSeam, engine: Engine) -> list[DomainEvent]:
    """Every outbox row decoded and opened as the consumer runner does (engine.inbox_apply)."""
    assert seam.personal_data is not None
    sealed = consumed_sealed(seam, engine)
    with engine.begin() as connection:
        return open_events(seam.personal_data, connection, sealed)


def test_outbox_row_holds_only_ciphertext(broker_crm: str, sql: Engine) -> None:
    """The committed row's email is an envelope (no plaintext); the subject's key row is committed."""
    alias = broker_crm
    with transaction.atomic(using=alias):
        Order.objects.using(alias).create(number="P1")
        publish(customer("c-1"), using=alias)
    (payload,) = payloads(alias)
    assert EMAIL.encode() not in payload
    with sql.connect() as connection:
        (row,) = connection.execute(select(outbox.c.payload, outbox.c.status)).all()
    assert row.status == Status.PENDING
    envelope = re.search(rb'"email":\s*"([^"]+)"', bytes(row.payload))
    assert envelope is not None
    assert re.fullmatch(ENVELOPE_PATTERN, envelope.group(1).decode())
    assert key_rows(sql) == [("c-1", 1)]


def test_key_is_created_in_djangos_transaction(broker_crm: str, sql: Engine) -> None:
    """The key row is visible in the atomic block only, and a rollback removes it with the row."""
    alias = broker_crm
    with suppress(Undo), transaction.atomic(using=alias):
        publish(customer("c-2"), using=alias)
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT subject FROM eventseam_subject_keys")
            assert [row[0] for row in cursor.fetchall()] == ["c-2"]
        assert key_rows(sql) == []  # not committed on a connection of its own
        raise Undo
    assert payloads(alias) == []
    assert key_rows(sql) == []
    with sql.connect() as connection:
        assert connection.execute(select(func.count()).select_from(subject_keys)).scalar() == 0


def test_savepoint_rollback_drops_only_its_keys(broker_crm: str, sql: Engine) -> None:
    """A rolled-back nested atomic block drops the key it created; the outer block's key commits."""
    alias = broker_crm
    with transaction.atomic(using=alias):
        publish(customer("c-3"), using=alias)
        with suppress(Undo), transaction.atomic(using=alias):
            publish(customer("c-4"), using=alias)
            raise Undo
    assert len(payloads(alias)) == 1
    assert key_rows(sql) == [("c-3", 1)]


def test_consumer_opens_plaintext_until_the_subject_is_erased(broker_crm: str, sql: Engine) -> None:
    """A consumer opens what Django sealed; after erase_subject the email is Erased, the rest intact."""
    alias = broker_crm
    with transaction.atomic(using=alias):
        publish(customer("c-5", plan="pro"), customer("c-6"), using=alias)
    seam = get_seam()
    first, second = consumed(seam, sql)
    assert (first.email, first.plan, second.email) == (EMAIL, "pro", EMAIL)  # type: ignore[attr-defined]
    with sql.begin() as connection:
        assert erase_subject(connection, "c-5") == 1
    first, second = consumed(seam, sql)
    assert isinstance(first.email, Erased)  # type: ignore[attr-defined]
    assert (first.customer_id, first.plan, second.email) == ("c-5", "pro", EMAIL)  # type: ignore[attr-defined]
    with transaction.atomic(using=alias):  # the next publish gets a fresh key version
        publish(customer("c-5"), using=alias)
    assert ("c-5", 2) in key_rows(sql)
    assert consumed(seam, sql)[-1].email == EMAIL  # type: ignore[attr-defined]


def test_keys_open_on_djangos_cursor_too(broker_crm: str, sql: Engine) -> None:
    """open_events takes the cursor executor as well: a Django-side reader opens the values."""
    alias = broker_crm
    with transaction.atomic(using=alias):
        publish(customer("c-7"), using=alias)
    seam = get_seam()
    assert seam.personal_data is not None
    sealed = consumed_sealed(seam, sql)
    with transaction.atomic(using=alias):
        (event,) = open_events(seam.personal_data, CursorExecutor(connections[alias]), sealed)
    assert event.email == EMAIL  # type: ignore[attr-defined]


def test_local_handlers_get_the_published_object(alias: str, sql: Engine) -> None:
    """In ``local`` mode the row is sealed and the in-process handler gets the plaintext object."""
    with override_settings(EVENTSEAM=crm_eventseam(alias, "local")):
        with transaction.atomic(using=alias):
            publish(customer("c-8"), using=alias)
        drain()
        (payload,) = payloads(alias)
        assert EMAIL.encode() not in payload
        with LOCK:
            received = list(RECEIVED["remember_customer"])
        assert [(e.customer_id, e.email) for e in received] == [("c-8", EMAIL)]


def test_sqlite_publish_waits_for_another_writer(sqlite_alias: str) -> None:
    """While another connection holds SQLite's write lock, publish waits for it instead of failing.

    Django's deferred BEGIN would let the key read start a read transaction that SQLite refuses to
    upgrade ("database is locked" at once); the executor writes first, so the lock is awaited.
    The other writer commits once the publish's first write on the key table has started.
    """
    alias = sqlite_alias
    path = connections[alias].settings_dict["NAME"]
    locked, writing = threading.Event(), threading.Event()

    def other_writer() -> None:
        connection = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO shop_order (number) VALUES ('W1')")
            locked.set()
            writing.wait(timeout=30)
            connection.execute("COMMIT")
        finally:
            connection.close()

    def on_statement(sql: str) -> None:
        if sql.startswith(("INSERT INTO eventseam_subject_keys", "UPDATE eventseam_subject_keys")):
            writing.set()

    thread = threading.Thread(target=other_writer)
    thread.start()
    connections[alias].ensure_connection()
    raw = connections[alias].connection
    assert raw is not None
    try:
        assert locked.wait(timeout=30)
        raw.set_trace_callback(on_statement)
        with (
            override_settings(EVENTSEAM=crm_eventseam(alias, "broker")),
            transaction.atomic(using=alias),
        ):
            publish(customer("c-9"), using=alias)
    finally:
        raw.set_trace_callback(None)
        writing.set()
        thread.join()
        with connections[alias].cursor() as cursor:
            cursor.execute("DELETE FROM eventseam_subject_keys")
    assert len(payloads(alias)) == 1
    assert sorted(Order.objects.using(alias).values_list("number", flat=True)) == ["W1"]
