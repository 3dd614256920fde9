"""Subject keys for personal data: one row per (subject, key version), the key wrapped.

engine.crypto_keys reads and writes it. ``wrapped_key`` is the subject's data key wrapped with
the master key (engine.crypto); crypto-shredding sets it to NULL and ``shredded_at`` to the time,
keeping the row so key versions keep counting up (a new key after an erasure gets the next
version, never one an old ciphertext names). A NULL ``wrapped_key`` means erased.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Integer, LargeBinary, String, Table, func

from .table import metadata

subject_keys = Table(
    "eventseam_subject_keys",
    metadata,
    Column("subject", String(200), primary_key=True, comment="data subject (e.g. a customer id)"),
    Column("version", Integer, primary_key=True, autoincrement=False, comment="key version, 1 up"),
    Column(
        "wrapped_key",
        LargeBinary,
        nullable=True,
        comment="nonce + AES-GCM(master key, data key); NULL once shredded",
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("shredded_at", DateTime(timezone=True), nullable=True, comment="when it was erased"),
)
