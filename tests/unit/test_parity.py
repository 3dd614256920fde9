"""Parity between the local path and the Kafka path: the comparison, the data it reads, the command."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, insert
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import StaticPool

from engine import inbox
from engine.broker_view import TopicContents, TopicRecord, record_of
from engine.cli.parity import parity as parity_command
from engine.contexts import BoundedContext
from engine.events import DomainEvent
from engine.modes import Mode
from engine.parity import (
    ContextParity,
    Missing,
    OutboxEntry,
    Reason,
    Subscriber,
    compare,
    context_parity,
    subscribers,
)
from engine.seam import EventSeam
from engine.settings import EventSeamSettings
from outbox.table import Status, metadata, outbox

if TYPE_CHECKING:
    from collections.abc import Sequence

    from click.testing import Result

    from engine.broker_view import Partition

TOPIC = "eventseam.desk"
APP_PATH = "tests.unit.test_parity:cli_app"


class TicketOpened(DomainEvent, name="tests.parity.TicketOpened", version=1):
    """A ticket was opened at the desk."""

    n: int


class TicketNoted(DomainEvent, name="tests.parity.TicketNoted", version=1):
    """A note was added to a ticket (nobody in courier listens)."""

    n: int


desk = BoundedContext("desk", owns=[TicketOpened, TicketNoted])
courier = BoundedContext("courier")
audit = BoundedContext("audit")


@courier.handler(TicketOpened, name="dispatch_on_ticket_opened")
def dispatch(event: TicketOpened) -> None:
    """Courier reacts to opened tickets."""


@audit.handler(TicketOpened, TicketNoted, name="log_ticket")
def log_ticket(event: DomainEvent) -> None:
    """Audit listens to every desk event."""


def ids(count: int) -> list[uuid.UUID]:
    """``count`` event ids in ascending order (missing ids are reported sorted)."""
    return sorted(uuid.uuid4() for _ in range(count))


def subscriber(*, detached: bool = False) -> Subscriber:
    """courier's handler of TicketOpened as parity sees it."""
    return Subscriber(
        courier.handlers[0],
        "eventseam.courier.dispatch_on_ticket_opened",
        frozenset({"tests.parity.TicketOpened"}),
        detached,
    )


def row(event_id: uuid.UUID, mode: Mode, status: str) -> OutboxEntry:
    """An outbox row of a TicketOpened."""
    return OutboxEntry(event_id, "tests.parity.TicketOpened", mode, status)


def on_topic(event_id: uuid.UUID, offset: int, partition: int = 0) -> TopicRecord:
    """A TicketOpened record at ``offset`` of ``partition``."""
    return TopicRecord(event_id, "tests.parity.TicketOpened", TOPIC, partition, offset)


def test_dual_events_delivered_by_both_paths_are_in_parity() -> None:
    """Dual events applied (inbox) and consumed (below the committed offset) leave nothing missing and no lag."""
    a, b = ids(2)
    result = compare(
        subscriber(),
        [row(a, Mode.DUAL, Status.PUBLISHED), row(b, Mode.DUAL, Status.PUBLISHED)],
        [on_topic(a, 0), on_topic(b, 1)],
        {(TOPIC, 0): 2},
        {(TOPIC, 0): 2},
        set(),
        {a, b},
    )
    assert result.ok
    assert (result.local_delivered, result.local_expected) == (2, 2)
    assert (result.kafka_delivered, result.kafka_expected) == (2, 2)
    assert result.lag == 0


def test_records_past_the_committed_offset_are_lag() -> None:
    """A dual event the bus applied but the group has not consumed is missing on Kafka, as lag."""
    a, b = ids(2)
    result = compare(
        subscriber(),
        [row(a, Mode.DUAL, Status.PUBLISHED), row(b, Mode.DUAL, Status.PUBLISHED)],
        [on_topic(a, 0), on_topic(b, 1)],
        {(TOPIC, 0): 2},
        {(TOPIC, 0): 1},
        set(),
        {a, b},
    )
    assert result.missing_on_kafka == (Missing(b, Reason.LAG),)
    assert result.missing_locally == ()
    assert result.lag == 1
    assert not result.ok


def test_rows_not_on_the_topic_say_why() -> None:
    """Pending, parked and published-but-absent rows are missing on Kafka as not-relayed, parked and not-on-topic."""
    pending, parked, lost = ids(3)
    rows = [
        row(pending, Mode.BROKER, Status.PENDING),
        row(parked, Mode.BROKER, Status.PARKED),
        row(lost, Mode.BROKER, Status.PUBLISHED),
    ]
    result = compare(subscriber(), rows, [], {}, {}, set(), set())
    assert set(result.missing_on_kafka) == {
        Missing(pending, Reason.NOT_RELAYED),
        Missing(parked, Reason.PARKED),
        Missing(lost, Reason.NOT_ON_TOPIC),
    }
    assert result.local_expected == 0  # broker events never travel on the bus


