"""A stand-in for aiokafka's ConsumerRecord, for the runner's and the decoder's unit tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FakeRecord:
    """A fetched record with the attributes of aiokafka's (headers as the test builds them)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any
    timestamp: int = 1_700_000_000_000
