"""murmur2: the Kafka Java client's test vectors, and agreement with aiokafka's own partitioner hash."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from outbox.murmur2 import key_hash, murmur2

#: Kafka's UtilsTest.testMurmur2 (org.apache.kafka.common.utils).
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), JAVA_VECTORS.items())
def test_java_vectors(data: bytes, expected: int) -> None:
    """murmur2 gives the Java client's values."""
    assert murmur2(data) == expected
    assert key_hash(data) == expected & 0x7FFFFFFF


def test_every_length_matches_the_reference() -> None:
    """Every length 0..80 (all tail sizes), random bytes, equals aiokafka's byte-by-byte hash (unsigned)."""
    generator = random.Random(7)
    for length in range(81):
        for _ in range(20):
            data = generator.randbytes(length)
            assert murmur2(data) & 0xFFFFFFFF == aiokafka_murmur2(data)
