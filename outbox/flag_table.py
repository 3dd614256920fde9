"""The runtime flag table: one row per context whose routing mode an operator has overridden.

A row wins over settings and defaults (engine.flags.FlagSource). Rows are written only through
``FlagSource.set_mode`` / ``eventseam flags set`` (validated), but readers never trust them: a row
naming an unknown context or mode is logged and ignored.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, DateTime, String, Table, func

from engine.modes import Mode

from .table import metadata

#: Mode values the CHECK constraint admits (a new Mode needs a migration that widens it).
MODE_VALUES: tuple[str, ...] = tuple(mode.value for mode in Mode)

flags = Table(
    "eventseam_flags",
    metadata,
    Column("context", String(100), primary_key=True, comment="bounded context name"),
    Column("mode", String(8), nullable=False, comment="local | dual | broker"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_by", String(200), nullable=False, comment="who flipped it (operator, tool)"),
    CheckConstraint(f"mode IN ({', '.join(repr(v) for v in MODE_VALUES)})", name="mode"),
)
