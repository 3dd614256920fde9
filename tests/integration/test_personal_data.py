"""Personal data on real databases: sealed in the outbox, opened for handlers, rotated, erased."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING

import anyio
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from structlog.contextvars import get_contextvars

from engine.cli import main
from engine.codec import decode, decode_headers
from engine.contexts import ContextMap
from engine.crypto import generate_master_key
from engine.crypto_events import open_events
from engine.crypto_keys import erase_subject, key_versions
from engine.errors import CiphertextError, MasterKeyError, PersonalDataError
from engine.inbox_apply import InboxApplier, InboxUnavailableError
from engine.modes import Mode
from engine.personal_data import ENVELOPE_PATTERN, Erased, Sealed
from engine.seam import EventSeam
from outbox.key_table import subject_keys
from outbox.table import outbox
from tests.conftest import async_url
from tests.integration.test_asyncapi_parser import dump, validate, validator  # noqa: F401  (fixture)
from tests.personal_data_world import (
    EMAIL,
    MASTER_KEY,
    RECEIVED,
    PlanChanged,
    crm,
    crm_seam,
    crm_settings,
    customer,
    engine_of,
    mailing,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from engine.contexts import HandlerSpec
    from engine.events import DomainEvent

pytestmark = pytest.mark.anyio


@pytest.fixture
def seam(database_url: str) -> Iterator[EventSeam]:
    """The crm world on a fresh database (SQLite, then PostgreSQL)."""
    seam = crm_seam(database_url)
    RECEIVED.clear()
    try:
        yield seam
    finally:
        engine_of(seam).dispose()


def handler_spec(name: str) -> HandlerSpec:
    """The mailing handler spec called ``name``."""
    return next(spec for spec in mailing.handlers if spec.name == f"mailing.{name}")


def publish(seam: EventSeam, *events: DomainEvent) -> None:
    """Publish ``events`` in one committed transaction."""
    with seam.transaction() as uow:
        uow.publish(*events)


def outbox_events(seam: EventSeam) -> list[DomainEvent]:
    """Every outbox row decoded as a consumer would (personal fields still Sealed)."""
    with engine_of(seam).connect() as connection:
        rows = connection.execute(select(outbox).order_by(outbox.c.seq)).all()
    return [
        decode(seam.registry, row.aggregateid.encode(), row.payload, decode_headers(row.headers))
        for row in rows
    ]


def opened(seam: EventSeam, events: list[DomainEvent]) -> list[DomainEvent]:
    """``events`` opened with the seam's keys, in a transaction of their own."""
    assert seam.personal_data is not None
    with engine_of(seam).begin() as connection:
        return open_events(seam.personal_data, connection, events)


def test_outbox_row_never_holds_the_plaintext(seam: EventSeam) -> None:
    """The email is sealed in the outbox row (payload and headers); the opened event has it back."""
    event = customer("c-1")
    publish(seam, event, PlanChanged(aggregate_id="c-1", customer_id="c-1", plan="pro"))
    with engine_of(seam).connect() as connection:
        rows = connection.execute(select(outbox).order_by(outbox.c.seq)).all()
    assert len(rows) == 2
    for row in rows:
        assert EMAIL.encode() not in bytes(row.payload)
        assert EMAIL.encode() not in bytes(row.headers)
    stored = outbox_events(seam)
    assert isinstance(stored[0].email, Sealed)  # type: ignore[attr-defined]
    assert stored[0].customer_id == "c-1"  # type: ignore[attr-defined]
    assert stored[1] == PlanChanged(
        aggregate_id="c-1", customer_id="c-1", plan="pro", event_id=stored[1].event_id,
        occurred_at=stored[1].occurred_at, source="crm",
    )  # fmt: skip
    back = opened(seam, stored)
    assert back[0].email == EMAIL  # type: ignore[attr-defined]
    assert back[0].event_id == event.event_id


def test_rotation_keeps_older_values_readable(seam: EventSeam) -> None:
    """Values sealed before and after a key rotation both open; new ones use the new version."""
    assert seam.personal_data is not None
    publish(seam, customer("c-1", email="before@shop.test"))
    with engine_of(seam).begin() as connection:
        assert seam.personal_data.rotate(connection, "c-1") == 2
    publish(seam, customer("c-1", email="after@shop.test"))
    stored = outbox_events(seam)
    assert [e.email.key_version for e in stored] == [1, 2]  # type: ignore[attr-defined]
    assert [e.email for e in opened(seam, stored)] == [  # type: ignore[attr-defined]
        "before@shop.test",
        "after@shop.test",
    ]


