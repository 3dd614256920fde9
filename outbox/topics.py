"""Topic names, explicit topic creation and the detection of topics that differ from settings.

Naming: a row's topic is ``RelaySettings.topic_template`` formatted with

    prefix      RelaySettings.topic_prefix ("eventseam." by default)
    context     the publishing context (outbox ``aggregatetype``)
    event_type  the event's wire name (outbox ``type``), for one topic per event type

so the default ``"{prefix}{context}"`` sends every event of ``orders`` to ``eventseam.orders``.
Every topic of a context is created with that context's ``EventSeamSettings.topics`` entry
(partitions, replication factor, ``retention.ms``), defaults otherwise.

Creation: the relay creates a topic before it first sends to it (at start for the contexts the
settings name, on first sight for others) and again after a failure, because a broker may have
lost it (the bundled broker keeps topics in memory). A topic that already exists with other
settings is used as it is (its real partition count decides partitions) and a warning carrying
the TopicMismatchError message is logged.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import structlog

from engine.errors import SettingsError

from .errors import PermanentPublishError, TopicMismatchError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from engine.settings import EventSeamSettings, RelaySettings

log = structlog.get_logger(__name__)

TEMPLATE_FIELDS = frozenset({"prefix", "context", "event_type"})
_LEGAL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How a topic should be: what the relay creates."""

    name: str
    partitions: int
    replication_factor: int
    retention_ms: int | None = None

    def configs(self) -> dict[str, str]:
        """Topic configs to create the topic with."""
        return {} if self.retention_ms is None else {"retention.ms": str(self.retention_ms)}


@dataclass(frozen=True, slots=True)
class TopicState:
    """How an existing topic is, as the broker describes it."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


class TopicAdmin(Protocol):
    """Creates and describes topics (outbox.kafka.KafkaTopicAdmin, or a fake)."""

    async def create(self, spec: TopicSpec) -> bool: ...

    async def describe(self, name: str) -> TopicState: ...

    async def exists(self, name: str) -> bool: ...

    async def aclose(self) -> None: ...


def mismatch(spec: TopicSpec, state: TopicState) -> TopicMismatchError | None:
    """The difference between a topic's settings and the existing topic, or None."""
    problems = []
    if state.partitions != spec.partitions:
        problems.append(f"{state.partitions} partitions instead of {spec.partitions}")
    if state.replication_factor != spec.replication_factor:
        problems.append(
            f"replication factor {state.replication_factor} instead of {spec.replication_factor}"
        )
    wanted = spec.configs().get("retention.ms")
    if wanted is not None and state.configs.get("retention.ms") != wanted:
        problems.append(f"retention.ms {state.configs.get('retention.ms')} instead of {wanted}")
    return TopicMismatchError(spec.name, "; ".join(problems)) if problems else None


class TopicNamer:
    """Turns (context, event type) into a topic name with the relay's template; cached."""

    def __init__(self, settings: RelaySettings) -> None:
        fields = {
            name for _, name, _, _ in string.Formatter().parse(settings.topic_template) if name
        }
        unknown = fields - TEMPLATE_FIELDS
        if unknown:
            raise SettingsError(
                f"topic_template uses unknown fields {sorted(unknown)}; known: {sorted(TEMPLATE_FIELDS)}"
            )
        self.template, self.prefix = settings.topic_template, settings.topic_prefix
        self.per_event_type = "event_type" in fields
        self._cache: dict[tuple[str, str], str] = {}

    def __call__(self, context: str, event_type: str = "") -> str:
        """The topic of ``context``'s events of ``event_type``; PermanentPublishError when illegal."""
        key = (context, event_type)
        name = self._cache.get(key)
        if name is None:
            name = self.template.format(prefix=self.prefix, context=context, event_type=event_type)
            if not _LEGAL_NAME.match(name) or name in {".", ".."}:
                raise PermanentPublishError(
                    name, "illegal Kafka topic name (letters, digits, '.', '_', '-'; at most 249)"
                )
            self._cache[key] = name
        return name


class Topics:
    """The topics the relay sends to: created once, partition counts cached until ``forget``."""

    def __init__(
        self,
        settings: EventSeamSettings,
        admin: TopicAdmin,
        partitions: Callable[[str], Awaitable[int]],
    ) -> None:
        self._settings = settings
        self._admin = admin
        self._partitions_of = partitions
        self.name = TopicNamer(settings.relay)
        self._known: dict[str, int] = {}

    def spec(self, topic: str, context: str) -> TopicSpec:
        """The TopicSpec of ``topic``, from ``context``'s topic settings."""
        config = self._settings.topic_settings(context)
        return TopicSpec(topic, config.partitions, config.replication_factor, config.retention_ms)

    def startup_topics(self) -> dict[str, str]:
        """Topics known before any row is read (topic -> context), for contexts the settings name."""
        if self.name.per_event_type:
            return {}
        contexts = {name for name, mode in self._settings.contexts.items() if mode.relays} | set(
            self._settings.topics
        )
        return {self.name(context): context for context in sorted(contexts)}

    def cached_partitions(self, topic: str) -> int | None:
        """Partition count of a topic already ensured, or None."""
        return self._known.get(topic)

    async def partitions(self, topic: str, context: str) -> int:
        """Partition count of ``topic``, creating the topic first when not done yet."""
        known = self._known.get(topic)
        if known is None:
            known = self._known[topic] = await self.ensure(topic, context)
        return known

    async def ensure(self, topic: str, context: str) -> int:
        """Create ``topic`` if missing; warn when it exists with other settings; its partitions."""
        spec = self.spec(topic, context)
        if await self._admin.create(spec):
            log.info(
                "topics.created",
                topic=topic,
                partitions=spec.partitions,
                replication_factor=spec.replication_factor,
            )
        else:
            problem = mismatch(spec, await self._admin.describe(topic))
            if problem is not None:
                log.warning(
                    "topics.mismatch", topic=topic, detail=problem.detail, message=str(problem)
                )
        return await self._partitions_of(topic)

    async def exists(self, topic: str) -> bool:
        """True when the broker still has ``topic`` (PublishError when it cannot tell)."""
        return await self._admin.exists(topic)

    def forget(self) -> None:
        """Drop cached topics: each is ensured again before its next send (after failures)."""
        self._known.clear()
