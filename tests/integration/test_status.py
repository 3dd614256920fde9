"""collect_status and ``eventseam status`` on a real database (SQLite and PostgreSQL), no broker."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, insert, update
from sqlalchemy.orm import sessionmaker

from engine.cli.status import status as status_command
from engine.contexts import BoundedContext
from engine.events import DomainEvent
from engine.modes import Mode
from engine.seam import EventSeam
from engine.settings import BusSettings, EventSeamSettings, KafkaSettings
from engine.status import collect_status
from outbox.lease_table import relay_lease, relay_member
from outbox.leases import epoch_now
from outbox.table import Status, metadata, outbox

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

pytestmark = pytest.mark.anyio


class EntryPosted(DomainEvent, name="tests.status.EntryPosted", version=1):
    """A ledger entry was posted."""

    n: int
    fail: bool = False


class NoteFiled(DomainEvent, name="tests.status.NoteFiled", version=1):
    """An archive note was filed."""

    n: int


ledger = BoundedContext("ledger", owns=[EntryPosted])
archive = BoundedContext("archive", owns=[NoteFiled])
audit = BoundedContext("audit")


@audit.handler(EntryPosted, name="check_entry_on_entry_posted")
def check_entry_on_entry_posted(event: EntryPosted) -> None:
    """Fail on the entries marked ``fail``."""
    if event.fail:
        raise ValueError(f"entry {event.n} does not balance")


def build_seam(url: str, *, bootstrap: str | None = None) -> EventSeam:
    """ledger in broker mode, archive in dual mode, audit local; tables created."""
    engine = create_engine(url)
    metadata.create_all(engine)
    settings = EventSeamSettings(
        database_url=url,
        contexts={"ledger": Mode.BROKER, "archive": Mode.DUAL},
        kafka=KafkaSettings(bootstrap_servers=bootstrap, request_timeout_ms=2000),
        bus=BusSettings(max_attempts=1),
    )
    return EventSeam(
        settings, [ledger, archive, audit], session_factory=sessionmaker(engine), consume=False
    )


def status_app() -> EventSeam:
    """Application factory for the CLI tests (STATUS_TEST_DATABASE, STATUS_TEST_BOOTSTRAP)."""
    return build_seam(
        os.environ["STATUS_TEST_DATABASE"], bootstrap=os.environ.get("STATUS_TEST_BOOTSTRAP")
    )


@pytest.fixture
def seam(database_url: str) -> Iterator[EventSeam]:
    """The test application on a fresh database; its engine disposed afterwards."""
    app = build_seam(database_url)
    yield app
    engine_of(app).dispose()


def engine_of(seam: EventSeam) -> Engine:
    """The engine behind the seam's sessions."""
    assert seam.session_factory is not None
    bind = seam.session_factory.kw["bind"]
    assert isinstance(bind, Engine)
    return bind


def publish_rows(seam: EventSeam, entries: int, notes: int) -> None:
    """Publish ``entries`` EntryPosted (pending rows) and ``notes`` NoteFiled (pending, dual)."""
    with seam.transaction() as unit:
        unit.publish(*(EntryPosted(aggregate_id=f"e{n % 3}", n=n) for n in range(entries)))
        unit.publish(*(NoteFiled(aggregate_id=f"n{n}", n=n) for n in range(notes)))


def age_rows(engine: Engine, context: str, seconds: float) -> None:
    """Make every row of ``context`` as old as ``seconds``."""
    with engine.begin() as connection:
        connection.execute(
            update(outbox)
            .where(outbox.c.aggregatetype == context)
            .values(created_at=datetime.now(UTC) - timedelta(seconds=seconds))
        )


def park_rows(engine: Engine, context: str, count: int) -> None:
    """Park the first ``count`` rows of ``context``."""
    with engine.begin() as connection:
        seqs = (
            connection.execute(
                outbox.select()
                .with_only_columns(outbox.c.seq)
                .where(outbox.c.aggregatetype == context)
                .order_by(outbox.c.seq)
                .limit(count)
            )
            .scalars()
            .all()
        )
        connection.execute(
            update(outbox)
            .where(outbox.c.seq.in_(seqs))
            .values(status=Status.PARKED, attempts=10, last_error="too large")
        )


