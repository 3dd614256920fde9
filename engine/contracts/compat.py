"""Compatibility of the current event schemas with committed ones, decided by jsoncompat.

    findings = check_compatibility(read_schemas(Path("docs/contracts")), current_schemas(contexts))
    [str(f) for f in findings if f.breaking]
    # ["orders.OrderPlaced.v1: field 'reason' was removed (or renamed) ..."]

Policy (see DomainEvent): schemas are closed for writers and open for readers.

- BACKWARD (the default): every payload the committed schema allows must be valid under the
  current one: ``jsoncompat.check_compat(old, new, "deserializer")``, which proves old ⊆ new.
  Both schemas are the closed writer schemas. The real reader is open (decode drops unknown
  fields) and would tolerate a removed field, but the policy forbids removing or renaming a
  field, and the closed current schema is what makes that visible: the old payloads carry a
  property the current schema does not declare. Checking against the open reader schema instead
  would hide removals, and an open *old* schema would flag every added optional field (under it
  the new name could already carry any value). Caught: field removed, renamed (removed + new
  required), type narrowed or constraint tightened, new required field. Allowed: new optional
  fields, widened types.
- FORWARD (for consumers that upgrade later, such as detached workers): every payload the
  current writer emits must be readable by the committed schema as a reader reads it:
  ``check_compat(open(old), new, "serializer")``, new ⊆ open(old). Caught: widened types, removed
  required fields. FULL runs both.
- An event version with a committed schema and no class any more is breaking ("event version
  removed"); a version without a committed schema is reported, not breaking.

jsoncompat answers yes or no for a whole schema. To name the field, each property is checked
again on its own (the schema projected onto that one property, ``$defs`` kept): the verdicts are
still the library's; the projection only attributes them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from .errors import CompatibilityToolError
from .schemas import open_objects

if TYPE_CHECKING:
    from collections.abc import Mapping

Role = Literal["serializer", "deserializer", "both"]
Checker = Callable[[str, str, Role], bool]
_SHOWN = 160


class Compat(StrEnum):
    """Which direction ``check_compatibility`` proves."""

    BACKWARD = "backward"
    FORWARD = "forward"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class Finding:
    """One result of a check: ``event`` is the schema key, ``field`` None for the whole event."""

    event: str
    field: str | None
    change: str
    breaking: bool

    def __str__(self) -> str:
        where = self.event if self.field is None else f"{self.event}: field {self.field!r}"
        return f"{where}: {self.change}"


def check_compatibility(
    committed: Mapping[str, dict[str, Any]],
    current: Mapping[str, dict[str, Any]],
    compat: Compat = Compat.BACKWARD,
    *,
    checker: Checker | None = None,
) -> list[Finding]:
    """Findings for every committed and current event version, breaking ones first.

    Raises CompatibilityToolError when jsoncompat is missing or cannot compare a schema.
    """
    check = checker or _jsoncompat()
    findings: list[Finding] = []
    for key in sorted(set(committed) | set(current)):
        if key not in current:
            findings.append(Finding(key, None, _REMOVED, breaking=True))
        elif key not in committed:
            findings.append(Finding(key, None, "new event version, not committed yet", False))
        else:
            findings.extend(_compare(key, committed[key], current[key], compat, check))
    return sorted(findings, key=lambda f: (not f.breaking, f.event, f.field or ""))


_REMOVED = (
    "event version removed: old records on the topics and in outboxes still carry it; keep "
    "the class registered, or delete its committed schema in the same change when an upcaster "
    "replaces it"
)


def _compare(
    key: str, old: dict[str, Any], new: dict[str, Any], compat: Compat, check: Checker
) -> list[Finding]:
    directions: list[tuple[str, Callable[[dict[str, Any], dict[str, Any]], bool]]] = []
    if compat in (Compat.BACKWARD, Compat.FULL):
        directions.append(("backward", lambda o, n: _verdict(check, key, o, n, "deserializer")))
    if compat in (Compat.FORWARD, Compat.FULL):
        directions.append(
            ("forward", lambda o, n: _verdict(check, key, open_objects(o), n, "serializer"))
        )
    findings: list[Finding] = []
    for direction, compatible in directions:
        if compatible(old, new):
            continue
        fields = [f for f in _field_names(old, new) if not compatible(*_project(old, new, f))]
        if not fields:
            findings.append(Finding(key, None, f"not {direction} compatible", breaking=True))
        for name in fields:
            change = _describe(direction, name, old, new)
            if direction == "forward":
                change = f"forward: {change}"
            findings.append(Finding(key, name, change, breaking=True))
    if not findings and _comparable(old) != _comparable(new):
        findings.append(Finding(key, None, "changed compatibly, not committed yet", False))
    return findings


def _verdict(
    check: Checker, key: str, old: dict[str, Any], new: dict[str, Any], role: Role
) -> bool:
    try:
        return check(json.dumps(old), json.dumps(new), role)
    except ValueError as exc:
        raise CompatibilityToolError(f"jsoncompat cannot compare the schemas: {exc}", key) from exc


def _field_names(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(set(old.get("properties", {})) | set(new.get("properties", {})))


def _project(
    old: dict[str, Any], new: dict[str, Any], name: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both schemas reduced to the one property ``name`` (other keywords kept)."""

    def one(schema: dict[str, Any]) -> dict[str, Any]:
        projected = {k: v for k, v in schema.items() if k not in ("properties", "required")}
        properties = schema.get("properties", {})
        projected["properties"] = {name: properties[name]} if name in properties else {}
        if name in schema.get("required", []):
            projected["required"] = [name]
        return projected

    return one(old), one(new)


def _describe(direction: str, name: str, old: dict[str, Any], new: dict[str, Any]) -> str:
    before, after = old.get("properties", {}), new.get("properties", {})
    if name not in after:
        if direction == "forward":
            return "was removed (or renamed): readers of the committed schema require it"
        return (
            "was removed (or renamed): committed payloads carry it, the event no longer declares it"
        )
    if name not in before:
        return "is a new required field: committed payloads do not carry it"
    required_now = name in new.get("required", []) and name not in old.get("required", [])
    if direction == "backward" and required_now:
        return "became required: committed payloads may omit it"
    change = "type narrowed or constraint tightened" if direction == "backward" else "type widened"
    return f"{change}: {_short(before[name])} -> {_short(after[name])}"


def _short(schema: Any) -> str:
    shown = {k: v for k, v in schema.items() if k not in ("title", "description")}
    text = json.dumps(shown, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _comparable(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True)


def _jsoncompat() -> Checker:
    try:
        import jsoncompat
    except ImportError as exc:
        raise CompatibilityToolError(
            "jsoncompat is not installed: pip install 'eventseam[contracts]'"
        ) from exc
    check: Checker = jsoncompat.check_compat
    return check
