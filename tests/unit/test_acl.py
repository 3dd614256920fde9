"""``eventseam acl``: Kafka ACLs derived from the registry, with the runner's and relay's own names."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from app.bootstrap import APP_PATH
from engine.acl import AclError, kafka_acls_commands, required_acls
from engine.cli import main
from engine.contexts import BoundedContext, ContextMap
from engine.dead_letter_topic import DeadLetterTopics
from engine.events import DomainEvent
from engine.runner import ConsumerRunner
from engine.seam import EventSeam
from engine.settings import ConsumerSettings, EventSeamSettings, KafkaSettings, RelaySettings
from outbox.topics import TopicNamer


class RoomBooked(DomainEvent, name="acltest.RoomBooked", version=1):
    """Owned by hotel."""

    room: int


class GuestBilled(DomainEvent, name="acltest.GuestBilled", version=1):
    """Owned by billing."""

    cents: int


hotel = BoundedContext("hotel", owns=[RoomBooked])
billing = BoundedContext("billing", owns=[GuestBilled], subscribes=[RoomBooked])


@billing.handler(RoomBooked, name="bill_guest_on_room_booked")
def bill_guest_on_room_booked(event: RoomBooked) -> None:
    """Bills the guest."""


@hotel.handler(GuestBilled, name="note_bill_on_guest_billed")
def note_bill_on_guest_billed(event: GuestBilled) -> None:
    """Notes the bill."""


def settings(**values: object) -> EventSeamSettings:
    """Non-default names everywhere, so a re-derived name would not match."""
    return EventSeamSettings(
        kafka=KafkaSettings(bootstrap_servers="kafka:9092"),  # never contacted
        relay=RelaySettings(topic_prefix="prod.", topic_template="{prefix}{context}.events"),
        consumer=ConsumerSettings(
            group_prefix="grp-", dlq_topic_template="{prefix}{context}.dead.{handler}"
        ),
        **values,  # type: ignore[arg-type]  # the tests pass valid sections only
    )


def app() -> EventSeam:
    """The two contexts under ``settings()``, consumers off (no broker, no tables needed)."""
    factory = sessionmaker(create_engine("sqlite://"))  # the runner wants one; never used here
    return EventSeam(settings(), [hotel, billing], session_factory=factory, consume=False)


def grants(seam: EventSeam) -> set[tuple[str, str, str, str]]:
    """(principal, resource type, resource, operation) of every rule."""
    return {
        (r.principal, r.resource_type, r.resource, r.operation)
        for r in required_acls(seam.contexts, seam.settings)
    }


def test_the_rules_use_the_runner_and_relay_names() -> None:
    """Topics, groups and dead-letter topics are the ones the relay and ConsumerRunner use."""
    seam = app()
    runner = ConsumerRunner(seam, ["billing"])
    spec = runner.specs[0]
    (read_topic,) = runner.topics()[spec.name]
    namer = TopicNamer(seam.settings.relay)
    dead_letter = DeadLetterTopics(
        seam.settings.consumer.dlq_topic_template, seam.settings.relay.topic_prefix
    )(spec.name, "billing", read_topic)
    rules = grants(seam)
    relay = "User:eventseam-relay"
    assert {
        (relay, "TOPIC", namer("hotel", RoomBooked.event_name), op) for op in ("WRITE", "DESCRIBE")
    } <= rules
    assert {(relay, "TOPIC", "prod.billing.events", op) for op in ("WRITE", "DESCRIBE")} <= rules
    assert ("User:billing", "TOPIC", read_topic, "READ") in rules
    assert ("User:billing", "TOPIC", read_topic, "DESCRIBE") in rules
    assert ("User:billing", "GROUP", runner.group_id(spec), "READ") in rules
    assert ("User:billing", "TOPIC", dead_letter, "WRITE") in rules
    assert read_topic == "prod.hotel.events"
    assert runner.group_id(spec) == "grp-billing.bill_guest_on_room_booked"
    assert dead_letter == "prod.billing.dead.billing.bill_guest_on_room_booked"
    assert not any(
        p == "User:billing" and op == "WRITE" and t == "prod.billing.events"
        for p, _, t, op in rules
    )


def test_principals_come_from_settings() -> None:
    """EVENTSEAM_ACL__PRINCIPALS__<CONTEXT> and __RELAY_PRINCIPAL replace the defaults; unknown contexts are refused."""
    chosen = settings(
        acl={"relay_principal": "User:relay", "principals": {"billing": "User:CN=billing"}}
    )
    rules = {r.principal for r in required_acls(ContextMap([hotel, billing]), chosen)}
    assert rules == {"User:relay", "User:CN=billing", "User:hotel"}
    unknown = settings(acl={"principals": {"bilings": "User:x"}})
    with pytest.raises(AclError, match="'bilings'"):
        required_acls(ContextMap([hotel, billing]), unknown)


def test_an_unowned_subscription_cannot_be_named() -> None:
    """A handler on an event no registered context owns raises AclError instead of guessing a topic."""
    with pytest.raises(AclError, match=r"acltest\.RoomBooked, which no registered context owns"):
        required_acls(ContextMap([billing]), settings())


def test_kafka_acls_lines_merge_operations_and_quote() -> None:
    """One kafka-acls.sh line per principal and resource, shell-quoted, operations in kafka-acls spelling."""
    seam = app()
    lines = kafka_acls_commands(
        required_acls(seam.contexts, seam.settings), "kafka:9093", "admin.properties"
    )
    relay_line = next(line for line in lines if "prod.hotel.events" in line and "relay" in line)
    words = shlex.split(relay_line)
    assert words[:6] == [
        "kafka-acls.sh",
        "--bootstrap-server",
        "kafka:9093",
        "--command-config",
        "admin.properties",
        "--add",
    ]
    operations = [words[i + 1] for i, word in enumerate(words) if word == "--operation"]
    assert sorted(operations) == ["Create", "Describe", "DescribeConfigs", "Write"]
    assert words[-4:] == ["--topic", "prod.hotel.events", "--resource-pattern-type", "literal"]
    targets = [
        (words[words.index("--allow-principal") + 1], words[-3])
        for words in map(shlex.split, lines)
    ]
    assert len(targets) == len(set(targets))


def test_the_command_prints_table_kafka_acls_and_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`eventseam acl` renders the same rules as a table, kafka-acls.sh lines and JSON."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    base = ["--app", f"{__name__}:app", "acl"]
    table = runner.invoke(main, base, env={"COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    assert "grp-billing.bill_guest_on_room_booked" in table.output
    as_json = runner.invoke(main, [*base, "--json"])
    assert as_json.exit_code == 0, as_json.output
    rules = json.loads(as_json.output)
    seam = app()
    assert len(rules) == len(required_acls(seam.contexts, seam.settings))
    assert {"principal", "resource_type", "resource", "operation", "pattern_type"} <= set(rules[0])
    lines = runner.invoke(main, [*base, "--format", "kafka-acls", "--bootstrap-server", "k:9092"])
    assert lines.exit_code == 0, lines.output
    assert all(
        line.startswith("kafka-acls.sh --bootstrap-server k:9092 --add")
        for line in lines.output.splitlines()
    )


def test_the_readme_shows_real_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's `eventseam acl --format kafka-acls` lines are what the example monolith prints."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("$ eventseam acl --format kafka-acls", 1)[1].split("```", 1)[0]
    command, *shown = block.strip().splitlines()
    for name in [name for name in os.environ if name.startswith("EVENTSEAM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("EVENTSEAM_APP", APP_PATH)  # as the README's commands assume
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["acl", "--format", "kafka-acls", *shlex.split(command)])
    assert result.exit_code == 0, result.output
    printed = [
        line for line in result.output.splitlines() if "relay" in line or "User:shipping" in line
    ]
    assert printed == shown
