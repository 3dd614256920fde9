"""Personal-data marker, envelope, Erased and the AES-GCM primitives (no database)."""

from __future__ import annotations

import json
from typing import Annotated

import pytest
from click.testing import CliRunner
from pydantic import Field

from engine.cli import main
from engine.codec import decode, encode
from engine.contracts.schemas import payload_schema
from engine.crypto import MasterKey, generate_master_key, open_sealed, seal, value_aad
from engine.errors import (
    CiphertextError,
    DecodeError,
    EventDefinitionError,
    MasterKeyError,
    PersonalDataError,
)
from engine.events import DomainEvent
from engine.personal_data import ENVELOPE_PATTERN, Erased, PersonalData, Sealed, is_erased
from engine.registry import EventRegistry
from engine.settings import PersonalDataSettings


class CustomerRegistered(DomainEvent, name="crm.CustomerRegistered", version=1):
    """A customer signed up (email and birth year are personal data of the customer)."""

    customer_id: str
    email: Annotated[str, PersonalData(subject="customer_id")]
    birth_year: Annotated[int | Erased, Field(ge=1900), PersonalData(subject="customer_id")] = 1990
    plan: str = "free"


class PlanChanged(DomainEvent, name="crm.PlanChanged", version=1):
    """No personal data at all."""

    customer_id: str
    plan: str


def registered(**values: object) -> CustomerRegistered:
    """A CustomerRegistered for customer c-1."""
    fields: dict[str, object] = {
        "aggregate_id": "c-1",
        "customer_id": "c-1",
        "email": "ann@example.com",
        "source": "crm",
        **values,
    }
    return CustomerRegistered.model_validate(fields)


def test_personal_fields_are_found_once_per_class() -> None:
    """The class knows its personal fields and their subjects; other classes have none."""
    fields = CustomerRegistered.personal_fields
    assert [(f.name, f.subject) for f in fields] == [
        ("email", "customer_id"),
        ("birth_year", "customer_id"),
    ]
    assert PlanChanged.personal_fields == ()


def test_subject_must_name_another_plain_field() -> None:
    """A marker naming a missing field, itself, or another personal field is refused at class creation."""
    with pytest.raises(EventDefinitionError, match="must name another field"):

        class Missing(DomainEvent, name="crm.MissingHappened"):
            email: Annotated[str, PersonalData(subject="customer_id")]

    with pytest.raises(EventDefinitionError, match="personal data itself"):

        class Chained(DomainEvent, name="crm.ChainedHappened"):
            customer_id: Annotated[str, PersonalData(subject="email")]
            email: Annotated[str, PersonalData(subject="customer_id")]

    with pytest.raises(EventDefinitionError, match="put PersonalData last"):

        class Misplaced(DomainEvent, name="crm.MisplacedHappened"):
            customer_id: str
            email: Annotated[str, PersonalData(subject="customer_id"), Field(max_length=99)]


def test_encode_refuses_plaintext_personal_data() -> None:
    """codec.encode never writes a personal field in clear text; plain events encode as before."""
    with pytest.raises(PersonalDataError, match="personal-data fields"):
        encode(registered())
    plain = PlanChanged(aggregate_id="c-1", customer_id="c-1", plan="pro", source="crm")
    assert json.loads(encode(plain).value) == {"customer_id": "c-1", "plan": "pro"}


def test_sealed_and_erased_values_round_trip_through_the_codec() -> None:
    """A decoded envelope becomes Sealed, and re-encoding writes the same envelope bytes."""
    envelope = Sealed(3, b"n" * 12, b"c" * 30).envelope
    event = registered(
        email=Sealed.parse(envelope), birth_year=Erased("birth_year", "c-1", 1, envelope)
    )
    record = encode(event)
    assert json.loads(record.value)["email"] == envelope
    registry = EventRegistry()
    registry.register(CustomerRegistered)
    back = decode(registry, record.key, record.value, record.headers)
    assert isinstance(back.email, Sealed)  # type: ignore[attr-defined]
    assert back.email.key_version == 3  # type: ignore[attr-defined]
    assert back.plan == "free"  # type: ignore[attr-defined]


