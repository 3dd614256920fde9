"""TLS for real: the relay and a consumer worker through a verifying, mutual-TLS proxy.

The bundled broker has no TLS, so a TLS-terminating proxy (tests.broker.tls_proxy) sits in front
of a broker of this module that advertises the proxy's address. Certificates are made here
(trustme); the client key is encrypted and its password read from a file.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.from_thread import start_blocking_portal
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker
from structlog.testing import capture_logs

from engine.consumer import KafkaConsumer
from engine.contexts import BoundedContext
from engine.modes import Mode
from engine.runner import ConsumerRunner
from engine.seam import EventSeam
from engine.settings import (
    ConsumerSettings,
    EventSeamSettings,
    KafkaSettings,
    RelaySettings,
    TopicSettings,
)
from outbox.bundled_broker import BrokerStartError, free_port
from outbox.errors import KafkaTLSError
from outbox.kafka import KafkaPublisher, KafkaTopicAdmin
from outbox.table import metadata
from tests.broker.tls_proxy import (
    KEY_PASSWORD,
    PROXY_HOST,
    AdvertisingBroker,
    Certificates,
    TLSProxy,
    make_certificates,
    server_context,
)
from tests.kafka_broker import REPO_ROOT, ItemAdded, item, outbox_rows, relay_running, wait_for
from tests.kafka_broker import write_events as write_outbox

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from pathlib import Path

    from engine.consumer import Partition

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

orders = BoundedContext("orders", owns=[ItemAdded])
sink = BoundedContext("sink", subscribes=[ItemAdded])
SEEN: Counter[str] = Counter()


@sink.handler(ItemAdded, name="count_item_on_item_added")
async def count_item_on_item_added(event: ItemAdded) -> None:
    """Count each ItemAdded the worker applies."""
    SEEN[str(event.event_id)] += 1


@dataclass(frozen=True, slots=True)
class TLSBroker:
    """The proxy's addresses (by its certificate's name, and by IP) and the test PKI."""

    bootstrap: str
    by_ip: str
    certificates: Certificates
    proxy: TLSProxy


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSBroker]:
    """A broker of this module behind a mutual-TLS proxy it advertises as localhost:<port>."""
    certificates = make_certificates(tmp_path_factory.mktemp("pki"))
    port = free_port()
    broker = AdvertisingBroker(f"{PROXY_HOST}:{port}")
    try:
        broker.start(timeout=60)
    except BrokerStartError as exc:
        pytest.fail(f"the bundled Kafka broker cannot start: {exc}")
    proxy = TLSProxy(server_context(certificates), port, (broker.host, broker.port))
    try:
        with start_blocking_portal() as portal:
            serving, _ = portal.start_task(proxy.serve)
            yield TLSBroker(f"{PROXY_HOST}:{port}", f"127.0.0.1:{port}", certificates, proxy)
            serving.cancel()
    finally:
        broker.stop()


def tls_kafka(broker: TLSBroker, **overrides: Any) -> KafkaSettings:
    """Verified mutual TLS to the proxy; the encrypted key's password comes from a file."""
    files = broker.certificates
    values: dict[str, Any] = {
        "bootstrap_servers": broker.bootstrap,
        "security_protocol": "SSL",
        "ssl_cafile": files.ca,
        "ssl_certfile": files.client_cert,
        "ssl_keyfile": files.client_key,
        "ssl_password_file": files.client_key_password,
        "enable_idempotence": "off",
        "request_timeout_ms": 5000,
        **overrides,
    }
    return KafkaSettings(**values)


def app_settings(database_url: str, kafka: KafkaSettings, prefix: str) -> EventSeamSettings:
    """orders relayed (broker mode) to its own one-partition topic."""
    return EventSeamSettings(
        database_url=database_url,
        kafka=kafka,
        relay=RelaySettings(topic_prefix=prefix, poll_interval=0.05, backoff_max=0.5),
        contexts={"orders": Mode.BROKER},
        topics={"orders": TopicSettings(partitions=1)},
    )


def worker_settings(prefix: str) -> ConsumerSettings:
    """Short sessions and fetch waits for the bundled broker."""
    return ConsumerSettings(
        group_prefix=f"{prefix}g.",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        fetch_max_wait_ms=20,
    )


def logged_text(caplog: pytest.LogCaptureFixture, structured: Sequence[Mapping[str, Any]]) -> str:
    """Everything logged through the standard library and structlog, as one string."""
    return caplog.text + "\n".join(repr(entry) for entry in structured)