def test_dead_lettered_records_are_not_delivered_although_committed() -> None:
    """A record the group committed past but dead-lettered is missing on Kafka as dead-lettered."""
    (a,) = ids(1)
    result = compare(
        subscriber(),
        [row(a, Mode.DUAL, Status.PUBLISHED)],
        [on_topic(a, 0)],
        {(TOPIC, 0): 1},
        {(TOPIC, 0): 1},
        {a},
        {a},
    )
    assert result.missing_on_kafka == (Missing(a, Reason.DEAD_LETTERED),)
    assert result.kafka_delivered == 0


def test_local_events_not_applied_are_missing_locally() -> None:
    """Local and dual events without an inbox row are missing on the local path; broker ones are not expected there."""
    local, dual, broker = ids(3)
    rows = [
        row(local, Mode.LOCAL, Status.LOCAL),
        row(dual, Mode.DUAL, Status.PUBLISHED),
        row(broker, Mode.BROKER, Status.PUBLISHED),
    ]
    records = [on_topic(dual, 0), on_topic(broker, 1)]
    result = compare(subscriber(), rows, records, {(TOPIC, 0): 2}, {(TOPIC, 0): 2}, set(), {broker})
    assert result.missing_locally == (
        Missing(local, Reason.NOT_APPLIED),
        Missing(dual, Reason.NOT_APPLIED),
    )
    assert result.missing_on_kafka == ()
    assert (result.local_expected, result.kafka_expected) == (2, 2)


def test_a_detached_handler_has_no_local_path() -> None:
    """For a detached handler local events never arrive (local-mode) and dual ones are expected from Kafka only."""
    local, dual = ids(2)
    rows = [row(local, Mode.LOCAL, Status.LOCAL), row(dual, Mode.DUAL, Status.PUBLISHED)]
    result = compare(
        subscriber(detached=True),
        rows,
        [on_topic(dual, 0)],
        {(TOPIC, 0): 1},
        {(TOPIC, 0): 1},
        set(),
        {dual},
    )
    assert result.missing_on_kafka == (Missing(local, Reason.LOCAL_MODE),)
    assert result.missing_locally == ()
    assert result.local_expected == 0


def test_events_known_only_from_the_topic_are_expected_on_kafka() -> None:
    """A relayed event whose row was deleted counts on the Kafka path only; unpartitioned lag adds up."""
    a, b = ids(2)
    result = compare(
        subscriber(),
        [],
        [on_topic(a, 0, partition=0), on_topic(b, 0, partition=1)],
        {(TOPIC, 0): 1, (TOPIC, 1): 1},
        {(TOPIC, 0): 1},
        set(),
        {a},
    )
    assert result.missing_on_kafka == (Missing(b, Reason.LAG),)
    assert (result.kafka_delivered, result.kafka_expected, result.local_expected) == (1, 2, 0)
    assert result.lag == 1


def test_subscribers_are_every_handler_of_the_contexts_events() -> None:
    """Handlers of any context subscribed to desk's events are listed, detached ones marked, with their groups."""
    seam = EventSeam(EventSeamSettings(detached=["courier"]), [desk, courier, audit])
    found = {s.spec.name: s for s in subscribers(seam, "desk")}
    assert set(found) == {"courier.dispatch_on_ticket_opened", "audit.log_ticket"}
    assert found["courier.dispatch_on_ticket_opened"].detached
    assert found["audit.log_ticket"].event_types == {
        "tests.parity.TicketOpened",
        "tests.parity.TicketNoted",
    }
    assert found["audit.log_ticket"].group == "eventseam.audit.log_ticket"


def test_record_of_reads_the_cloudevents_headers() -> None:
    """A record's ce_id and ce_type name its event; a record without a valid ce_id is skipped."""
    (a,) = ids(1)
    headers = [("ce_id", str(a).encode()), ("ce_type", b"tests.parity.TicketOpened")]
    assert record_of(TOPIC, 2, 7, headers) == TopicRecord(
        a, "tests.parity.TicketOpened", TOPIC, 2, 7
    )
    assert record_of(TOPIC, 0, 0, [("ce_id", b"nope")]) is None


class FakeView:
    """A KafkaView over fixed topic contents and committed offsets."""

    def __init__(
        self, topics: dict[str, TopicContents], committed: dict[str, dict[Partition, int]]
    ) -> None:
        self.topics, self.offsets = topics, committed
        self.calls: list[str] = []

    async def read(self, topic: str) -> TopicContents:
        self.calls.append(f"read {topic}")
        return self.topics.get(topic, TopicContents([], {}))

    async def committed(self, group: str, topics: Sequence[str]) -> dict[Partition, int]:
        self.calls.append(f"committed {group}")
        return self.offsets.get(group, {})