def test_malformed_envelope_is_a_decode_error() -> None:
    """A value that starts like an envelope but is not one is rejected as bad-personal-data."""
    plain = PlanChanged(aggregate_id="c-1", customer_id="c-1", plan="x", source="crm")
    record = encode(plain)
    value = json.dumps({"customer_id": "c-1", "email": "pd1.1.short.x"}).encode()
    headers = [(k, b"crm.CustomerRegistered" if k == "ce_type" else v) for k, v in record.headers]
    registry = EventRegistry()
    registry.register(CustomerRegistered)
    with pytest.raises(DecodeError) as caught:
        decode(registry, record.key, value, headers)
    assert caught.value.reason == "bad-personal-data"


def test_schema_shows_personal_fields_as_envelopes() -> None:
    """The contract of a personal field is the envelope string, never the plaintext type."""
    schema = payload_schema(CustomerRegistered)
    for name in ("email", "birth_year"):
        assert schema["properties"][name]["type"] == "string"
        assert schema["properties"][name]["pattern"] == ENVELOPE_PATTERN
    assert schema["properties"]["plan"]["type"] == "string"


def test_erased_is_falsy_and_typed() -> None:
    """Erased prints as <erased>, is falsy, and is_erased narrows to it."""
    erased = Erased("email", "c-1", 1, "pd1.x")
    assert not erased
    assert str(erased) == "<erased>"
    assert is_erased(erased)
    assert not is_erased("ann@example.com")


def test_seal_and_open_bind_the_event_and_field() -> None:
    """A value opens only with its own key, event id, wire name and field name."""
    key, other = b"k" * 32, b"o" * 32
    aad = value_aad("e-1", "crm.CustomerRegistered", "email")
    envelope = seal(key, 1, b'"ann@example.com"', aad)
    sealed = Sealed.parse(envelope)
    assert open_sealed(key, sealed, aad) == b'"ann@example.com"'
    for bad_key, bad_aad in (
        (other, aad),
        (key, value_aad("e-2", "crm.CustomerRegistered", "email")),
        (key, value_aad("e-1", "crm.CustomerRegistered", "phone")),
    ):
        with pytest.raises(CiphertextError):
            open_sealed(bad_key, sealed, bad_aad)


def test_wrong_master_key_is_a_typed_error() -> None:
    """A subject key wrapped by one master key does not unwrap with another: MasterKeyError."""
    right, wrong = MasterKey(generate_master_key()), MasterKey(generate_master_key())
    key, wrapped = right.new_wrapped_key("c-1", 1)
    assert right.unwrap("c-1", 1, wrapped) == key
    with pytest.raises(MasterKeyError, match="not the master key"):
        wrong.unwrap("c-1", 1, wrapped)
    with pytest.raises(MasterKeyError):
        right.unwrap("c-2", 1, wrapped)  # moved to another subject


def test_master_key_settings_are_checked_and_never_shown() -> None:
    """Missing, short or non-base64 master keys raise MasterKeyError; repr hides the key."""
    secret = generate_master_key()
    with pytest.raises(MasterKeyError, match="need a master key"):
        MasterKey.from_settings(PersonalDataSettings())
    with pytest.raises(MasterKeyError, match="32 bytes"):
        MasterKey("c2hvcnQ=")
    key = MasterKey.from_settings(PersonalDataSettings(master_key=secret))
    assert secret not in repr(key)
    assert secret not in repr(PersonalDataSettings(master_key=secret))


def test_config_check_masks_the_master_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """`eventseam config check` knows the master-key variable and never prints the key."""
    secret = generate_master_key()
    monkeypatch.setenv("EVENTSEAM_PERSONAL_DATA__MASTER_KEY", secret)
    result = CliRunner().invoke(main, ["config", "check"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "personal_data.master_key" in result.output
    assert secret not in result.output
    assert "unknown" not in result.output.lower()
