"""Event contracts: an AsyncAPI 3.0 document and one JSON Schema per event version, and a check
that the current event classes can still read what the committed schemas allow.

    files = render_contracts(seam.contexts, topic_of=TopicNamer(settings.relay), group_of=...)
    write_contracts(Path("docs/contracts"), files)                 # eventseam contracts dump
    check_compatibility(read_schemas(path), current_schemas(seam.contexts))   # ... check

``check_compatibility`` needs the ``contracts`` extra (jsoncompat); the rest needs only pydantic.
"""

from __future__ import annotations

from .asyncapi import DocumentInfo as DocumentInfo
from .asyncapi import asyncapi_document as asyncapi_document
from .asyncapi import headers_schema as headers_schema
from .compat import Compat as Compat
from .compat import Finding as Finding
from .compat import check_compatibility as check_compatibility
from .errors import CompatibilityToolError as CompatibilityToolError
from .errors import ContractError as ContractError
from .files import ASYNCAPI_FILE as ASYNCAPI_FILE
from .files import SCHEMAS_DIR as SCHEMAS_DIR
from .files import DumpReport as DumpReport
from .files import current_schemas as current_schemas
from .files import read_info as read_info
from .files import read_schemas as read_schemas
from .files import render_contracts as render_contracts
from .files import stale_files as stale_files
from .files import write_contracts as write_contracts
from .schemas import event_key as event_key
from .schemas import payload_schema as payload_schema

__all__ = [
    "ASYNCAPI_FILE",
    "SCHEMAS_DIR",
    "Compat",
    "CompatibilityToolError",
    "ContractError",
    "DocumentInfo",
    "DumpReport",
    "Finding",
    "asyncapi_document",
    "check_compatibility",
    "current_schemas",
    "event_key",
    "headers_schema",
    "payload_schema",
    "read_info",
    "read_schemas",
    "render_contracts",
    "stale_files",
    "write_contracts",
]