def test_erasure_shreds_one_subject_and_keeps_other_fields(seam: EventSeam) -> None:
    """After erase, the subject's past emails open as Erased (other fields and subjects intact)."""
    publish(seam, customer("c-1", plan="pro"), customer("c-2", email="bo@shop.test"))
    with engine_of(seam).begin() as connection:
        assert erase_subject(connection, "c-1") == 1
        assert erase_subject(connection, "c-1") == 0  # idempotent
    first, second = opened(seam, outbox_events(seam))
    assert isinstance(first.email, Erased)  # type: ignore[attr-defined]
    assert (first.email.subject, first.email.field) == ("c-1", "email")  # type: ignore[attr-defined]
    assert (first.customer_id, first.plan) == ("c-1", "pro")  # type: ignore[attr-defined]
    assert second.email == "bo@shop.test"  # type: ignore[attr-defined]
    publish(seam, customer("c-1", email="new@shop.test"))  # a new key, the next version
    *_, again = opened(seam, outbox_events(seam))
    assert again.email == "new@shop.test"  # type: ignore[attr-defined]
    with engine_of(seam).connect() as connection:
        assert key_versions(connection, "c-1") == [(1, True), (2, False)]


def test_runner_applier_opens_sealed_events_and_erased_ones(seam: EventSeam) -> None:
    """The consumer runner's applier hands handlers the plaintext, then Erased after the erasure."""
    publish(seam, customer("c-1"))
    (stored,) = outbox_events(seam)
    remember, late = (handler_spec(name) for name in ("remember_customer", "reject_customer"))
    assert InboxApplier(remember, seam, threading.Lock()).apply_batch([stored]).applied == 1
    with engine_of(seam).begin() as connection:
        erase_subject(connection, "c-1")
    # The same record consumed again after the erasure (another handler, a replay, a redelivery).
    assert InboxApplier(late, seam, threading.Lock()).apply_one(stored, 1) is True
    # The appliers bind their log ids in a copy of the caller's context: none leak out here.
    assert not {"handler", "attempt", "event_id"} & get_contextvars().keys()
    (before,), (after,) = RECEIVED["remember_customer"], RECEIVED["reject_customer"]
    assert before.email == EMAIL
    assert isinstance(after.email, Erased)
    assert (after.event_id, after.customer_id, after.plan) == (stored.event_id, "c-1", "free")


def test_wrong_master_key_is_a_typed_error(seam: EventSeam, database_url: str) -> None:
    """Another master key cannot open past values nor seal for known subjects: MasterKeyError."""
    publish(seam, customer("c-1"))
    stored = outbox_events(seam)
    impostor = crm_seam(database_url, master_key=generate_master_key())
    try:
        with pytest.raises(MasterKeyError, match="not the master key"):
            opened(impostor, stored)
        with pytest.raises(MasterKeyError):
            publish(impostor, customer("c-1"))
        assert len(outbox_events(seam)) == 1  # nothing written by the refused publish
        applier = InboxApplier(handler_spec("remember_customer"), impostor, threading.Lock())
        with pytest.raises(InboxUnavailableError, match="master key"):
            applier.apply_one(stored[0], 1)  # the runner waits: never dead-letters for it
    finally:
        engine_of(impostor).dispose()


def test_tampered_value_fails_authentication(seam: EventSeam) -> None:
    """A sealed value moved to another event does not open: CiphertextError."""
    publish(seam, customer("c-1"))
    (stored,) = outbox_events(seam)
    moved = stored.model_copy(update={"event_id": customer("c-1").event_id})
    with pytest.raises(CiphertextError, match="fails authentication"):
        opened(seam, [moved])


def test_seam_without_master_key_refuses_personal_data(database_url: str) -> None:
    """An application with PersonalData fields and no master key fails at construction."""
    settings = crm_settings(database_url, master_key=None)
    with pytest.raises(MasterKeyError, match="EVENTSEAM_PERSONAL_DATA__MASTER_KEY"):
        EventSeam(settings, [crm, mailing])


def test_publish_without_a_sqlalchemy_connection_is_refused(seam: EventSeam) -> None:
    """prepare() without the transaction's connection refuses personal data (never plaintext)."""
    with pytest.raises(PersonalDataError, match="sealed on the publish transaction"):
        seam.prepare([customer("c-1")])
    assert (
        len(seam.prepare([PlanChanged(aggregate_id="c", customer_id="c", plan="x")]).records) == 1
    )


