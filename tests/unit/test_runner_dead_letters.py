"""Dead-letter records (headers, naming) and the consumer runner's settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.dead_letter_topic import (
    HANDLER_FAILED,
    MAX_MESSAGE_BYTES,
    DeadLetterTopics,
    dead_letter_message,
    original_headers,
    read_dead_letter,
)
from engine.errors import DecodeError, SettingsError
from engine.settings import ConsumerSettings, load_settings
from tests.unit.fake_records import FakeRecord

RECORD = FakeRecord(
    "eventseam.orders",
    2,
    41,
    b"order-7",
    b'{"n":1}',
    [("ce_id", b"abc"), ("ce_type", b"orders.OrderPlaced")],
)


def test_dead_letter_keeps_the_record_and_adds_error_headers() -> None:
    """Key, value and headers are kept byte for byte; the dlq_* headers say why, who, where and how often."""
    message = dead_letter_message(
        RECORD,
        reason=HANDLER_FAILED,
        handler="shipping.label",
        group="eventseam.shipping.label",
        attempts=5,
        error=KeyError("gone"),
    )
    assert (message.key, message.value) == (RECORD.key, RECORD.value)
    assert original_headers(message.headers) == RECORD.headers
    assert isinstance(message.headers, list)
    info = read_dead_letter(message.headers)
    assert (info.reason, info.handler, info.group, info.attempts) == (
        HANDLER_FAILED,
        "shipping.label",
        "eventseam.shipping.label",
        5,
    )
    assert (info.original_topic, info.original_partition, info.original_offset) == (
        "eventseam.orders",
        2,
        41,
    )
    assert (info.exception_type, info.exception_message) == ("KeyError", "'gone'")
    assert info.failed_at.tzinfo is not None


def test_dead_lettering_again_replaces_earlier_error_headers() -> None:
    """A replayed record that fails again carries one set of dlq_* headers, the newest."""
    first = dead_letter_message(
        RECORD,
        reason="bad-json",
        handler="a.b",
        group="g",
        attempts=0,
        error=DecodeError("bad-json", "x"),
    )
    replayed = FakeRecord("eventseam.orders", 0, 3, first.key, first.value, first.headers)
    second = dead_letter_message(
        replayed, reason=HANDLER_FAILED, handler="a.b", group="g", attempts=2, error=ValueError("y")
    )
    names = [name for name, _ in second.headers]
    assert names.count("dlq_reason") == 1
    assert read_dead_letter(second.headers).reason == HANDLER_FAILED
    assert (
        read_dead_letter(second.headers).attempts,
        read_dead_letter(second.headers).original_offset,
    ) == (2, 3)


def test_long_messages_are_cut_and_values_can_be_dropped() -> None:
    """The exception message is cut to MAX_MESSAGE_BYTES; drop_value keeps the coordinates and the size only."""
    message = dead_letter_message(
        RECORD,
        reason=HANDLER_FAILED,
        handler="a.b",
        group="g",
        attempts=1,
        error=ValueError("x" * 10_000),
        drop_value=True,
    )
    headers = dict(message.headers)
    assert len(headers["dlq_exception_message"]) == MAX_MESSAGE_BYTES
    assert message.value == b""
    assert headers["dlq_value_dropped"] == b"7"


def test_dead_letter_topic_names_follow_the_template() -> None:
    """The default template gives one topic per handler; other fields are available; bad templates and names are refused."""
    assert (
        DeadLetterTopics("{prefix}dlq.{handler}", "eventseam.")(
            "shipping.label", "shipping", "eventseam.orders"
        )
        == "eventseam.dlq.shipping.label"
    )
    assert (
        DeadLetterTopics("{topic}.dlq", "p.")("shipping.label", "shipping", "p.orders")
        == "p.orders.dlq"
    )
    with pytest.raises(SettingsError, match="unknown fields"):
        DeadLetterTopics("{prefix}{partition}", "p.")
    with pytest.raises(SettingsError, match="not a legal Kafka topic name"):
        DeadLetterTopics("{prefix}dlq {handler}", "p.")("a.b", "a", "t")


def test_consumer_settings_validate_and_read_the_environment() -> None:
    """A heartbeat above a third of the session timeout is refused; EVENTSEAM_CONSUMER__* variables are read."""
    with pytest.raises(ValidationError, match="heartbeat_interval_ms"):
        ConsumerSettings(session_timeout_ms=6000, heartbeat_interval_ms=3000)
    environ = {"EVENTSEAM_CONSUMER__MAX_ATTEMPTS": "7", "EVENTSEAM_CONSUMER__GROUP_PREFIX": "x."}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        settings = load_settings().consumer
    assert (settings.max_attempts, settings.group_prefix, settings.max_poll_records) == (
        7,
        "x.",
        500,
    )
