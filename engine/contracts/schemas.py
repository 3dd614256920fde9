"""One JSON Schema per event version: the event's own fields as written on the wire, closed.

    payload_schema(OrderPlaced)  ->  {"$schema": ".../draft/2020-12/schema",
                                      "title": "orders.OrderPlaced", "type": "object",
                                      "properties": {...}, "required": [...],
                                      "additionalProperties": false}

Contract:

- The schema covers ``DomainEvent.data()`` (the Kafka record value): envelope fields are left out,
  they travel in the CloudEvents headers. It is pydantic's ``model_json_schema`` in
  ``serialization`` mode, Draft 2020-12, with nested models under local ``$defs``.
- Closed: every object with declared properties gets ``additionalProperties: false`` (unless the
  model allows extras): a writer never emits a field it does not declare. This is what makes a
  removed or renamed field visible to the compatibility check (engine.contracts.compat).
- Deterministic: ``required`` lists are sorted, and ``to_json`` sorts keys, so the text only
  changes when the contract does.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from engine.events import ENVELOPE_FIELDS

if TYPE_CHECKING:
    from engine.events import DomainEvent

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_KEY = re.compile(r"^(?P<name>.+)\.v(?P<version>[1-9][0-9]*)$")


def event_key(event_type: type[DomainEvent]) -> str:
    """File and component key of one event version: ``orders.OrderPlaced.v1``.

    Characters outside ``[A-Za-z0-9._-]`` in the wire name become ``_``.
    """
    return f"{_UNSAFE.sub('_', event_type.event_name)}.v{event_type.event_version}"


def split_key(key: str) -> tuple[str, int] | None:
    """(name, version) of a key made by ``event_key``; None when it has no ``.vN`` suffix."""
    match = _KEY.match(key)
    return None if match is None else (match["name"], int(match["version"]))


def payload_schema(event_type: type[DomainEvent]) -> dict[str, Any]:
    """The closed JSON Schema (Draft 2020-12) of ``event_type``'s own fields."""
    schema = event_type.model_json_schema(mode="serialization")
    properties = schema.get("properties", {})
    schema["properties"] = {
        name: sub for name, sub in properties.items() if name not in ENVELOPE_FIELDS
    }
    required = [name for name in schema.get("required", []) if name not in ENVELOPE_FIELDS]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    schema["title"] = event_type.event_name
    schema["$schema"] = SCHEMA_DIALECT
    return close_objects(schema)


_SCHEMA_KEYWORDS = frozenset(
    {"additionalProperties", "contains", "else", "if", "items", "not", "propertyNames", "then"}
    | {"unevaluatedItems", "unevaluatedProperties"}
)
_SCHEMA_LIST_KEYWORDS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_MAP_KEYWORDS = frozenset(
    {"$defs", "definitions", "dependentSchemas", "patternProperties", "properties"}
)


def subschemas(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The schemas directly inside ``node`` (keyword-aware: a field named ``items`` is data)."""
    found: list[dict[str, Any]] = []
    for keyword, value in node.items():
        if keyword in _SCHEMA_KEYWORDS and isinstance(value, dict):
            found.append(value)
        elif keyword in _SCHEMA_LIST_KEYWORDS and isinstance(value, list):
            found.extend(item for item in value if isinstance(item, dict))
        elif keyword in _SCHEMA_MAP_KEYWORDS and isinstance(value, dict):
            found.extend(item for item in value.values() if isinstance(item, dict))
    return found


def close_objects(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every object schema closed and every ``required`` list sorted (in place)."""
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    required = schema.get("required")
    if isinstance(required, list):
        schema["required"] = sorted(required)
    for child in subschemas(schema):
        close_objects(child)
    return schema


def open_objects(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` in which every closed object schema accepts unknown properties.

    The reader's view of a closed writer schema: ``engine.codec.decode`` drops fields it does not
    know. Nested models declared with ``extra="forbid"`` are opened too (not modelled).
    """
    copy = copy_schema(schema)
    for node in walk(copy):
        if node.get("additionalProperties") is False:
            node["additionalProperties"] = True
    return copy


def walk(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """``schema`` and every schema nested in it, parents first."""
    nodes, pending = [], [schema]
    while pending:
        node = pending.pop()
        nodes.append(node)
        pending.extend(reversed(subschemas(node)))
    return nodes


def copy_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a JSON document."""
    copied: dict[str, Any] = json.loads(json.dumps(schema))
    return copied


def to_json(document: Any) -> str:
    """Deterministic JSON text: sorted keys, 2-space indent, UTF-8 kept, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
