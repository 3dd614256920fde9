"""The Kafka ACLs a deployment needs, derived from the context registry (``eventseam acl``).

Names come from the code the relay and the runner use, never re-derived here: topics from
outbox.topics.TopicNamer (``RelaySettings.topic_template``), consumer groups from
``ConsumerSettings.group_id`` and dead-letter topics from engine.dead_letter_topic.

    relay principal (AclSettings.relay_principal)
        every context topic              WRITE, DESCRIBE; CREATE, DESCRIBE_CONFIGS (it creates
                                         its topics at start and checks their settings)
    context principal (AclSettings.principals, default "User:<context>"), for its handlers
        each subscribed topic            READ, DESCRIBE; CREATE (the runner creates what it reads)
        each handler's consumer group    READ
        each dead-letter topic           WRITE, DESCRIBE, CREATE

A context whose events the relay publishes needs no WRITE of its own: its events leave through
the outbox. Subscriptions are the context's ``subscribes=[...]`` when declared, else the types
its handlers subscribe to. A subscribed type no registered context owns has no topic: AclError.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from shlex import quote
from typing import TYPE_CHECKING

from outbox.topics import TopicNamer

from .dead_letter_topic import DeadLetterTopics
from .errors import SettingsError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .contexts import BoundedContext, ContextMap
    from .settings import EventSeamSettings

RELAY_TOPIC = ("WRITE", "DESCRIBE", "CREATE", "DESCRIBE_CONFIGS")
READ_TOPIC = ("READ", "DESCRIBE", "CREATE")
READ_GROUP = ("READ",)
DEAD_LETTER_TOPIC = ("WRITE", "DESCRIBE", "CREATE")


class AclError(SettingsError):
    """Raised by ``required_acls`` when the registry cannot name a resource (unowned event)."""


@dataclass(frozen=True, slots=True, order=True)
class Acl:
    """One ALLOW rule: ``principal`` may ``operation`` the literal ``resource`` of its type."""

    principal: str
    resource_type: str  # "TOPIC" or "GROUP"
    resource: str
    operation: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """The rule as JSON-ready values (pattern type LITERAL, permission ALLOW, host *)."""
        return asdict(self) | {"pattern_type": "LITERAL", "permission": "ALLOW", "host": "*"}


def required_acls(contexts: ContextMap, settings: EventSeamSettings) -> list[Acl]:
    """Every rule the relay and each context's workers need: sorted, one per principal,
    resource and operation (the reasons of a rule needed twice are joined)."""
    unknown = sorted(set(settings.acl.principals) - set(contexts.names()))
    if unknown:
        raise AclError(
            f"settings.acl.principals names unknown context(s) {', '.join(map(repr, unknown))}; "
            f"known contexts: {', '.join(contexts.names()) or 'none'}"
        )
    namer = TopicNamer(settings.relay)
    found = list(_relay_rules(contexts, settings, namer))
    for context in contexts:
        found.extend(_context_rules(context, contexts, settings, namer))
    reasons: dict[tuple[str, str, str, str], set[str]] = {}
    for rule in found:
        key = (rule.principal, rule.resource_type, rule.resource, rule.operation)
        reasons.setdefault(key, set()).add(rule.reason)
    return sorted(Acl(*key, "; ".join(sorted(why))) for key, why in reasons.items())


def _relay_rules(
    contexts: ContextMap, settings: EventSeamSettings, namer: TopicNamer
) -> Iterator[Acl]:
    principal = settings.acl.relay_principal
    for context in contexts:
        for event_type in context.owns:
            topic = namer(context.name, event_type.event_name)
            reason = f"relay publishes the events of {context.name}"
            for operation in RELAY_TOPIC:
                yield Acl(principal, "TOPIC", topic, operation, reason)


def _context_rules(
    context: BoundedContext, contexts: ContextMap, settings: EventSeamSettings, namer: TopicNamer
) -> Iterator[Acl]:
    principal = settings.acl.principal_of(context.name)
    dead_letters = DeadLetterTopics(
        settings.consumer.dlq_topic_template, settings.relay.topic_prefix
    )
    declared = context.subscribes
    for spec in context.handlers:
        group = settings.consumer.group_id(spec.name)
        yield Acl(principal, "GROUP", group, "READ", f"consumer group of {spec.name}")
        for event_type in spec.event_types:
            if declared is not None and event_type not in declared:
                continue  # refused at start-up (SubscriptionError): never granted
            owner = contexts.owner_of(event_type)
            if owner is None:
                raise AclError(
                    f"{spec.name} subscribes to {event_type.event_name}, which no registered "
                    "context owns: its topic cannot be named"
                )
            topic = namer(owner, event_type.event_name)
            for operation in READ_TOPIC:
                yield Acl(principal, "TOPIC", topic, operation, f"{spec.name} reads {owner}")
            dead_letter = dead_letters(spec.name, context.name, topic)
            for operation in DEAD_LETTER_TOPIC:
                yield Acl(
                    principal, "TOPIC", dead_letter, operation, f"dead letters of {spec.name}"
                )


def kafka_acls_commands(
    rules: list[Acl], bootstrap: str, command_config: str | None = None
) -> list[str]:
    """``kafka-acls.sh --add`` command lines, one per principal and resource (operations merged)."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for rule in rules:
        grouped.setdefault((rule.principal, rule.resource_type, rule.resource), []).append(
            rule.operation
        )
    config = f" --command-config {quote(command_config)}" if command_config else ""
    lines = []
    for (principal, resource_type, resource), operations in grouped.items():
        flags = " ".join(f"--operation {_camel(operation)}" for operation in operations)
        lines.append(
            f"kafka-acls.sh --bootstrap-server {quote(bootstrap)}{config} --add "
            f"--allow-principal {quote(principal)} {flags} "
            f"--{resource_type.lower()} {quote(resource)} --resource-pattern-type literal"
        )
    return lines


def _camel(operation: str) -> str:
    """``DESCRIBE_CONFIGS`` -> ``DescribeConfigs`` (kafka-acls.sh spelling)."""
    return "".join(part.capitalize() for part in operation.split("_"))
