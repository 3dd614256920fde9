"""Kafka's murmur2 key hash, as the Java client and aiokafka's default partitioner compute it.

Computed once per event at write time and stored in ``outbox.keyhash``, so the relay picks the
partition with one modulo instead of hashing every key (aiokafka's pure-Python hash cost the
relay 23-25 % of its throughput, DESIGN.md).
"""

from __future__ import annotations

import struct

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """32-bit murmur2 of ``data`` as a signed int (the Java client's value).

    The 4-byte blocks are read in one ``struct.unpack_from`` call (little-endian), about twice
    as fast as assembling each from single bytes; this runs once per published event.
    """
    length = len(data)
    h = (_SEED ^ length) & _MASK
    blocks = length >> 2
    if blocks:
        for k in struct.unpack_from(f"<{blocks}I", data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    whole = blocks << 2
    rest = length & 3
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def key_hash(key: bytes) -> int:
    """Non-negative murmur2 of ``key``: ``key_hash(k) % partitions`` is Kafka's partition."""
    return murmur2(key) & 0x7FFFFFFF