async def test_async_publish_and_local_handlers(database_url: str) -> None:
    """publish_async seals on the AsyncSession's transaction; in-process handlers get plaintext."""
    seam = crm_seam(database_url, mode=Mode.DUAL)
    RECEIVED.clear()
    engine = create_async_engine(async_url(database_url))
    try:
        async with anyio.create_task_group() as group:
            await group.start(seam.run)
            async with AsyncSession(engine) as session, session.begin():
                await seam.publish_async(session, customer("c-9"))
            await seam.join()
            await seam.aclose()
        assert [e.email for e in RECEIVED["remember_customer"]] == [EMAIL]
        (stored,) = outbox_events(seam)
        assert isinstance(stored.email, Sealed)  # type: ignore[attr-defined]
        assert opened(seam, [stored])[0].email == EMAIL  # type: ignore[attr-defined]
    finally:
        await engine.dispose()
        engine_of(seam).dispose()


def test_cli_erase_and_keys(seam: EventSeam, database_url: str) -> None:
    """`eventseam erase --subject` shreds; `keys show` lists versions; `keys generate` prints a key."""
    publish(seam, customer("c-1"))
    runner = CliRunner()
    shown = runner.invoke(
        main, ["keys", "show", "--subject", "c-1", "--database-url", database_url]
    )
    assert shown.exit_code == 0, shown.output
    assert "key version 1: live" in shown.output
    erased = runner.invoke(main, ["erase", "--subject", "c-1", "--database-url", database_url])
    assert erased.exit_code == 0, erased.output
    assert "erased 'c-1': 1 key version(s) shredded" in erased.output
    (event,) = opened(seam, outbox_events(seam))
    assert isinstance(event.email, Erased)  # type: ignore[attr-defined]
    generated = runner.invoke(main, ["keys", "generate"])
    assert generated.exit_code == 0
    assert len(generated.output.strip()) == 44
    with engine_of(seam).connect() as connection:
        assert connection.execute(select(subject_keys.c.wrapped_key)).scalar() is None


def test_cli_keys_rotate_and_database_errors(
    seam: EventSeam, database_url: str, tmp_path: Path
) -> None:
    """`keys rotate` needs the master key; a database without the key table exits 1 with a hint."""
    runner = CliRunner()
    args = ["keys", "rotate", "--subject", "c-1", "--database-url", database_url]
    refused = runner.invoke(main, args, env={"EVENTSEAM_PERSONAL_DATA__MASTER_KEY": ""})
    assert refused.exit_code == 1
    assert "need a master key" in refused.output
    rotated = runner.invoke(main, args, env={"EVENTSEAM_PERSONAL_DATA__MASTER_KEY": MASTER_KEY})
    assert rotated.exit_code == 0, rotated.output
    assert "new values use key version 1" in rotated.output
    publish(seam, customer("c-1"))
    (event,) = outbox_events(seam)
    assert event.email.key_version == 1  # type: ignore[attr-defined]
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    failed = runner.invoke(main, ["erase", "--subject", "c-1", "--database-url", empty])
    assert failed.exit_code == 1
    assert "eventseam db upgrade" in failed.output


@pytest.mark.postgres
def test_concurrent_first_publishes_share_one_key(postgres_url: str) -> None:
    """Two transactions creating a subject's first key at once both commit, on one key version."""
    seam = crm_seam(postgres_url)
    inserted, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with seam.transaction() as uow:
                uow.publish(customer("c-1", email="one@shop.test"))
                inserted.set()
                release.wait(30)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    try:
        thread = threading.Thread(target=first)
        thread.start()
        assert inserted.wait(30)
        # The second INSERT of (c-1, 1) waits for the first transaction; release it meanwhile.
        threading.Timer(0.3, release.set).start()
        publish(seam, customer("c-1", email="two@shop.test"))
        thread.join(30)
        assert errors == []
        emails = sorted(e.email for e in opened(seam, outbox_events(seam)))  # type: ignore[attr-defined]
        assert emails == ["one@shop.test", "two@shop.test"]
        with engine_of(seam).connect() as connection:
            assert key_versions(connection, "c-1") == [(1, False)]
    finally:
        release.set()
        engine_of(seam).dispose()


def test_contract_shows_the_envelope_and_passes_the_asyncapi_parser(
    validator: list[str],  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
) -> None:
    """The AsyncAPI document of crm shows email as the sealed envelope and is valid AsyncAPI."""
    path = dump(tmp_path, ContextMap([crm, mailing]))
    document = json.loads(path.read_text())
    schema = document["components"]["schemas"]["crm.CustomerRegistered.v1"]
    assert schema["properties"]["email"]["pattern"] == ENVELOPE_PATTERN
    assert schema["properties"]["email"]["x-eventseam-personal-data"] == {"subject": "customer_id"}
    done = validate(validator, path)
    assert done.returncode == 0, done.stdout + done.stderr
