"""Item 7: every kind of bad input, interleaved with good events, through the real relay and worker.

Publish time (in this process, through EventSeam): an oversize payload, an unknown context and
an invalid flag value each raise their typed error and write nothing; a flag row with an invalid
value in the table is ignored (the configured mode stays). In the outbox: a record over the
relay's ``max_request_size`` is parked with its reason. On the broker (outbox rows as a foreign
or buggy writer could leave them, relayed as they are): malformed bytes, an unknown event type,
an unknown version, a missing event id and a wrong schema each reach the handler's dead-letter
topic with their DecodeError reason; a handler that raises and a database error inside a handler
reach it as ``handler-failed``. Every good neighbour (same aggregate, so same partition) is
applied exactly once, and the worker and relay are still running at the end.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine.codec import encode
from engine.dead_letter_topic import HANDLER_FAILED, read_dead_letter
from engine.errors import EventTooLargeError, SettingsError, UnknownContextError
from engine.modes import Mode
from outbox.flag_table import flags
from outbox.table import Status, outbox
from outbox.writer import write
from tests.kafka_broker import REPO_ROOT, read_topic, start_broker, unique_prefix, wait_for
from tests.reliability.bad_input_app import CRATE, CrateReceived, build, crates
from tests.reliability.figures import Run, record_figures
from tests.reliability.net_stack import RELAY, WORKER, running
from tests.reliability.verify import failed_bounds

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from sqlalchemy import Engine

    from engine.codec import EncodedEvent
    from engine.seam import EventSeam
    from tests.kafka_broker import Record

pytestmark = [pytest.mark.anyio, pytest.mark.broker, pytest.mark.postgres]

AGGREGATE = "crate-line"
MAX_REQUEST = 64 * 1024
HANDLER = "ledger.record_crate"


def crate(n: int, **fields: object) -> CrateReceived:
    """Crate ``n`` of the one aggregate every event of this scenario shares."""
    return CrateReceived(aggregate_id=AGGREGATE, n=n, source="intake", **fields)


def reshaped(
    event: CrateReceived,
    *,
    value: bytes | None = None,
    headers: dict[str, bytes | None] | None = None,
) -> EncodedEvent:
    """``event`` encoded, then its value replaced and/or headers changed (None drops one)."""
    encoded = encode(event)
    changes = headers or {}
    kept = [(k, changes.get(k, v)) for k, v in encoded.headers]
    new_headers = [(k, v) for k, v in kept if v is not None]
    return dataclasses.replace(
        encoded, value=encoded.value if value is None else value, headers=new_headers
    )


MALFORMED: dict[str, Callable[[CrateReceived], EncodedEvent]] = {
    "bad-json": lambda e: reshaped(e, value=b'{"n": 1,'),
    "unknown-type": lambda e: reshaped(e, headers={"ce_type": b"tests.reliability.CrateLost"}),
    "unknown-version": lambda e: reshaped(e, headers={"ce_dataversion": b"7"}),
    "missing-event-id": lambda e: reshaped(e, headers={"ce_id": None}),
    "schema-mismatch": lambda e: reshaped(e, value=json.dumps({"n": "seven"}).encode()),
}


def environment(database: str, bootstrap: str, prefix: str) -> dict[str, str]:
    """Settings of both processes (the relay's max_request_size is below the publish guard)."""
    return {
        "EVENTSEAM_DATABASE_URL": database,
        "EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "EVENTSEAM_KAFKA__ENABLE_IDEMPOTENCE": "off",
        "EVENTSEAM_KAFKA__MAX_REQUEST_SIZE": str(MAX_REQUEST),
        "EVENTSEAM_KAFKA__MAX_BATCH_SIZE": str(MAX_REQUEST // 2),
        "EVENTSEAM_RELAY__TOPIC_PREFIX": prefix,
        "EVENTSEAM_RELAY__POLL_INTERVAL": "0.05",
        "EVENTSEAM_RELAY__MAX_ATTEMPTS": "3",
        "EVENTSEAM_CONTEXTS__INTAKE": "broker",
        "EVENTSEAM_CONTEXTS__LEDGER": "broker",
        "EVENTSEAM_TOPICS__INTAKE__PARTITIONS": "3",
        "BAD_INPUT_DATABASE": database,
        "BAD_INPUT_BOOTSTRAP": bootstrap,
        "BAD_INPUT_PREFIX": prefix,
        "PYTHONPATH": str(REPO_ROOT),
    }


class Scenario:
    """The application side of the scenario: good neighbours and bad inputs, their outcomes."""

    def __init__(self, seam: EventSeam, engine: Engine) -> None:
        self.seam, self.engine = seam, engine
        self.good: list[CrateReceived] = []
        self.outcomes: dict[str, str] = {}

    def neighbour(self) -> None:
        """Publish the next good event."""
        event = crate(len(self.good) + 1000)
        self.good.append(event)
        self.publish(event)

    def publish(self, event: CrateReceived, context: str | None = None) -> None:
        """Publish ``event`` in a transaction of its own."""
        with Session(self.engine) as session, session.begin():
            self.seam.publish(session, event, context=context)

    def publish_time_errors(self) -> None:
        """Oversize payload, unknown context, invalid flag values: typed errors, nothing written."""
        self.neighbour()
        with pytest.raises(EventTooLargeError) as big:
            self.publish(crate(1, note="x" * 300_000))
        self.outcomes["oversize payload"] = f"EventTooLargeError ({big.value.size} bytes)"
        self.neighbour()
        with pytest.raises(UnknownContextError):
            self.publish(crate(2), context="nowhere")
        self.outcomes["unknown context"] = "UnknownContextError"
        self.neighbour()
        with self.engine.begin() as connection, pytest.raises(SettingsError):
            self.seam.flags.set_mode(connection, "intake", "sideways", by="test")
        self.outcomes["invalid flag value"] = "SettingsError"
        row = {"context": "intake", "mode": "sideways", "updated_by": "test"}
        with self.engine.begin() as connection, pytest.raises(IntegrityError):  # behind its back
            connection.execute(insert(flags).values(row))
        with self.engine.connect() as connection:
            self.seam.flags.refresh(connection, force=True)
        mode = self.seam.mode_of("intake").value
        self.outcomes["invalid flag value in the table"] = f"IntegrityError (CHECK), mode {mode}"
        self.neighbour()

    def bad_rows(self) -> None:
        """A record over the relay's max_request_size, malformed records, failing handlers."""
        self.publish(crate(3, note="y" * 100_000))
        self.neighbour()
        for number, make in enumerate(MALFORMED.values()):
            with self.engine.begin() as connection:
                write(connection, [make(crate(10 + number))], Mode.BROKER)
            self.neighbour()
        for event in (crate(4, fail="raise"), crate(5, fail="db")):
            self.publish(event)
            self.neighbour()

    def dead_letters(self, records: list[Record]) -> None:
        """The outcome of each dead-letter record."""
        for record in records:
            info = read_dead_letter(record.headers)
            kind = info.reason
            if info.reason == HANDLER_FAILED:
                rejected = info.exception_type.endswith("CrateRejectedError")
                kind = "handler raises" if rejected else "database error in handler"
            error = info.exception_type.rsplit(".", 1)[-1]
            self.outcomes[kind] = f"dead letter: {info.reason} ({error}, {info.attempts} attempts)"

    def figures(self, counts: dict[str, int]) -> dict[str, int | float | str]:
        """The outcome table and the neighbours' figures."""
        good = {str(event.event_id) for event in self.good}
        figures: dict[str, int | float | str] = {
            f"outcome: {kind}": text for kind, text in self.outcomes.items()
        }
        return figures | {
            "bad_kinds": len(self.outcomes),
            "good_neighbours": len(good),
            "neighbours_applied_once": sum(1 for e in good if counts.get(e) == 1),
            "consumer_lost": len(good - counts.keys()),
            "applied_twice": sum(1 for count in counts.values() if count > 1),
            "bad_applied": len(counts.keys() - good),
        }


EXPECTED_KINDS = {
    "oversize payload", "unknown context", "invalid flag value",
    "invalid flag value in the table", "record over max_request_size", *MALFORMED,
    "handler raises", "database error in handler",
}  # fmt: skip
BOUNDS = {
    "bad_kinds": f"== {len(EXPECTED_KINDS)}",
    "consumer_lost": "== 0",
    "applied_twice": "== 0",
    "bad_applied": "== 0",
    "rows_written_by_errors": "== 0",
    "relay_exit": "== 0",
    "worker_exit": "== 0",
}


async def test_bad_inputs_get_typed_errors_or_dead_letters_and_spare_neighbours(
    postgres_url: str, tmp_path: Path
) -> None:
    """Each bad input gets its typed error, parked row or dead letter with its reason; every good neighbour is applied once and no process dies."""
    run, broker, prefix = Run(), start_broker(), unique_prefix()
    seam = build(postgres_url, broker.bootstrap_servers, prefix)
    engine = create_engine(postgres_url)
    scenario = Scenario(seam, engine)
    try:
        scenario.publish_time_errors()
        written_by_errors = outbox_count(engine) - len(scenario.good)
        scenario.bad_rows()
        env = environment(postgres_url, broker.bootstrap_servers, prefix)
        app = "tests.reliability.bad_input_app:bad_input_app"
        relay_cmd = [sys.executable, "-c", RELAY, "relay", "--json-logs"]
        worker_cmd = [sys.executable, "-c", WORKER, app, "--context", "ledger", "--json-logs"]
        with (
            running(relay_cmd, env, tmp_path, "relay") as relay,
            running(worker_cmd, env, tmp_path, "worker") as worker,
        ):
            good = {str(event.event_id) for event in scenario.good}
            await wait_for(
                lambda: applied_counts(engine).keys() >= good,
                timeout=90,
                message=f"neighbours applied; see {tmp_path}",
            )
            dlq = f"{prefix}dlq.{HANDLER}"
            scenario.dead_letters(
                await read_topic(broker.bootstrap_servers, dlq, expected=len(MALFORMED) + 2)
            )
            await wait_for(lambda: parked_rows(engine), timeout=60, message="oversize parked")
            alive = relay.poll() is None and worker.poll() is None
        for reason in parked_rows(engine):
            scenario.outcomes["record over max_request_size"] = f"parked: {reason[:80]}"
        figures = scenario.figures(applied_counts(engine))
    finally:
        seam_engine = seam.session_factory.kw["bind"] if seam.session_factory else None
        if seam_engine is not None:
            seam_engine.dispose()
        engine.dispose()
        broker.stop()
    figures |= {
        "rows_written_by_errors": written_by_errors,
        "processes_alive": "yes" if alive else "no",
        "relay_exit": relay.returncode,
        "worker_exit": worker.returncode,
    }
    bounds = {**BOUNDS, "processes_alive": "yes"}
    record_figures("7-bad-input", "postgresql", figures, bounds=bounds, run=run)
    assert set(scenario.outcomes) == EXPECTED_KINDS, scenario.outcomes
    assert not failed_bounds(figures, BOUNDS), (failed_bounds(figures, BOUNDS), figures)
    assert figures["neighbours_applied_once"] == len(scenario.good), figures
    assert alive, (tmp_path / "worker.log").read_text()
    assert "ProgrammingError" in scenario.outcomes["database error in handler"]
    assert scenario.outcomes["invalid flag value in the table"].endswith("mode broker")


def outbox_count(engine: Engine) -> int:
    """Outbox rows so far."""
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(outbox)).scalar_one())


def applied_counts(engine: Engine) -> dict[str, int]:
    """reliability_crates rows per event id."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(crates.c.event_id, func.count()).group_by(crates.c.event_id)
        )
        return dict(rows.all())


def parked_rows(engine: Engine) -> list[str]:
    """last_error of the parked CrateReceived rows."""
    with engine.connect() as connection:
        query = select(outbox.c.last_error).where(
            outbox.c.status == Status.PARKED, outbox.c.type == CRATE
        )
        return [str(error) for (error,) in connection.execute(query)]
