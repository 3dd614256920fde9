"""EventSeam.run refuses to start with the error that says why, not inside an ExceptionGroup."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from engine.contexts import BoundedContext
from engine.errors import SettingsError
from engine.events import DomainEvent
from engine.seam import EventSeam
from engine.settings import load_settings
from outbox.table import metadata

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


class StrayNoticed(DomainEvent, name="tests.start.StrayNoticed", version=1):
    """An event no context of the application owns."""


listener = BoundedContext("listener")


@listener.handler(StrayNoticed, name="note_stray")
def note_stray(event: StrayNoticed) -> None:
    """Never called: nothing in the application may publish StrayNoticed."""


async def test_consumers_that_cannot_run_fail_the_start_with_their_error(tmp_path: Path) -> None:
    """With Kafka configured, a handler of an event no context owns stops the start with the
    consumer runner's SettingsError itself (a plain caller's `except SettingsError` works)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'start.db'}")
    metadata.create_all(engine)
    settings = load_settings(
        database_url=str(engine.url), kafka={"bootstrap_servers": "127.0.0.1:1"}
    )
    seam = EventSeam(settings, [listener], session_factory=sessionmaker(engine))
    try:
        with anyio.fail_after(30), pytest.raises(SettingsError, match="which no context owns"):
            await seam.run()
    finally:
        engine.dispose()