def memory_seam(**settings: object) -> EventSeam:
    """desk, courier and audit on an in-memory SQLite database holding the eventseam tables."""
    engine = create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    metadata.create_all(engine)
    return EventSeam(
        EventSeamSettings(**settings),  # type: ignore[arg-type]
        [desk, courier, audit],
        session_factory=sessionmaker(engine),
    )


@pytest.mark.anyio
async def test_context_parity_reads_the_outbox_inbox_offsets_and_topics() -> None:
    """context_parity reads offsets before topics and reports each handler from the outbox, the inbox and Kafka."""
    seam = memory_seam()
    opened, noted, lagging = ids(3)
    assert seam.session_factory is not None
    with seam.session_factory() as session, session.begin():
        for event_id, kind, mode in (
            (opened, "tests.parity.TicketOpened", "dual"),
            (noted, "tests.parity.TicketNoted", "dual"),
            (lagging, "tests.parity.TicketOpened", "broker"),
        ):
            session.execute(insert(outbox).values(_outbox_row(event_id, kind, mode)))
        inbox.record(session, "courier.dispatch_on_ticket_opened", opened)
        inbox.record(session, "audit.log_ticket", opened)
        inbox.record(session, "audit.log_ticket", noted)
    records = [
        TopicRecord(opened, "tests.parity.TicketOpened", TOPIC, 0, 0),
        TopicRecord(noted, "tests.parity.TicketNoted", TOPIC, 0, 1),
        TopicRecord(lagging, "tests.parity.TicketOpened", TOPIC, 0, 2),
    ]
    view = FakeView(
        {TOPIC: TopicContents(records, {(TOPIC, 0): 3})},
        {
            "eventseam.courier.dispatch_on_ticket_opened": {(TOPIC, 0): 2},
            "eventseam.audit.log_ticket": {(TOPIC, 0): 3},
        },
    )
    report = await context_parity(seam, "desk", view)
    by_name = {h.handler: h for h in report.handlers}
    courier_parity, audit_parity = (
        by_name["courier.dispatch_on_ticket_opened"],
        by_name["audit.log_ticket"],
    )
    assert view.calls[:3] == [
        "committed eventseam.courier.dispatch_on_ticket_opened",
        "committed eventseam.audit.log_ticket",
        f"read {TOPIC}",
    ]
    assert report.outbox == {"dual/published": 2, "broker/published": 1}
    assert courier_parity.missing_on_kafka == (Missing(lagging, Reason.LAG),)
    assert (courier_parity.local_delivered, courier_parity.local_expected) == (1, 1)
    assert courier_parity.lag == 1
    assert audit_parity.missing_locally == ()
    assert audit_parity.missing_on_kafka == ()
    assert (audit_parity.kafka_delivered, audit_parity.applied) == (3, 2)
    assert not report.ok


def _outbox_row(event_id: uuid.UUID, kind: str, mode: str) -> dict[str, object]:
    from datetime import UTC, datetime

    return {
        "id": event_id,
        "aggregatetype": "desk",
        "aggregateid": "t-1",
        "type": kind,
        "version": 1,
        "payload": b"{}",
        "headers": b"",
        "keyhash": 0,
        "mode": mode,
        "status": Status.PUBLISHED,
        "occurred_at": datetime.now(UTC),
    }


def cli_app() -> EventSeam:
    """The application the parity command loads (--app): Kafka configured, in-memory database."""
    return memory_seam(kafka={"bootstrap_servers": "127.0.0.1:1"})


def invoke(*arguments: str) -> Result:
    """``eventseam --app APP_PATH parity ARGUMENTS`` (the command as the CLI group calls it)."""
    return CliRunner().invoke(parity_command, list(arguments), obj={"app_path": APP_PATH})


def test_parity_command_rejects_an_unknown_context() -> None:
    """`eventseam parity --context nope` exits 2 and names the known contexts."""
    result = invoke("--context", "nope")
    assert result.exit_code == 2, result.output
    assert "desk" in result.output


def test_parity_command_exits_1_when_not_in_parity_and_prints_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command prints the report (JSON with --json) and exits 1 when an event is missing on a path."""
    (a,) = ids(1)
    missing = compare(subscriber(), [row(a, Mode.DUAL, Status.PENDING)], [], {}, {}, set(), {a})

    async def fake_parity(host: object, context: str) -> ContextParity:
        return ContextParity(context, Mode.DUAL, (TOPIC,), Counter({"dual/pending": 1}), [missing])

    monkeypatch.setattr("engine.cli.parity.context_parity", fake_parity)
    result = invoke("--context", "desk", "--json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["ok"] is False
    (handler,) = data["handlers"]
    assert handler["missing"] == {"not-relayed": 1}
    assert handler["missing_on_kafka"] == [{"event_id": str(a), "reason": "not-relayed"}]
    table = invoke("--context", "desk")
    assert table.exit_code == 1
    assert f"{a} (not-relayed)" in table.output.replace("\n", " ")
    assert "not in parity" in table.output
