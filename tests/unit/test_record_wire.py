"""engine.record_wire: Kafka's zigzag varints and record headers section, and their checks."""

from __future__ import annotations

import json
import uuid

import pytest
from aiokafka.record.util import encode_varint

from engine.codec import decode_headers as stored_headers_read
from engine.record_wire import decode_headers, encode_headers, varint, varint_size
from tests.unit.kafka_reference import kafka_headers_section


@pytest.mark.parametrize("value", [0, 1, -1, 63, 64, -65, 8_191, 8_192, 300_000, 2**62, -(2**63)])
def test_varints_match_aiokafkas(value: int) -> None:
    """Table and computed varints are aiokafka's bytes; varint_size is their length."""
    expected = bytearray()
    encode_varint(value, expected.append)
    assert varint(value) == bytes(expected)
    assert varint_size(value) == len(expected)


def test_headers_are_the_headers_section_kafka_writes() -> None:
    """Non-ASCII names and values, every byte value, an empty name: the reference's bytes."""
    headers = [
        ("ce_id", str(uuid.uuid4()).encode()),
        ("ce_subject", 'Zürich ☕ \u2028 "quoted" \\ \x00'.encode()),
        ("bytes", bytes(range(256))),
        ("naïve", b"x" * 9_000),
        ("", b""),
    ]
    assert encode_headers(headers) == kafka_headers_section(headers)
    assert encode_headers([]) == b"\x00"


def test_headers_round_trip() -> None:
    """Any names (UTF-8) and values (bytes, empty included) come back as a list, in order."""
    headers = [("ce_id", b"1"), ("naïve", bytes(range(256))), ("empty", b""), ("ce_id", b"2")]
    assert decode_headers(encode_headers(headers)) == headers
    assert decode_headers(encode_headers([])) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "inside a varint"),
        (b"\x02\x0cce_id", "name runs past"),
        (b"\x02\x04id\x06ab", "value runs past"),
        (b"\x02\x04id\x02a!", "1 bytes after the last header"),
        (b"\x01", "negative header count"),
        (b"\xff" * 11, "longer than 10 bytes"),
    ],
)
def test_malformed_headers_raise_value_error(data: bytes, message: str) -> None:
    """Cut-short, trailing or negative lengths are ValueErrors saying what is wrong."""
    with pytest.raises(ValueError, match=message):
        decode_headers(data)


def test_a_name_that_is_not_utf8_raises_unicode_error() -> None:
    with pytest.raises(UnicodeDecodeError):
        decode_headers(b"\x02\x02\xff\x00")


def test_the_codec_still_reads_headers_stored_as_json_by_earlier_builds() -> None:
    """codec.decode_headers reads the old JSON form (latin-1 strings) and the wire form alike."""
    headers = [("ce_id", b"abc"), ("ce_subject", "é".encode())]
    old = json.dumps([[k, v.decode("latin-1")] for k, v in headers]).encode()
    assert stored_headers_read(old) == headers
    assert stored_headers_read(encode_headers(headers)) == headers
