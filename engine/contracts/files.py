"""A contracts directory: what ``eventseam contracts dump DIR`` writes and ``check`` reads.

    DIR/asyncapi.json                       the AsyncAPI 3.0 document (engine.contracts.asyncapi)
    DIR/schemas/<name>.v<version>.json      one closed JSON Schema per event version

Every file is deterministic JSON (sorted keys, trailing newline), so the directory can be
committed and diffed. ``write_contracts`` owns ``DIR/schemas/*.json``: a schema of an event
version the application no longer has is deleted (deleting it is how a removal is accepted).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .asyncapi import DocumentInfo, asyncapi_document
from .errors import ContractError
from .schemas import event_key, payload_schema, to_json

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from engine.contexts import ContextMap

ASYNCAPI_FILE = "asyncapi.json"
SCHEMAS_DIR = "schemas"


@dataclass(slots=True)
class DumpReport:
    """Relative paths written (new or changed), left as they were, and deleted."""

    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def current_schemas(contexts: ContextMap) -> dict[str, dict[str, Any]]:
    """Event key -> payload schema of every event version the contexts own, sorted by key."""
    schemas: dict[str, dict[str, Any]] = {}
    owners: dict[str, str] = {}
    for event_type in contexts.event_types():
        key = event_key(event_type)
        where = f"{event_type.__module__}.{event_type.__qualname__}"
        if key in schemas:
            raise ContractError(f"{where} and {owners[key]} both map to the schema file {key}.json")
        schemas[key], owners[key] = payload_schema(event_type), where
    return dict(sorted(schemas.items()))


def render_contracts(
    contexts: ContextMap,
    *,
    topic_of: Callable[[str, str], str],
    group_of: Callable[[str], str],
    info: DocumentInfo | None = None,
) -> dict[str, str]:
    """Every file of the contracts directory: relative path -> text."""
    document = asyncapi_document(contexts, topic_of=topic_of, group_of=group_of, info=info)
    files = {ASYNCAPI_FILE: to_json(document)}
    for key, schema in current_schemas(contexts).items():
        files[f"{SCHEMAS_DIR}/{key}.json"] = to_json(schema)
    return files


def write_contracts(directory: Path, files: Mapping[str, str]) -> DumpReport:
    """Write ``files`` under ``directory``; delete schema files not among them.

    Files whose text is already right are not touched. Raises ContractError when the directory
    cannot be written.
    """
    report = DumpReport()
    try:
        (directory / SCHEMAS_DIR).mkdir(parents=True, exist_ok=True)
        for stale in sorted((directory / SCHEMAS_DIR).glob("*.json")):
            relative = f"{SCHEMAS_DIR}/{stale.name}"
            if relative not in files:
                stale.unlink()
                report.removed.append(relative)
        for relative, text in sorted(files.items()):
            path = directory / relative
            if path.is_file() and path.read_text(encoding="utf-8") == text:
                report.unchanged.append(relative)
                continue
            path.write_text(text, encoding="utf-8")
            report.written.append(relative)
    except OSError as exc:
        raise ContractError(f"cannot write contracts to {directory}: {exc}") from exc
    return report


def read_schemas(directory: Path) -> dict[str, dict[str, Any]]:
    """Event key -> committed schema, from ``directory/schemas/*.json``, sorted by key.

    Raises ContractError when the folder is missing or a file is not a JSON object.
    """
    folder = directory / SCHEMAS_DIR
    if not folder.is_dir():
        raise ContractError(f"{folder} does not exist: run `eventseam contracts dump {directory}`")
    schemas: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        schemas[path.stem] = _read_object(path)
    return schemas


def read_info(directory: Path) -> DocumentInfo | None:
    """The ``info`` of the committed AsyncAPI document (title, version, description), if any."""
    path = directory / ASYNCAPI_FILE
    if not path.is_file():
        return None
    info = _read_object(path).get("info")
    if not isinstance(info, dict):
        return None
    default = DocumentInfo()
    return DocumentInfo(
        title=str(info.get("title", default.title)),
        version=str(info.get("version", default.version)),
        description=str(info.get("description", default.description)),
    )


def stale_files(directory: Path, files: Mapping[str, str]) -> list[str]:
    """Relative paths whose committed text differs from ``files`` (missing, changed or extra)."""
    folder = directory / SCHEMAS_DIR
    extra = [f"{SCHEMAS_DIR}/{p.name}" for p in sorted(folder.glob("*.json"))]
    stale = [relative for relative in extra if relative not in files]
    for relative, text in sorted(files.items()):
        path = directory / relative
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(relative)
    return sorted(stale)


def _read_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ContractError(f"cannot read {path}: {exc}") from exc
    if not isinstance(value, dict):
        raise ContractError(f"{path} is not a JSON object")
    return value