async def test_relay_and_worker_deliver_over_verified_mutual_tls(
    tls_broker: TLSBroker, sqlite_url: str, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The relay (producer, admin) and a consumer worker (consumer, DLQ producer) deliver through verified mTLS; the key password is never logged."""
    caplog.set_level(logging.DEBUG)
    forwarded_before = tls_broker.proxy.forwarded
    settings = app_settings(sqlite_url, tls_kafka(tls_broker), topic_prefix)
    engine = create_engine(sqlite_url)
    metadata.create_all(engine)
    events = [item(f"a-{n % 3}", n) for n in range(20)]
    write_outbox(engine, events)
    seam = EventSeam(settings, [orders, sink], session_factory=sessionmaker(engine), consume=False)
    runner = ConsumerRunner(seam, ["sink"], settings=worker_settings(topic_prefix))
    with capture_logs() as structured:
        async with relay_running(settings):
            await wait_for(lambda: not outbox_rows(engine), message="outbox drained over TLS")
        async with anyio.create_task_group() as group:
            await group.start(runner.run)
            wanted = {str(event.event_id) for event in events}
            await wait_for(lambda: wanted <= set(SEEN), message="worker applied every event")
            runner.stop()
    assert all(SEEN[event_id] == 1 for event_id in wanted)
    assert tls_broker.proxy.refused == 0
    # relay producer and admin, worker consumer, DLQ producer and admin: all through the proxy
    assert tls_broker.proxy.forwarded - forwarded_before >= 5
    assert KEY_PASSWORD not in logged_text(caplog, structured)
    engine.dispose()


@pytest.mark.parametrize("client", ["producer", "admin", "consumer"])
async def test_an_untrusted_ca_fails_every_client_with_a_tls_error(
    tls_broker: TLSBroker, client: str
) -> None:
    """With a CA that did not sign the broker's certificate, each client's start raises KafkaTLSError naming ssl_cafile, within the request timeout."""
    kafka = tls_kafka(tls_broker, ssl_cafile=tls_broker.certificates.other_ca)
    with anyio.fail_after(30), pytest.raises(KafkaTLSError) as raised:
        await _start(client, kafka)
    assert raised.value.setting == "kafka.ssl_cafile"
    assert raised.value.server == tls_broker.bootstrap
    assert "certificate" in str(raised.value)
    assert KEY_PASSWORD not in str(raised.value)


@pytest.mark.parametrize("client", ["producer", "consumer"])
async def test_a_wrong_host_name_fails_with_a_tls_error(tls_broker: TLSBroker, client: str) -> None:
    """Reaching the proxy by an IP address its certificate does not hold raises KafkaTLSError naming the mismatch."""
    kafka = tls_kafka(tls_broker, bootstrap_servers=tls_broker.by_ip)
    with anyio.fail_after(30), pytest.raises(KafkaTLSError) as raised:
        await _start(client, kafka)
    assert "IP address mismatch" in str(raised.value)
    assert raised.value.setting.startswith("kafka.bootstrap_servers")


async def _start(client: str, kafka: KafkaSettings) -> None:
    """Start and close one kind of eventseam Kafka client."""
    if client == "producer":
        publisher = KafkaPublisher(kafka)
        await publisher.start()
        await publisher.aclose()
    elif client == "admin":
        admin = KafkaTopicAdmin(kafka)
        try:
            await admin.start()
        finally:
            await admin.aclose()
    else:
        consumer = KafkaConsumer(
            kafka, ConsumerSettings(), group_id="tls-check", topics=["tls-check"]
        )
        await consumer.start(_NoHooks())
        await consumer.aclose()


class _NoHooks:
    async def partitions_revoked(self, partitions: set[Partition]) -> None:
        """Nothing to commit."""

    async def partitions_assigned(self, partitions: set[Partition]) -> None:
        """Nothing to prepare."""


def test_the_relay_command_exits_on_an_untrusted_ca(
    tls_broker: TLSBroker, sqlite_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    """`eventseam relay` stops with exit status 1 and the TLS reason instead of retrying forever; no secret in its output."""
    files = tls_broker.certificates
    env = {name: value for name, value in os.environ.items() if not name.startswith("EVENTSEAM_")}
    env |= {
        "EVENTSEAM_DATABASE_URL": sqlite_url,
        "EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS": tls_broker.bootstrap,
        "EVENTSEAM_KAFKA__SECURITY_PROTOCOL": "SSL",
        "EVENTSEAM_KAFKA__SSL_CAFILE": str(files.other_ca),
        "EVENTSEAM_KAFKA__SSL_CERTFILE": str(files.client_cert),
        "EVENTSEAM_KAFKA__SSL_KEYFILE": str(files.client_key),
        "EVENTSEAM_KAFKA__SSL_PASSWORD": KEY_PASSWORD,
        "EVENTSEAM_KAFKA__REQUEST_TIMEOUT_MS": "5000",
        "EVENTSEAM_RELAY__TOPIC_PREFIX": topic_prefix,
        "PYTHONPATH": str(REPO_ROOT),
    }
    metadata.create_all(create_engine(sqlite_url))
    command = [sys.executable, "-c", "from engine.cli import main; main()", "relay", "--json-logs"]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1, done.stderr
    assert (
        f"Error: kafka.ssl_cafile: TLS handshake with {tls_broker.bootstrap} failed: "
        "certificate verify failed: self-signed certificate in certificate chain"
    ) in done.stderr
    assert KEY_PASSWORD not in done.stdout + done.stderr


async def test_an_in_process_seam_keeps_its_bus_when_the_certificate_is_refused(
    tls_broker: TLSBroker, sqlite_url: str, topic_prefix: str
) -> None:
    """A web process's EventSeam logs seam.consumers_failed with the TLS reason and its bus keeps running."""
    kafka = tls_kafka(tls_broker, ssl_cafile=tls_broker.certificates.other_ca)
    engine = create_engine(sqlite_url)
    metadata.create_all(engine)
    seam = EventSeam(
        app_settings(sqlite_url, kafka, topic_prefix),
        [orders, sink],
        session_factory=sessionmaker(engine),
    )
    with capture_logs() as structured:
        async with anyio.create_task_group() as group:
            await group.start(seam.run)
            await wait_for(
                lambda: any(e["event"] == "seam.consumers_failed" for e in structured),
                message="the consumers' failure is logged",
            )
            assert seam.running
            await seam.aclose()
    failed = next(e for e in structured if e["event"] == "seam.consumers_failed")
    assert "kafka.ssl_cafile: TLS handshake with" in failed["error"]
    engine.dispose()
