"""The bundled broker starts on a free loopback port, answers Kafka metadata, and restarts on the same port."""

from __future__ import annotations

import pytest

from outbox.bundled_broker import BrokerStartError, BundledBroker, answers_metadata, free_port

pytestmark = pytest.mark.broker


def test_starts_answers_metadata_stops_and_restarts_on_its_port() -> None:
    """start() returns once metadata answers; stop() silences the port; start() again reuses it."""
    broker = BundledBroker()
    try:
        broker.start()
        assert broker.running
        assert answers_metadata(broker.host, broker.port)
        port = broker.port
        broker.stop()
        assert not broker.running
        assert not answers_metadata(broker.host, port)
        broker.start()
        assert broker.port == port
        assert answers_metadata(broker.host, port)
    finally:
        broker.stop()
    broker.stop()  # a second stop is harmless


def test_missing_binary_fails_loudly() -> None:
    """A broker binary that cannot run raises BrokerStartError (the fixture turns it into a failure)."""
    broker = BundledBroker(binary="/nonexistent/tansu", port=free_port())
    with pytest.raises(BrokerStartError):
        broker.start(timeout=5)
