"""``eventseam worker`` refuses what it cannot run, before touching Kafka."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from engine.cli import worker as worker_module
from engine.contexts import BoundedContext
from engine.events import DomainEvent
from engine.modes import Mode
from engine.seam import EventSeam
from engine.settings import EventSeamSettings, KafkaSettings
from outbox import migrate


class BellRinged(DomainEvent, name="unit.worker.BellRinged", version=1):
    """An event the door context owns."""


door = BoundedContext("door", owns=[BellRinged])
porch = BoundedContext("porch")


@porch.handler(BellRinged, name="open_door_on_bell_ringed")
def open_door_on_bell_ringed(event: BellRinged) -> None:
    """Does nothing."""


def _seam(settings: EventSeamSettings) -> EventSeam:
    """An EventSeam on an in-memory database holding eventseam's tables (made by create_all)."""
    engine = create_engine("sqlite://")
    migrate.schema_metadata().create_all(engine)
    return EventSeam(settings, [door, porch], session_factory=sessionmaker(engine))


def local_app() -> EventSeam:
    """door is in local mode (the default)."""
    return _seam(EventSeamSettings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1")))


def dual_app() -> EventSeam:
    """door is in dual mode."""
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    return _seam(EventSeamSettings(kafka=kafka, contexts={"door": Mode.DUAL}))


def brokerless_app() -> EventSeam:
    """No Kafka bootstrap servers."""
    return _seam(EventSeamSettings(kafka=KafkaSettings(), contexts={"door": Mode.BROKER}))


def handlerless_app() -> EventSeam:
    """door is in broker mode but has no handlers."""
    return _seam(
        EventSeamSettings(
            kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"), contexts={"door": Mode.BROKER}
        )
    )


def not_an_app() -> object:
    """Something that is not an EventSeam."""
    return object()


@pytest.fixture(autouse=True)
def quiet_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command configures structlog for its process; not for the test session."""
    monkeypatch.setattr(worker_module, "configure_logging", lambda level, *, json_logs: None)


def invoke(app: str, *args: str) -> tuple[int, str]:
    """Run the worker command with ``--app tests.unit.test_runner_worker_cli:<app>``."""
    result = CliRunner().invoke(
        worker_module.worker, list(args), obj={"app_path": f"{__name__}:{app}"}
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_unknown_context_exits_2() -> None:
    """A context the application does not declare is a usage error."""
    code, output = invoke("local_app", "--context", "attic")
    assert code == 2
    assert "attic" in output


def test_local_mode_context_that_publishes_is_refused() -> None:
    """A context in local mode would keep its handlers' follow-ups inside the worker: refused."""
    code, output = invoke("local_app", "--context", "door")
    assert code == 2
    assert "local mode" in output


def test_dual_mode_context_that_publishes_is_refused() -> None:
    """A context in dual mode would pile its follow-ups up for a bus the worker does not run: refused."""
    code, output = invoke("dual_app", "--context", "door")
    assert code == 2
    assert "dual mode" in output


def test_context_without_handlers_is_refused() -> None:
    """A context with no handlers gives the runner nothing to do."""
    code, output = invoke("handlerless_app", "--context", "door")
    assert code == 2
    assert "declare no handlers" in output


def test_application_that_is_not_an_eventseam_exits_2() -> None:
    """The --app factory must return an EventSeam."""
    code, output = invoke("not_an_app", "--context", "porch")
    assert code == 2
    assert "not an EventSeam" in output


def test_missing_bootstrap_servers_exit_1() -> None:
    """Without Kafka bootstrap servers the worker says which variable to set."""
    code, output = invoke("brokerless_app", "--context", "porch")
    assert code == 1
    assert "EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS" in output