async def test_backlog_age_and_parked_rows_per_context(seam: EventSeam) -> None:
    """Pending rows, the oldest pending row's age and parked rows are counted per context."""
    publish_rows(seam, entries=9, notes=4)
    engine = engine_of(seam)
    park_rows(engine, "ledger", 2)
    age_rows(engine, "archive", 3600)
    report = await collect_status(seam, kafka=False)
    by_name = {context.name: context for context in report.contexts}
    assert (by_name["ledger"].backlog, by_name["ledger"].parked) == (7, 2)
    assert (by_name["archive"].backlog, by_name["archive"].parked) == (4, 0)
    assert (by_name["audit"].backlog, by_name["audit"].parked) == (0, 0)
    assert by_name["audit"].oldest_pending_age_seconds is None
    archive_age = by_name["archive"].oldest_pending_age_seconds
    assert archive_age is not None
    assert 3600 <= archive_age < 7200
    assert report.errors == []


async def test_modes_and_their_origins(seam: EventSeam) -> None:
    """Each context's mode comes with its origin: the flag table, settings or the default."""
    with engine_of(seam).begin() as connection:
        seam.flags.set_mode(connection, "audit", Mode.DUAL, by="test")
    report = await collect_status(seam, kafka=False)
    modes = {context.name: (context.mode, context.mode_origin) for context in report.contexts}
    assert modes == {
        "ledger": ("broker", "settings"),
        "archive": ("dual", "settings"),
        "audit": ("dual", "table"),
    }


async def test_bus_dead_letters_while_the_seam_runs_and_from_the_table_after(
    seam: EventSeam,
) -> None:
    """While the seam runs here its bus's store counts them; stopped, the stored rows do."""
    async with anyio.create_task_group() as group:
        await group.start(seam.run)
        try:
            await seam.bus.publish(
                *(EntryPosted(aggregate_id="e", n=n, fail=n < 2, source="ledger") for n in range(4))
            )
            await seam.join()
            report = await collect_status(seam, kafka=False)
        finally:
            await seam.aclose()
    handler = "audit.check_entry_on_entry_posted"
    [audit_status] = [context for context in report.contexts if context.name == "audit"]
    assert audit_status.bus_dead_letters == 2
    assert [(h.name, h.bus_dead_letters) for h in audit_status.handlers] == [(handler, 2)]
    stopped = await collect_status(seam, kafka=False)
    counts = {context.name: context.bus_dead_letters for context in stopped.contexts}
    assert counts["audit"] == 2
    assert {count for name, count in counts.items() if name != "audit"} == {0}


async def test_unreachable_kafka_is_reported_and_database_figures_remain(
    database_url: str,
) -> None:
    """A broker that does not answer leaves lag and dead letters unknown, with an error line."""
    app = build_seam(database_url, bootstrap="127.0.0.1:9")
    try:
        publish_rows(app, entries=3, notes=0)
        report = await collect_status(app, kafka_wait=5)
    finally:
        engine_of(app).dispose()
    [error] = report.errors
    assert error.startswith("kafka:")
    [ledger_status] = [context for context in report.contexts if context.name == "ledger"]
    assert ledger_status.backlog == 3
    handlers = [h for context in report.contexts for h in context.handlers]
    assert handlers
    assert {(h.lag, h.dead_letters) for h in handlers} == {(None, None)}


