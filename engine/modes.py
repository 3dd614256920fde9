"""Routing modes of a context on its way from the in-memory bus to Kafka."""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """Where a context's events go.

    LOCAL   in-memory bus only (the outbox row is kept for audit/replay, never relayed);
    DUAL    in-memory bus and outbox -> Kafka (shadow the broker path);
    BROKER  outbox -> Kafka only; in-process subscribers receive the event back from Kafka.
    """

    LOCAL = "local"
    DUAL = "dual"
    BROKER = "broker"

    @property
    def dispatches_locally(self) -> bool:
        """True when the in-memory bus delivers the context's events in this mode."""
        return self is not Mode.BROKER

    @property
    def relays(self) -> bool:
        """True when the relay forwards the context's events to Kafka in this mode."""
        return self is not Mode.LOCAL
