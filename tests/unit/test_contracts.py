"""Contracts generation: per-event JSON Schemas, the AsyncAPI document and the directory files."""

from __future__ import annotations

import enum
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel, Field

from app.bootstrap import CONTEXTS
from engine.codec import encode
from engine.contexts import BoundedContext, ContextMap
from engine.contracts import (
    ASYNCAPI_FILE,
    ContractError,
    DocumentInfo,
    asyncapi_document,
    current_schemas,
    event_key,
    headers_schema,
    payload_schema,
    read_info,
    read_schemas,
    render_contracts,
    stale_files,
    write_contracts,
)
from engine.events import ENVELOPE_FIELDS, DomainEvent
from engine.settings import EventSeamSettings, RelaySettings
from outbox.topics import TopicNamer

if TYPE_CHECKING:
    from pathlib import Path


class Priority(enum.Enum):
    """A nested enum."""

    LOW = "low"
    HIGH = "high"


class Line(BaseModel):
    """A nested model with the default config (extra ignored when reading)."""

    sku: str
    quantity: int = Field(ge=1)


class ParcelPacked(DomainEvent, name="depot.ParcelPacked", version=1):
    """A parcel was packed; nested models, enums and optional fields."""

    parcel_id: str
    lines: list[Line]
    weight: Decimal
    priority: Priority = Priority.LOW
    packed_by: uuid.UUID | None = None


class ParcelWeighed(DomainEvent, name="depot.ParcelWeighed", version=2):
    """A parcel was weighed (a second version)."""

    parcel_id: str
    grams: int


class LabelPrinted(DomainEvent, name="dock/LabelPrinted", version=1):
    """A wire name with a character unsafe in file names."""

    label: str


depot = BoundedContext("depot", owns=[ParcelPacked, ParcelWeighed])
dock = BoundedContext("dock", owns=[LabelPrinted])


@dock.handler(ParcelPacked, ParcelWeighed, name="print_label_on_parcel_packed")
def print_label_on_parcel_packed(event: DomainEvent) -> None:
    """Print a label for the parcel."""


@dock.handler(ParcelPacked, LabelPrinted, name="audit_on_anything")
def audit_on_anything(event: DomainEvent) -> None:
    """A handler reading two topics."""


def _document(
    relay: RelaySettings | None = None, contexts: tuple[BoundedContext, ...] = (depot, dock)
) -> dict[str, Any]:
    return asyncapi_document(
        ContextMap(contexts),
        topic_of=TopicNamer(relay or RelaySettings()),
        group_of=lambda name: f"eventseam.{name}",
    )


def _example_files() -> dict[str, str]:
    return render_contracts(
        ContextMap(CONTEXTS),
        topic_of=TopicNamer(EventSeamSettings().relay),
        group_of=lambda name: f"eventseam.{name}",
    )


def test_payload_schema_leaves_the_envelope_out() -> None:
    """The schema lists exactly the event's own fields, none of the envelope's."""
    schema = payload_schema(ParcelPacked)
    assert set(schema["properties"]) == {"parcel_id", "lines", "weight", "priority", "packed_by"}
    assert not ENVELOPE_FIELDS & set(schema["properties"])
    assert schema["required"] == ["lines", "parcel_id", "weight"]
    assert schema["title"] == "depot.ParcelPacked"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_payload_schema_is_closed_at_every_level() -> None:
    """The event and its nested models declare additionalProperties false (closed for writers)."""
    schema = payload_schema(ParcelPacked)
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["Line"]["additionalProperties"] is False


def test_payload_schema_validates_what_data_emits() -> None:
    """Every key of ``data()`` is declared and every required key is present in it."""
    event = ParcelPacked(
        aggregate_id="p-1", parcel_id="p-1", lines=[Line(sku="a", quantity=2)], weight=Decimal(1)
    )
    schema = payload_schema(ParcelPacked)
    data = event.data()
    assert set(data) <= set(schema["properties"])
    assert set(schema["required"]) <= set(data)


def test_event_key_names_version_and_replaces_unsafe_characters() -> None:
    """Keys are ``<wire name>.v<version>`` with file-unsafe characters replaced."""
    assert event_key(ParcelWeighed) == "depot.ParcelWeighed.v2"
    assert event_key(LabelPrinted) == "dock_LabelPrinted.v1"


def test_two_events_mapping_to_one_file_are_refused() -> None:
    """Two wire names that sanitize to the same key raise ContractError."""

    class Clash(DomainEvent, name="dock_LabelPrinted", version=1):
        """Clashes with dock/LabelPrinted once sanitized."""

    with pytest.raises(ContractError, match="dock_LabelPrinted"):
        current_schemas(ContextMap([dock, BoundedContext("other", owns=[Clash])]))


def test_document_has_a_channel_per_topic_with_its_messages() -> None:
    """Each context's topic is a channel carrying the messages of the events it owns."""
    document = _document()
    assert document["asyncapi"] == "3.0.0"
    assert set(document["channels"]) == {"eventseam.depot", "eventseam.dock"}
    depot_channel = document["channels"]["eventseam.depot"]
    assert depot_channel["address"] == "eventseam.depot"
    assert depot_channel["bindings"]["kafka"]["topic"] == "eventseam.depot"
    assert set(depot_channel["messages"]) == {"depot.ParcelPacked.v1", "depot.ParcelWeighed.v2"}


