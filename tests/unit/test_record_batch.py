"""outbox.record_batch writes exactly the record batches aiokafka's own builder writes.

The reference is aiokafka's DefaultRecordBatchBuilder given the same records, timestamp and
producer state (headers as a list); the batches are also read back with aiokafka's reader.
"""

from __future__ import annotations

import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from engine.codec import encode_headers
from outbox import record_batch
from outbox.record_batch import BATCH_OVERHEAD, RecordBatch, record_size

NOW = 1_764_000_000.123
NOW_MS = 1_764_000_000_123
MIB = 1 << 20

Headers = list[tuple[str, bytes]]
Record = tuple[bytes | None, bytes, Headers]


def headers_of(i: int) -> Headers:
    return [
        ("ce_id", f"id-{i}".encode()),
        ("ce_type", b"orders.OrderPlaced"),
        ("ce_subject", "commande-é".encode()),
        ("traceparent", bytes(range(i % 7, 55))),
    ]


def built(records: list[Record], producer: tuple[int, int, int] | None = None) -> bytes:
    batch = RecordBatch("orders", 3, MIB, clock=lambda: NOW)
    for key, value, headers in records:
        assert batch.append(key, value, encode_headers(headers))
    if producer is not None:
        batch._set_producer_state(*producer)
    return bytes(batch._build())


def reference(records: list[Record], producer: tuple[int, int, int] = (-1, -1, -1)) -> bytes:
    builder = DefaultRecordBatchBuilder(2, 0, False, *producer, MIB)
    for offset, (key, value, headers) in enumerate(records):
        assert builder.append(offset, NOW_MS, key, value, headers) is not None
    return bytes(builder.build())


@pytest.mark.parametrize(
    "records",
    [
        [(b"order-1", b'{"n":1}', headers_of(1))],
        [(f"order-{i}".encode(), b"v" * (i * 37), headers_of(i)) for i in range(200)],
        [(None, b"keyless", []), (b"", b"", [("empty", b"")])],
        [(b"k" * 9_000, b"x" * 20_000, headers_of(2))],  # lengths past the varint table
    ],
    ids=["one", "many", "keyless-and-empty", "large"],
)
def test_batches_equal_aiokafkas_byte_for_byte(records: list[Record]) -> None:
    """Same records, same timestamp: the same bytes, CRC included; aiokafka reads them back."""
    data = built(records)
    assert data == reference(records)
    read = DefaultRecordBatch(data)
    assert read.validate_crc()
    assert [(r.key, r.value, r.headers, r.timestamp) for r in read] == [
        (key, value, headers, NOW_MS) for key, value, headers in records
    ]


def test_an_idempotent_producers_state_is_written_into_the_header() -> None:
    """Producer id, epoch and base sequence set before building end up where aiokafka puts them."""
    records: list[Record] = [(b"a", b"1", headers_of(1)), (b"b", b"2", headers_of(2))]
    data = built(records, producer=(4242, 7, 19))
    assert data == reference(records, producer=(4242, 7, 19))
    read = DefaultRecordBatch(data)
    assert (read.producer_id, read.producer_epoch, read.base_sequence) == (4242, 7, 19)


def test_a_full_batch_refuses_the_next_record_but_never_the_first() -> None:
    """Past max_bytes a record is refused (False, nothing added); a lone record always fits."""
    headers = encode_headers(headers_of(1))
    size = record_size(b"key", b"v" * 100, headers)
    batch = RecordBatch("t", 0, BATCH_OVERHEAD + 2 * size, clock=lambda: NOW)
    assert batch.append(b"key", b"v" * 100, headers)
    assert batch.size() == BATCH_OVERHEAD + size
    assert batch.append(b"key", b"v" * 100, headers)
    assert not batch.append(b"key", b"v" * 100, headers)
    assert len(batch) == batch.record_count() == 2
    assert len(batch._build()) == batch.size()
    lone = RecordBatch("t", 0, 10, clock=lambda: NOW)
    assert lone.append(b"key", b"v" * 100, headers)
    assert not lone.append(b"key", b"v", headers)


def test_record_size_is_what_a_record_adds_to_its_batch() -> None:
    """record_size(key, value, headers, offset delta) is the growth of the batch, keyless too."""
    batch = RecordBatch("t", 0, MIB, clock=lambda: NOW)
    for index, (key, value) in enumerate([(b"k", b"v"), (None, b"x" * 9_000), (b"", b"")]):
        headers = encode_headers(headers_of(index))
        before = batch.size()
        assert batch.append(key, value, headers)
        assert batch.size() - before == record_size(key, value, headers, index)


def test_it_is_closed_to_the_producer_and_to_late_records() -> None:
    """aiokafka never appends to it; a record added after building raises instead of vanishing."""
    batch = RecordBatch("t", 0, MIB, clock=lambda: NOW)
    assert batch.closed()
    assert batch.append(b"k", b"v", encode_headers([]))
    first = batch._build()
    assert batch._build() is first  # a retry sends the same bytes
    with pytest.raises(RuntimeError, match="once it was built"):
        batch.append(b"k", b"v", encode_headers([]))


@pytest.mark.parametrize("size", [0, 1, 61, 4096, 350_000])
def test_both_crc32c_routines_agree(size: int) -> None:
    """The C routine the batches use where google-crc32c has one, and the fallback to aiokafka's."""
    tail = bytes(range(40))
    records = bytes((i * 7 + 3) % 256 for i in range(size))
    assert record_batch._google_crc32c(tail, records) == record_batch._aiokafka_crc32c(
        tail, records
    )
    assert record_batch._batch_crc32c(tail, records) == record_batch._aiokafka_crc32c(tail, records)
