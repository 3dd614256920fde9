"""Fixtures of the reliability suite: the broker fixtures of tests/broker, the scale, a seeded RNG.

The scale is ``reduced`` unless ``EVENTSEAM_RELIABILITY=full`` (tests/reliability/scale.py).
"""

from __future__ import annotations

import os
import random

import pytest

from tests.broker.conftest import kafka_broker, private_broker, topic_prefix
from tests.reliability.scale import FULL, REDUCED_DATABASES, Scale, current_scale

__all__ = ["kafka_broker", "private_broker", "topic_prefix"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """At the reduced scale, run the scenarios of REDUCED_DATABASES on their one database
    (the others are reported as deselected; the full scale runs them all)."""
    if current_scale() is FULL:
        return
    kept, dropped = [], []
    for item in items:
        module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
        database = REDUCED_DATABASES.get(module)
        callspec = getattr(item, "callspec", None)
        param = callspec.params.get("database_url") if callspec is not None else None
        if database is not None and param is not None and param != database:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def scale() -> Scale:
    """The sizes of this run (reduced, or full with EVENTSEAM_RELIABILITY=full)."""
    return current_scale()


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """This test's random seed (EVENTSEAM_RELIABILITY_SEED overrides; recorded with the figures)."""
    value = int(os.environ.get("EVENTSEAM_RELIABILITY_SEED", "0")) or random.randrange(1, 2**31)
    request.node.user_properties.append(("seed", value))
    return value
