"""outbox.stored_headers reads exactly what codec.decode_headers reads, or says it cannot."""

from __future__ import annotations

import random

import pytest

from engine.codec import decode_headers, encode_headers
from outbox.stored_headers import stored_headers

CLOUD = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"01a22087-80d0-72db-83f4-82efd65746e1"),
    ("ce_type", b"orders.OrderPlaced"),
    ("ce_time", b"2026-11-28T05:01:20.976155+00:00"),
    ("content-type", b"application/json"),
]


def test_rows_of_one_layout_read_like_the_json_parser() -> None:
    """Consecutive rows sharing header names (the regex path) give decode_headers' list."""
    for n in range(5):
        headers = [(name, value + str(n).encode()) for name, value in CLOUD]
        blob = encode_headers(headers)
        assert stored_headers(blob) == decode_headers(blob) == headers


def test_interleaved_event_types_keep_their_own_values() -> None:
    """Rows of several types (per-type values differ, names equal) interleave: each reads right."""
    types = [b"orders.OrderPlaced", b"orders.LineAdded", b"billing.Charged", b"a.B", b"c.D", b"e.F"]
    rng = random.Random(7)
    for n in range(300):
        event_type = rng.choice(types)
        headers = [
            (name, event_type if name == "ce_type" else value + str(n).encode())
            for name, value in CLOUD
        ]
        blob = encode_headers(headers)
        assert stored_headers(blob) == decode_headers(blob) == headers


def test_alternating_layouts_and_odd_values() -> None:
    """Random layouts in random order, values with every printable byte, escapes and latin-1."""
    rng = random.Random(5)
    alphabet = [bytes([b]) for b in range(256)]
    layouts = [["ce_id"], ["ce_id", "traceparent"], [], ["a\\b", 'q"x', "ce_type"], ["ü"]]
    for _ in range(400):
        names = rng.choice(layouts)
        printable = rng.random() < 0.7
        headers = [
            (
                name,
                b"".join(
                    rng.choice(alphabet[32:127] if printable else alphabet)
                    for _ in range(rng.randrange(12))
                ),
            )
            for name in names
        ]
        blob = encode_headers(headers)
        found = stored_headers(blob)
        if found is not None:
            assert found == decode_headers(blob) == headers
        else:  # only blobs that need the parser are left to it
            assert b"\\" in blob or not blob.isascii()


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"[",
        b'[["ce_id","x"]',
        b'[["ce_id","x"],]',
        b'[["ce_id","x","y"]]',
        b'{"ce_id":"x"}',
        b'[["ce_id", "x"]]',
        b'[["ce_id","x"]] ',
    ],
)
def test_other_layouts_are_left_to_the_parser(blob: bytes) -> None:
    """Anything that is not exactly encode_headers' layout returns None, after a good row too."""
    assert stored_headers(encode_headers([("ce_id", b"x")])) == [("ce_id", b"x")]
    assert stored_headers(blob) is None