def test_document_has_send_per_context_and_receive_per_handler_with_its_group() -> None:
    """Owners send on their channel; each handler receives with its consumer group id."""
    operations = _document()["operations"]
    assert operations["depot.send"]["action"] == "send"
    assert operations["depot.send"]["channel"] == {"$ref": "#/channels/eventseam.depot"}
    receive = operations["dock.print_label_on_parcel_packed.receive"]
    assert receive["action"] == "receive"
    assert receive["messages"] == [
        {"$ref": "#/channels/eventseam.depot/messages/depot.ParcelPacked.v1"},
        {"$ref": "#/channels/eventseam.depot/messages/depot.ParcelWeighed.v2"},
    ]
    assert receive["bindings"]["kafka"]["groupId"]["enum"] == [
        "eventseam.dock.print_label_on_parcel_packed"
    ]
    assert receive["summary"] == "Print a label for the parcel."


def test_a_handler_reading_two_topics_gets_one_receive_operation_per_topic() -> None:
    """Operation ids carry the topic when a handler reads more than one."""
    operations = _document()["operations"]
    assert "dock.audit_on_anything.receive.eventseam.depot" in operations
    assert "dock.audit_on_anything.receive.eventseam.dock" in operations


def test_topics_per_event_type_give_a_channel_and_a_send_operation_each() -> None:
    """With ``{event_type}`` in the topic template, every event type has its own channel."""
    relay = RelaySettings(topic_template="{prefix}{context}.{event_type}")
    document = _document(relay, (depot,))
    assert "eventseam.depot.depot.ParcelPacked" in document["channels"]
    assert "depot.send.eventseam.depot.depot.ParcelWeighed" in document["operations"]


def test_message_payload_and_nested_models_live_in_components() -> None:
    """Payloads reference component schemas; nested-model references point there too."""
    components = _document()["components"]
    message = components["messages"]["depot.ParcelPacked.v1"]
    assert message["payload"] == {"$ref": "#/components/schemas/depot.ParcelPacked.v1"}
    payload = components["schemas"]["depot.ParcelPacked.v1"]
    assert "$defs" not in payload
    assert "$schema" not in payload
    assert payload["properties"]["lines"]["items"] == {
        "$ref": "#/components/schemas/depot.ParcelPacked.v1.Line"
    }
    assert components["schemas"]["depot.ParcelPacked.v1.Line"]["additionalProperties"] is False


def test_message_declares_the_kafka_key_and_correlation_header() -> None:
    """The Kafka binding's key is the aggregate id; the correlation id comes from a header."""
    message = _document()["components"]["messages"]["depot.ParcelWeighed.v2"]
    assert message["bindings"]["kafka"]["key"]["type"] == "string"
    assert "aggregate id" in message["bindings"]["kafka"]["key"]["description"]
    assert message["correlationId"]["location"] == "$message.header#/ce_correlationid"
    assert message["headers"]["properties"]["ce_dataversion"]["const"] == "2"


def test_headers_schema_matches_what_the_codec_writes() -> None:
    """Header names, required ones and constants agree with engine.codec.encode."""
    event = ParcelWeighed(
        aggregate_id="p-1",
        parcel_id="p-1",
        grams=5,
        source="depot",
        correlation_id=uuid.uuid4(),
        causation_id=uuid.uuid4(),
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    bare = ParcelWeighed(aggregate_id="p-1", parcel_id="p-1", grams=5, source="depot")
    schema = headers_schema(ParcelWeighed, "depot")
    written = dict(encode(event).headers)
    assert set(written) == set(schema["properties"])
    assert set(schema["required"]) == {name for name, _ in encode(bare).headers}
    for name, value in written.items():
        const = schema["properties"][name].get("const")
        assert const is None or const == value.decode(), name


def test_rendered_files_are_deterministic_sorted_json() -> None:
    """Two renders give the same text: sorted keys, 2-space indent, trailing newline."""
    first, second = _example_files(), _example_files()
    assert first == second
    for text in first.values():
        assert text.endswith("}\n")
        assert (
            json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            == text
        )
    assert "schemas/orders.OrderPlaced.v1.json" in first


def test_write_contracts_reports_and_removes_stale_schemas(tmp_path: Path) -> None:
    """A second dump touches nothing; a schema of a vanished event version is deleted."""
    files = _example_files()
    first = write_contracts(tmp_path, files)
    assert sorted(first.written) == sorted(files)
    (tmp_path / "schemas" / "orders.OrderShredded.v1.json").write_text("{}\n")
    second = write_contracts(tmp_path, files)
    assert second.written == []
    assert second.removed == ["schemas/orders.OrderShredded.v1.json"]
    assert sorted(second.unchanged) == sorted(files)


def test_read_back_schemas_info_and_staleness(tmp_path: Path) -> None:
    """What was written reads back equal; a changed file shows as stale."""
    files = render_contracts(
        ContextMap(CONTEXTS),
        topic_of=TopicNamer(RelaySettings()),
        group_of=str,
        info=DocumentInfo(title="shop", version="2.0.0"),
    )
    write_contracts(tmp_path, files)
    assert read_schemas(tmp_path) == current_schemas(ContextMap(CONTEXTS))
    info = read_info(tmp_path)
    assert info is not None
    assert (info.title, info.version) == ("shop", "2.0.0")
    assert stale_files(tmp_path, files) == []
    (tmp_path / ASYNCAPI_FILE).write_text("{}\n")
    assert stale_files(tmp_path, files) == [ASYNCAPI_FILE]


def test_reading_a_missing_or_broken_directory_raises_contract_error(tmp_path: Path) -> None:
    """No schemas folder, or a file that is not a JSON object, raises ContractError."""
    with pytest.raises(ContractError, match="contracts dump"):
        read_schemas(tmp_path)
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "x.v1.json").write_text("[1, 2]")
    with pytest.raises(ContractError, match="not a JSON object"):
        read_schemas(tmp_path)