def invoke(monkeypatch: pytest.MonkeyPatch, url: str, *args: str) -> tuple[int, str]:
    """``eventseam --app tests.integration.test_status:status_app status ARGS``."""
    monkeypatch.setenv("STATUS_TEST_DATABASE", url)
    result = CliRunner().invoke(
        status_command, list(args), obj={"app_path": f"{__name__}:status_app"}
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def check_schema(data: dict[str, Any]) -> None:
    """Fail unless ``data`` follows the ``status --json`` schema, version 2."""
    assert data["version"] == 2
    assert set(data) == {
        "version", "generated_at", "database", "kafka", "contexts", "errors", "relays"
    }  # fmt: skip
    datetime.fromisoformat(data["generated_at"])
    assert set(data["relays"]) == {"slots", "free", "relays"}
    for relay in data["relays"]["relays"]:
        assert set(relay) == {"owner", "slots", "expires_in_seconds"}
    for context in data["contexts"]:
        assert set(context) == {
            "name", "mode", "mode_origin", "known", "backlog", "oldest_pending_age_seconds",
            "parked", "dead_letters", "bus_dead_letters", "handlers",
        }  # fmt: skip
        for handler in context["handlers"]:
            assert set(handler) == {
                "name", "context", "group", "topics", "lag", "partitions",
                "dead_letter_topics", "dead_letters", "bus_dead_letters",
            }  # fmt: skip
            for partition in handler["partitions"]:
                assert set(partition) == {
                    "topic", "partition", "committed", "high_watermark", "lag"
                }  # fmt: skip


def test_json_output_follows_the_schema(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    """``status --json`` prints one JSON document with the documented fields and figures."""
    app = build_seam(database_url)
    try:
        publish_rows(app, entries=5, notes=1)
    finally:
        engine_of(app).dispose()
    code, output = invoke(monkeypatch, database_url, "--json")
    assert code == 0, output
    data = json.loads(output)
    check_schema(data)
    backlog = {context["name"]: context["backlog"] for context in data["contexts"]}
    assert backlog == {"ledger": 5, "archive": 1, "audit": 0}
    assert data["kafka"] is None
    assert data["errors"] == []
    [audit_json] = [context for context in data["contexts"] if context["name"] == "audit"]
    assert audit_json["handlers"][0]["group"] == "eventseam.audit.check_entry_on_entry_posted"


def test_tables_for_people(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    """Without --json the figures are printed as a table, one row per context."""
    app = build_seam(database_url)
    try:
        publish_rows(app, entries=2, notes=0)
    finally:
        engine_of(app).dispose()
    code, output = invoke(monkeypatch, database_url)
    assert code == 0, output
    ledger_line = next(line for line in output.splitlines() if "ledger" in line)
    assert "broker (settings)" in ledger_line
    assert " 2 " in ledger_line
    assert "not read (no Kafka bootstrap servers)" in output


def lease_rows(
    engine: Engine, members: dict[str, float], leases: Sequence[tuple[str | None, float]]
) -> None:
    """Relay membership (owner -> seconds until it lapses) and one lease row per slot, in order
    ((owner, seconds until it lapses)), on the database clock as relays write them."""
    with engine.begin() as connection:
        for owner, seconds in members.items():
            connection.execute(
                insert(relay_member).values(owner=owner, expires_at=epoch_now() + seconds)
            )
        for slot, (holder, lapses) in enumerate(leases):
            connection.execute(
                insert(relay_lease).values(slot=slot, owner=holder, expires_at=epoch_now() + lapses)
            )


async def test_relays_are_the_live_members_with_their_unexpired_slots(seam: EventSeam) -> None:
    """A relay counts while its membership has not lapsed, with the slots whose lease has not; the rest are free."""
    members = {"relay-a": 10.0, "relay-b": 10.0, "relay-dead": -5.0}
    leases = [("relay-a", 9.0)] * 3 + [("relay-b", -1.0), ("relay-dead", 3.0), ("relay-a", -2.0)]
    lease_rows(engine_of(seam), members, leases)
    report = await collect_status(seam, kafka=False)
    assert report.relays is not None
    assert (report.relays.slots, report.relays.free) == (6, 3)
    assert [(relay.owner, relay.slots) for relay in report.relays.relays] == [
        ("relay-a", 3),
        ("relay-b", 0),
    ]
    assert all(5.0 < relay.expires_in_seconds <= 10.0 for relay in report.relays.relays)
    assert report.errors == []


def test_relays_for_people(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    """No live relay while rows wait prints a warning line; live relays print a table of their slots."""
    app = build_seam(database_url)
    try:
        publish_rows(app, entries=2, notes=0)
        code, output = invoke(monkeypatch, database_url)
        assert code == 0, output
        assert "relays: none running (0 slots free): 2 pending rows wait" in output
        lease_rows(engine_of(app), {"relay-a": 10.0}, [("relay-a", 10.0)] * 2 + [(None, 0.0)])
        code, output = invoke(monkeypatch, database_url)
    finally:
        engine_of(app).dispose()
    assert code == 0, output
    assert "relays: 1 running, 3 slots, 1 free" in output
    relay_line = next(line for line in output.splitlines() if "relay-a" in line)
    assert " 2 " in relay_line


def test_unloadable_application_exits_2() -> None:
    """An --app that does not exist exits with status 2 and says why."""
    result = CliRunner().invoke(status_command, [], obj={"app_path": "tests.nowhere:app"})
    assert result.exit_code == 2
    assert "cannot load the application" in result.output
