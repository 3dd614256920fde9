"""``--since TIME`` for operator commands: an ISO 8601 time, or a duration back from now.

    2026-11-28T04:00:00Z, 2026-11-28 04:00, 2026-11-28     ISO 8601 (no zone: UTC)
    90s, 30m, 2h, 1d, 1w, 1h30m                            that long ago

``parse_since`` returns an aware UTC datetime or raises ValueError naming both forms.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

import click

_UNITS: Final = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?[smhdw])+$")


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """The moment ``text`` names (see the module docstring), in UTC."""
    value = text.strip().lower()
    if _DURATION.match(value):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 time (2026-11-28T04:00:00Z) nor a duration "
            "back from now (30m, 2h, 1d, 1h30m)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def since_callback(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> datetime | None:
    """A click option callback for ``parse_since`` (a bad value is a usage error, exit 2)."""
    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
