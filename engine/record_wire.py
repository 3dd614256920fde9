"""Kafka's record wire form (message format v2): zigzag varints and the headers section.

A v2 record ends with its headers as Kafka writes them: the header count, then per header the
name's length, the name (UTF-8), the value's length and the value, every length a zigzag varint.
``encode_headers`` gives exactly those bytes, so the outbox can store a record's headers once,
at write time, and the relay can copy them into a record batch without parsing them
(outbox.record_batch). ``decode_headers`` is its inverse and checks what it reads.
"""

from __future__ import annotations

import functools
from typing import Final

__all__ = [
    "VARINTS",
    "decode_headers",
    "encode_headers",
    "name_field",
    "read_varint",
    "varint",
    "varint_size",
]

Headers = list[tuple[str, bytes]]

#: ``varint(n)`` is looked up for 0 <= n < this (record and value lengths of usual events).
_TABLE_SIZE: Final = 1 << 13


def _zigzag_varint(value: int) -> bytes:
    """Kafka's varint of a signed 64-bit ``value`` (zigzag, 7 bits per byte, low bits first)."""
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


#: Precomputed varints of 0 .. _TABLE_SIZE - 1.
VARINTS: Final[tuple[bytes, ...]] = tuple(_zigzag_varint(n) for n in range(_TABLE_SIZE))


def varint(value: int) -> bytes:
    """Kafka's zigzag varint of ``value`` (any signed 64-bit integer)."""
    return VARINTS[value] if 0 <= value < _TABLE_SIZE else _zigzag_varint(value)


def varint_size(value: int) -> int:
    """Bytes ``varint(value)`` takes."""
    zigzag = (value << 1) ^ (value >> 63)
    return max(1, (zigzag.bit_length() + 6) // 7)


@functools.lru_cache(maxsize=256)
def name_field(name: str) -> bytes:
    """A header name as the headers section writes it: its length, then its UTF-8 bytes."""
    raw = name.encode()
    return varint(len(raw)) + raw


def encode_headers(headers: Headers) -> bytes:
    """The headers section of a v2 record holding ``headers`` (names UTF-8, values as they are)."""
    parts = [varint(len(headers))]
    for name, value in headers:
        parts += (name_field(name), varint(len(value)), value)
    return b"".join(parts)


def read_varint(data: bytes, position: int) -> tuple[int, int]:
    """(value, next position) of the zigzag varint at ``data[position:]``; ValueError if cut short."""
    shift = result = 0
    while True:
        if position >= len(data):
            raise ValueError("headers end inside a varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), position
        shift += 7
        if shift > 63:
            raise ValueError("a varint of the headers is longer than 10 bytes")


def decode_headers(data: bytes) -> Headers:
    """The (name, value) list of a headers section; ValueError/UnicodeDecodeError when malformed.

    Every byte must belong to it: trailing bytes are an error, as are negative lengths (Kafka's
    null header value is read as an empty value, the same as a consumer's ``b""``).
    """
    count, position = read_varint(data, 0)
    if count < 0:
        raise ValueError(f"negative header count {count}")
    headers: Headers = []
    for _ in range(count):
        length, position = read_varint(data, position)
        end = position + length
        if length < 0 or end > len(data):
            raise ValueError("a header name runs past the end of the headers")
        name = data[position:end].decode()
        length, position = read_varint(data, end)
        if length < -1:
            raise ValueError(f"negative header value length {length}")
        end = position + max(length, 0)
        if end > len(data):
            raise ValueError("a header value runs past the end of the headers")
        headers.append((name, bytes(data[position:end])))
        position = end
    if position != len(data):
        raise ValueError(f"{len(data) - position} bytes after the last header")
    return headers
