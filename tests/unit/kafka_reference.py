"""Reference encodings written with aiokafka's own encoders, for tests of eventseam's faster ones."""

from __future__ import annotations

from aiokafka.record.util import encode_varint


def kafka_headers_section(headers: list[tuple[str, bytes]]) -> bytes:
    """The headers of a v2 record, written with aiokafka's varint encoder (the reference)."""
    out = bytearray()
    encode_varint(len(headers), out.append)
    for name, value in headers:
        raw = name.encode()
        encode_varint(len(raw), out.append)
        out += raw
        encode_varint(len(value), out.append)
        out += value
    return bytes(out)
