"""The module map: data built from a ContextMap and modes, its diagrams, and ``eventseam contexts``."""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from app.bootstrap import CONTEXTS, bootstrap, engine_of
from engine.cli.contexts import contexts as contexts_command
from engine.contexts import BoundedContext, ContextMap
from engine.events import DomainEvent
from engine.modes import Mode
from engine.module_map import (
    IN_MEMORY_BUS,
    UNOWNED,
    EventRef,
    HandlerNode,
    build_module_map,
    render_mermaid,
    render_plantuml,
)
from engine.seam import EventSeam
from engine.settings import EventSeamSettings, RelaySettings, load_settings
from outbox.topics import TopicNamer

ROOT = Path(__file__).resolve().parents[2]
HERE = "tests.unit.test_module_map"


class KettleBoiled(DomainEvent, name="kitchen.KettleBoiled", version=1):
    """Owned by kitchen."""


class TeaServed(DomainEvent, name="kitchen.TeaServed", version=1):
    """Owned by kitchen."""


class DoorbellRang(DomainEvent, name="street.DoorbellRang", version=1):
    """Owned by no context."""


kitchen = BoundedContext("kitchen", owns=[KettleBoiled, TeaServed])
hall = BoundedContext("hall")


@hall.handler(KettleBoiled, TeaServed, name="call_guests_on_tea")
def call_guests_on_tea(event: DomainEvent) -> None:
    """Does nothing."""


@hall.handler(DoorbellRang, name="open_door_on_doorbell_rang")
def open_door_on_doorbell_rang(event: DomainEvent) -> None:
    """Does nothing."""


@kitchen.handler(TeaServed, name="wash_cups_on_tea_served")
def wash_cups_on_tea_served(event: DomainEvent) -> None:
    """Does nothing."""


def small_map_app() -> SimpleNamespace:
    """kitchen and hall, without a database."""
    return SimpleNamespace(contexts=ContextMap([kitchen, hall]), settings=EventSeamSettings())


def example_app() -> SimpleNamespace:
    """The example monolith's contexts with settings from the environment, no database."""
    return SimpleNamespace(contexts=ContextMap(CONTEXTS), settings=load_settings())


def app_with_unmigrated_database() -> EventSeam:
    """An EventSeam whose database has no eventseam tables."""
    engine = create_engine(f"sqlite:///{Path.cwd() / 'empty.db'}")
    return EventSeam(EventSeamSettings(), [kitchen, hall], session_factory=sessionmaker(engine))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run without EVENTSEAM_* variables, in a scratch directory."""
    for name in list(os.environ):
        if name.upper().startswith("EVENTSEAM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def run(app: str, *args: str, **env: str) -> Result:
    """Invoke ``eventseam --app APP contexts ARGS`` with ``env`` (wide output)."""
    return CliRunner().invoke(
        contexts_command, list(args), obj={"app_path": app}, env={"COLUMNS": "240", **env}
    )


def test_contexts_list_owned_events_and_handlers_with_durable_names() -> None:
    """Each node carries its owned events and its handlers' durable names and events."""
    module_map = build_module_map(ContextMap([kitchen, hall]), {})
    kitchen_node, hall_node = module_map.contexts
    assert kitchen_node.owns == (
        EventRef("kitchen.KettleBoiled", 1, "kitchen"),
        EventRef("kitchen.TeaServed", 1, "kitchen"),
    )
    assert hall_node.owns == ()
    assert hall_node.handlers[0] == HandlerNode(
        "hall.call_guests_on_tea",
        (
            EventRef("kitchen.KettleBoiled", 1, "kitchen"),
            EventRef("kitchen.TeaServed", 1, "kitchen"),
        ),
    )
    assert str(hall_node.handlers[1].events[0]) == "street.DoorbellRang v1"


def test_edges_group_events_by_owner_and_subscriber() -> None:
    """One edge per (owner, subscriber), events sorted; unowned events come from UNOWNED."""
    edges = build_module_map(ContextMap([kitchen, hall]), {}).edges
    assert [(e.source, e.target, e.events) for e in edges] == [
        (UNOWNED, "hall", ("street.DoorbellRang",)),
        ("kitchen", "hall", ("kitchen.KettleBoiled", "kitchen.TeaServed")),
        ("kitchen", "kitchen", ("kitchen.TeaServed",)),
    ]


@pytest.mark.parametrize(
    ("mode", "destinations"),
    [
        (Mode.LOCAL, (IN_MEMORY_BUS,)),
        (Mode.DUAL, (IN_MEMORY_BUS, "eventseam.kitchen")),
        (Mode.BROKER, ("eventseam.kitchen",)),
    ],
)
def test_publishes_to_follows_the_mode(mode: Mode, destinations: tuple[str, ...]) -> None:
    """local: the bus; dual: the bus and the topic; broker: the topic only."""
    module_map = build_module_map(
        ContextMap([kitchen, hall]), {"kitchen": mode}, topic_of=TopicNamer(RelaySettings())
    )
    assert module_map.contexts[0].mode is mode
    assert module_map.contexts[0].publishes_to == destinations
    assert module_map.contexts[1].publishes_to == ()


