"""``--since TIME``: ISO 8601 times and durations back from now (engine.cli.since)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.cli.since import parse_since

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - timedelta(seconds=90)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        ("1d", NOW - timedelta(days=1)),
        ("1w", NOW - timedelta(weeks=1)),
        ("1h30m", NOW - timedelta(hours=1, minutes=30)),
        ("1.5h", NOW - timedelta(minutes=90)),
        (" 2H ", NOW - timedelta(hours=2)),
        ("2026-11-28T04:00:00Z", datetime(2026, 11, 28, 4, tzinfo=UTC)),
        ("2026-11-28 04:00", datetime(2026, 11, 28, 4, tzinfo=UTC)),
        ("2026-11-28", datetime(2026, 11, 28, tzinfo=UTC)),
        ("2026-11-28T06:00:00+02:00", datetime(2026, 11, 28, 4, tzinfo=UTC)),
    ],
)
def test_parses_durations_and_iso_times_to_utc(text: str, expected: datetime) -> None:
    """Durations count back from now; ISO times without a zone are UTC; every result is UTC."""
    parsed = parse_since(text, now=NOW)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["yesterday", "2h ago", "h", "-2h", "2026-13-01", ""])
def test_rejects_anything_else_naming_both_forms(text: str) -> None:
    """A value that is neither form raises ValueError with an example of each."""
    with pytest.raises(ValueError, match="neither an ISO 8601 time") as caught:
        parse_since(text, now=NOW)
    assert "30m, 2h" in str(caught.value)
