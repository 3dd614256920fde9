"""Compatibility check of current event schemas against committed ones (jsoncompat)."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel, Field

from engine.contracts import (
    Compat,
    CompatibilityToolError,
    Finding,
    check_compatibility,
    payload_schema,
)
from engine.events import DomainEvent

if TYPE_CHECKING:
    from collections.abc import Mapping

KEY = "shop.OrderPlaced.v1"


class Line(BaseModel):
    """A nested model."""

    sku: str
    quantity: int


class TightLine(BaseModel):
    """The nested model with a tightened constraint."""

    sku: str
    quantity: int = Field(ge=1)


class Committed(DomainEvent, name="shop.OrderPlaced", version=1):
    """The committed version."""

    order_id: str
    total_cents: int
    note: str | None = None
    lines: list[Line] = Field(default_factory=list)


class AddedOptional(DomainEvent, name="shop.OrderPlaced", version=1):
    """Adds an optional field."""

    order_id: str
    total_cents: int
    note: str | None = None
    lines: list[Line] = Field(default_factory=list)
    coupon: str | None = None


class RemovedOptional(DomainEvent, name="shop.OrderPlaced", version=1):
    """Removes the optional ``note``."""

    order_id: str
    total_cents: int
    lines: list[Line] = Field(default_factory=list)


class Renamed(DomainEvent, name="shop.OrderPlaced", version=1):
    """Renames ``order_id`` to ``order_ref``."""

    order_ref: str
    total_cents: int
    note: str | None = None
    lines: list[Line] = Field(default_factory=list)


class Narrowed(DomainEvent, name="shop.OrderPlaced", version=1):
    """Narrows ``total_cents`` to positive numbers."""

    order_id: str
    total_cents: int = Field(gt=0)
    note: str | None = None
    lines: list[Line] = Field(default_factory=list)


class NewRequired(DomainEvent, name="shop.OrderPlaced", version=1):
    """Adds a required field."""

    order_id: str
    total_cents: int
    note: str | None = None
    lines: list[Line] = Field(default_factory=list)
    currency: str


class Widened(DomainEvent, name="shop.OrderPlaced", version=1):
    """Widens ``total_cents`` to integers or strings."""

    order_id: str
    total_cents: int | str
    note: str | None = None
    lines: list[Line] = Field(default_factory=list)


class NestedTightened(DomainEvent, name="shop.OrderPlaced", version=1):
    """Tightens a constraint inside the nested model."""

    order_id: str
    total_cents: int
    note: str | None = None
    lines: list[TightLine] = Field(default_factory=list)


def check(
    new: type[DomainEvent], compat: Compat = Compat.BACKWARD, *, key: str = KEY
) -> list[Finding]:
    """Check ``new`` against the committed schema of ``Committed``."""
    return check_compatibility({key: payload_schema(Committed)}, {key: payload_schema(new)}, compat)


def breaking(findings: list[Finding]) -> list[tuple[str | None, str]]:
    """(field, change) of the breaking findings."""
    return [(f.field, f.change) for f in findings if f.breaking]


def test_unchanged_event_has_no_findings() -> None:
    """The same class checked against its own schema is compatible in every direction."""
    assert check(Committed, Compat.FULL) == []


def test_added_optional_field_is_compatible_both_ways() -> None:
    """The one sanctioned evolution passes backward and forward, noted as not yet committed."""
    findings = check(AddedOptional, Compat.FULL)
    assert breaking(findings) == []
    assert [str(f) for f in findings] == [f"{KEY}: changed compatibly, not committed yet"]


def test_removed_field_is_breaking_and_named() -> None:
    """Removing even an optional field fails backward: old payloads carry it."""
    assert breaking(check(RemovedOptional)) == [
        (
            "note",
            "was removed (or renamed): committed payloads carry it, the event no longer declares it",
        )
    ]


def test_renamed_field_names_both_fields() -> None:
    """A rename shows as the old field removed and the new one required."""
    findings = breaking(check(Renamed))
    assert [name for name, _ in findings] == ["order_id", "order_ref"]
    assert "removed" in findings[0][1]
    assert "new required field" in findings[1][1]


def test_narrowed_type_is_breaking_and_shows_both_schemas() -> None:
    """A tightened constraint names the field with the old and new schema."""
    [(name, change)] = breaking(check(Narrowed))
    assert name == "total_cents"
    assert change == (
        'type narrowed or constraint tightened: {"type":"integer"} -> '
        '{"exclusiveMinimum":0,"type":"integer"}'
    )


def test_new_required_field_is_breaking() -> None:
    """A required field the committed payloads lack fails backward."""
    assert breaking(check(NewRequired)) == [
        ("currency", "is a new required field: committed payloads do not carry it")
    ]


def test_change_inside_a_nested_model_is_attributed_to_the_top_level_field() -> None:
    """A tightened nested constraint is reported on the field holding the nested model."""
    assert [name for name, _ in breaking(check(NestedTightened))] == ["lines"]


def test_widened_type_passes_backward_and_fails_forward() -> None:
    """Old readers cannot read a widened type: only the forward check flags it."""
    assert breaking(check(Widened)) == []
    [(name, change)] = breaking(check(Widened, Compat.FORWARD))
    assert name == "total_cents"
    assert change.startswith("forward: type widened")


def test_forward_check_reads_committed_schema_as_an_open_reader() -> None:
    """New required fields and removed optional ones do not break old (open) readers."""
    assert breaking(check(NewRequired, Compat.FORWARD)) == []
    assert breaking(check(RemovedOptional, Compat.FORWARD)) == []
    assert [name for name, _ in breaking(check(Renamed, Compat.FORWARD))] == ["order_id"]


def test_removed_event_version_is_breaking_and_a_new_one_is_a_note() -> None:
    """A committed schema without a class breaks; a class without a committed schema is noted."""
    findings = check_compatibility(
        {"shop.OrderPlaced.v1": payload_schema(Committed)},
        {"shop.OrderPlaced.v2": payload_schema(AddedOptional)},
    )
    assert [(f.event, f.breaking) for f in findings] == [
        ("shop.OrderPlaced.v1", True),
        ("shop.OrderPlaced.v2", False),
    ]
    assert findings[0].change.startswith("event version removed")
    assert findings[1].change == "new event version, not committed yet"


def test_breaking_findings_come_first() -> None:
    """Findings are sorted: breaking ones, then notes, each by event and field."""
    findings = check_compatibility(
        {"a.Noted.v1": payload_schema(Committed), "z.Broken.v1": payload_schema(Committed)},
        {"a.Noted.v1": payload_schema(AddedOptional), "z.Broken.v1": payload_schema(Narrowed)},
    )
    assert [(f.event, f.breaking) for f in findings] == [
        ("z.Broken.v1", True),
        ("a.Noted.v1", False),
    ]


def test_a_schema_jsoncompat_rejects_raises_with_the_event_key() -> None:
    """A ValueError from jsoncompat becomes CompatibilityToolError naming the event."""
    bogus: dict[str, Any] = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"}
    with pytest.raises(CompatibilityToolError, match=KEY):
        check_compatibility({KEY: bogus}, {KEY: payload_schema(Committed)})


def test_missing_jsoncompat_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without jsoncompat the check raises CompatibilityToolError naming the extra."""
    real_import = builtins.__import__

    def no_jsoncompat(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "jsoncompat":
            raise ImportError("No module named 'jsoncompat'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jsoncompat)
    with pytest.raises(CompatibilityToolError, match=r"eventseam\[contracts\]"):
        check(Committed)


def test_an_injected_checker_receives_json_and_roles() -> None:
    """The checker gets JSON text of both schemas and the jsoncompat role of the direction."""
    calls: list[str] = []

    def checker(old: str, new: str, role: str) -> bool:
        calls.append(role)
        return True

    schemas: Mapping[str, dict[str, Any]] = {KEY: payload_schema(Committed)}
    assert check_compatibility(schemas, schemas, Compat.FULL, checker=checker) == []
    assert calls == ["deserializer", "serializer"]