def test_relayed_events_without_topic_naming_go_to_kafka() -> None:
    """Without a topic namer a relayed context publishes to ``kafka``."""
    module_map = build_module_map(ContextMap([kitchen]), {"kitchen": Mode.BROKER})
    assert module_map.contexts[0].publishes_to == ("kafka",)


def test_mermaid_diagram() -> None:
    """Contexts are nodes; edges are labelled by event, without the owner's prefix."""
    text = render_mermaid(build_module_map(ContextMap([kitchen, hall]), {}))
    assert text == (
        "flowchart LR\n"
        '    ctx_kitchen["kitchen"]\n'
        '    ctx_hall["hall"]\n'
        '    unowned["(unowned)"]\n'
        '    unowned -->|"street.DoorbellRang"| ctx_hall\n'
        '    ctx_kitchen -->|"KettleBoiled, TeaServed"| ctx_hall\n'
        '    ctx_kitchen -->|"TeaServed"| ctx_kitchen\n'
    )


def test_plantuml_diagram() -> None:
    """A component per context and an arrow per flow, between @startuml and @enduml."""
    text = render_plantuml(build_module_map(ContextMap([kitchen, hall]), {}))
    assert text == (
        "@startuml\n"
        "left to right direction\n"
        'component "kitchen" as ctx_kitchen\n'
        'component "hall" as ctx_hall\n'
        'component "(unowned)" as unowned\n'
        "unowned --> ctx_hall : street.DoorbellRang\n"
        "ctx_kitchen --> ctx_hall : KettleBoiled, TeaServed\n"
        "ctx_kitchen --> ctx_kitchen : TeaServed\n"
        "@enduml\n"
    )


def test_cli_table_shows_modes_owned_events_and_handlers() -> None:
    """The table lists every context with its settings mode, events, topic and handlers."""
    result = run(f"{HERE}:example_app", EVENTSEAM_CONTEXTS__PAYMENTS="dual")
    assert result.exit_code == 0, result.output
    payments_row = next(line for line in result.output.splitlines() if "│ payments" in line)
    assert "dual" in payments_row
    assert "payments.PaymentAuthorized v1" in payments_row
    assert IN_MEMORY_BUS in payments_row
    assert "payments.authorize_payment_on_order_placed <- orders.OrderPlaced v1" in payments_row
    assert "eventseam.payments" in result.output
    assert "shipping.create_label_on_payment_authorized" in result.output


def test_cli_mermaid_goes_to_stdout_and_plantuml_to_a_file() -> None:
    """--format mermaid prints the diagram; -o writes it to a file instead."""
    expected = render_mermaid(build_module_map(ContextMap(CONTEXTS), {}))
    mermaid = run(f"{HERE}:example_app", "--format", "mermaid")
    assert mermaid.exit_code == 0, mermaid.output
    assert mermaid.stdout == expected
    result = run(f"{HERE}:example_app", "--format", "plantuml", "-o", "map.puml")
    assert result.exit_code == 0, result.output
    assert Path("map.puml").read_text().startswith("@startuml\n")


def test_cli_reads_modes_from_the_flag_table(tmp_path: Path) -> None:
    """A mode flipped in the flag table shows in the table; --no-flags shows settings only."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    seam = bootstrap(load_settings(database_url=url))
    try:
        with engine_of(seam).begin() as connection:
            seam.flags.set_mode(connection, "shipping", Mode.BROKER, by="test")
    finally:
        engine_of(seam).dispose()
    live = run("app.bootstrap:bootstrap", EVENTSEAM_DATABASE_URL=url)
    assert live.exit_code == 0, live.output
    assert "broker" in next(line for line in live.output.splitlines() if "│ shipping" in line)
    configured = run("app.bootstrap:bootstrap", "--no-flags", EVENTSEAM_DATABASE_URL=url)
    assert "local" in next(line for line in configured.output.splitlines() if "│ shipping" in line)


def test_cli_warns_and_uses_settings_when_the_flag_table_is_missing() -> None:
    """An unmigrated database gives a warning on stderr and the settings' modes."""
    result = run(f"{HERE}:app_with_unmigrated_database")
    assert result.exit_code == 0, result.output
    assert "warning: flag table not read" in result.stderr
    assert "modes from settings" in result.stderr
    assert re.search(r"│ kitchen\s+│ local", result.stdout)


def test_cli_without_an_application_exits_2() -> None:
    """An application that cannot be loaded exits with status 2."""
    result = run("no_such_module:factory")
    assert result.exit_code == 2
    assert "cannot load the application" in result.output


def test_readme_module_map_is_the_generated_diagram() -> None:
    """The README's "Module map" diagram is what ``eventseam contexts --format mermaid`` prints."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Module map", 1)[1]
    block = section.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert block == render_mermaid(build_module_map(ContextMap(CONTEXTS), {}))
