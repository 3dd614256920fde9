"""The module map: which context owns, publishes and subscribes to which events, in which mode.

    module_map = build_module_map(seam.contexts, {n: seam.mode_of(n) for n in seam.contexts.names()},
                                  topic_of=TopicNamer(settings.relay))
    print(render_mermaid(module_map))     # flowchart: contexts as nodes, edges labelled by event

Pure: ``build_module_map`` reads the ContextMap and the modes it is given (it touches no
database and no broker); the renderers turn the result into text. A handler subscribed to an
event no context owns gets an edge from the ``UNOWNED`` node. Diagrams leave modes out (they
change at runtime; the table shows them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .modes import Mode

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .contexts import BoundedContext, ContextMap
    from .events import DomainEvent

#: Source of edges for events no context owns.
UNOWNED = "(unowned)"
#: Where a context's events go when its mode dispatches locally.
IN_MEMORY_BUS = "in-memory bus"


@dataclass(frozen=True, slots=True)
class EventRef:
    """An event version as the map shows it: wire name, version and owning context."""

    name: str
    version: int
    owner: str | None

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


@dataclass(frozen=True, slots=True)
class HandlerNode:
    """A handler: its durable name (consumer group and inbox key) and the events it takes."""

    name: str
    events: tuple[EventRef, ...]


@dataclass(frozen=True, slots=True)
class ContextNode:
    """A context with its mode, owned events, destinations of its events and handlers."""

    name: str
    mode: Mode
    owns: tuple[EventRef, ...]
    publishes_to: tuple[str, ...]
    handlers: tuple[HandlerNode, ...]


@dataclass(frozen=True, slots=True)
class Edge:
    """Events flowing from ``source`` (the owner, or UNOWNED) to ``target`` (a subscriber)."""

    source: str
    target: str
    events: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModuleMap:
    """Contexts in registration order; edges sorted by (source, target)."""

    contexts: tuple[ContextNode, ...]
    edges: tuple[Edge, ...]


def build_module_map(
    contexts: ContextMap,
    modes: Mapping[str, Mode],
    *,
    topic_of: Callable[[str, str], str] | None = None,
) -> ModuleMap:
    """The module map of ``contexts``; a context missing from ``modes`` is ``local``.

    ``topic_of(context, wire_name)`` names Kafka topics (outbox.topics.TopicNamer); without it,
    relayed events are shown as going to ``kafka``.
    """
    nodes = []
    flows: dict[tuple[str, str], set[str]] = {}
    for context in contexts:
        mode = modes.get(context.name, Mode.LOCAL)
        handlers = []
        for spec in context.handlers:
            events = tuple(_ref(contexts, t) for t in spec.event_types)
            handlers.append(HandlerNode(spec.name, events))
            for event in events:
                flows.setdefault((event.owner or UNOWNED, context.name), set()).add(event.name)
        nodes.append(
            ContextNode(
                name=context.name,
                mode=mode,
                owns=tuple(_ref(contexts, t) for t in context.owns),
                publishes_to=_destinations(context, mode, topic_of),
                handlers=tuple(handlers),
            )
        )
    edges = tuple(
        Edge(source, target, tuple(sorted(names)))
        for (source, target), names in sorted(flows.items())
    )
    return ModuleMap(tuple(nodes), edges)


def _ref(contexts: ContextMap, event_type: type[DomainEvent]) -> EventRef:
    name = event_type.event_name or event_type.__qualname__
    return EventRef(name, event_type.event_version, contexts.owner_of(event_type))


def _destinations(
    context: BoundedContext, mode: Mode, topic_of: Callable[[str, str], str] | None
) -> tuple[str, ...]:
    if not context.owns:
        return ()
    places = [IN_MEMORY_BUS] if mode.dispatches_locally else []
    if mode.relays:
        topics = {
            topic_of(context.name, t.event_name) if topic_of else "kafka" for t in context.owns
        }
        places.extend(sorted(topics))
    return tuple(places)


def render_mermaid(module_map: ModuleMap) -> str:
    """A Mermaid flowchart (left to right): one node per context, one edge per flow."""
    lines = ["flowchart LR"]
    ids = _node_ids(module_map)
    for name, node_id in ids.items():
        lines.append(f'    {node_id}["{_mermaid_text(name)}"]')
    for edge in module_map.edges:
        label = _mermaid_text(_label(edge))
        lines.append(f'    {ids[edge.source]} -->|"{label}"| {ids[edge.target]}')
    return "\n".join(lines) + "\n"


def render_plantuml(module_map: ModuleMap) -> str:
    """A PlantUML component diagram: one component per context, one arrow per flow."""
    lines = ["@startuml", "left to right direction"]
    ids = _node_ids(module_map)
    for name, node_id in ids.items():
        lines.append(f'component "{_plantuml_text(name)}" as {node_id}')
    for edge in module_map.edges:
        label = _plantuml_text(_label(edge))
        lines.append(f"{ids[edge.source]} --> {ids[edge.target]} : {label}")
    lines.append("@enduml")
    return "\n".join(lines) + "\n"


def _node_ids(module_map: ModuleMap) -> dict[str, str]:
    """Display name -> diagram id (``ctx_`` + name: ``end`` or a leading ``o`` confuse Mermaid)."""
    ids = {node.name: f"ctx_{node.name}" for node in module_map.contexts}
    if any(edge.source == UNOWNED for edge in module_map.edges):
        ids[UNOWNED] = "unowned"
    return ids


def _label(edge: Edge) -> str:
    """The edge's event names, without the source context's ``<context>.`` prefix."""
    prefix = f"{edge.source}."
    return ", ".join(name.removeprefix(prefix) for name in edge.events)


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def _plantuml_text(text: str) -> str:
    return text.replace('"', "'").replace("\n", " ")
