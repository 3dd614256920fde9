"""Errors raised by the contracts package (a branch of the engine's tree).

    EngineError
    └── ContractError            contracts cannot be written, read or compared
        └── CompatibilityToolError   the compatibility library is missing or rejects a schema

Incompatible changes are not errors: ``check`` returns them as findings.
"""

from __future__ import annotations

from engine.errors import EngineError


class ContractError(EngineError):
    """Raised by dump/check when a contracts directory cannot be written or read."""


class CompatibilityToolError(ContractError):
    """Raised by check when jsoncompat is not installed or cannot compare a schema.

    ``event`` is the schema's key (``orders.OrderPlaced.v1``) when one schema is at fault.
    """

    def __init__(self, message: str, event: str | None = None) -> None:
        self.event = event
        super().__init__(message if event is None else f"{event}: {message}")
