"""eventseam's transactional outbox: table, writer, migrations and the relay to Kafka."""

from __future__ import annotations
