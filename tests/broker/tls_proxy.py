"""A TLS-terminating TCP proxy in front of the bundled broker, which speaks no TLS itself.

Kafka clients bootstrap, then reconnect to the address the broker *advertises* in its metadata,
so the broker behind the proxy must advertise the proxy's ``host:port``: ``AdvertisingBroker``
starts Tansu with ``--advertised-listener-url`` pointing at the proxy. Certificates come from
trustme, created per test module:

    CA ─┬─ server certificate for "localhost" (the proxy's only name: 127.0.0.1 mismatches)
        └─ client certificate (the proxy requires one: mutual TLS), key encrypted with a password

``TLSProxy.serve`` runs on an anyio event loop (the fixture runs it in a blocking portal's
thread, so it outlives each test's own loop) and pipes bytes both ways per connection.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import trustme
from anyio.streams.tls import TLSListener
from cryptography.hazmat.primitives import serialization

from outbox.bundled_broker import BundledBroker

if TYPE_CHECKING:
    from pathlib import Path

    from anyio.abc import AnyByteStream, ByteStream, TaskStatus

PROXY_HOST = "localhost"
KEY_PASSWORD = "correct horse battery staple"


class AdvertisingBroker(BundledBroker):
    """A bundled broker that tells clients to connect to ``advertised`` (``host:port``)."""

    def __init__(self, advertised: str) -> None:
        super().__init__()
        self.advertised = advertised

    def command(self) -> list[str]:
        """The bundled broker's command line with the advertised listener replaced."""
        command = super().command()
        command[command.index("--advertised-listener-url") + 1] = f"tcp://{self.advertised}"
        return command


@dataclass(frozen=True, slots=True)
class Certificates:
    """PEM files of one test PKI (see the module docstring)."""

    ca: Path
    other_ca: Path
    server_chain: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_key_password: Path


def make_certificates(directory: Path) -> Certificates:
    """A CA, a server certificate for ``localhost``, a client certificate, and an unrelated CA."""
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert(PROXY_HOST)
    client = ca.issue_cert("relay@eventseam.test")
    files = Certificates(
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        server_chain=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        client_key_password=directory / "client.key.password",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    other.cert_pem.write_to_path(str(files.other_ca))
    server.private_key_pem.write_to_path(str(files.server_key))
    for index, blob in enumerate(server.cert_chain_pems):
        blob.write_to_path(str(files.server_chain), append=index > 0)
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    files.client_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(KEY_PASSWORD.encode()),
        )
    )
    files.client_key_password.write_text(KEY_PASSWORD + "\n")
    return files


def server_context(certificates: Certificates) -> ssl.SSLContext:
    """The proxy's TLS context: its certificate, and a client certificate required (mTLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certificates.ca))
    context.load_cert_chain(str(certificates.server_chain), str(certificates.server_key))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class TLSProxy:
    """Accepts TLS on 127.0.0.1:``port`` and forwards the plain bytes to ``target`` (host, port)."""

    def __init__(self, context: ssl.SSLContext, port: int, target: tuple[str, int]) -> None:
        self.context, self.port, self.target = context, port, target
        #: TLS handshakes that failed (a client that refused the certificate, or had none).
        self.refused = 0
        #: Connections that completed the TLS handshake and were forwarded to the broker.
        self.forwarded = 0

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; reports started once the port is bound."""
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        tls = _CountingListener(listener, self.context, standard_compatible=False)
        tls.proxy = self
        async with tls:
            task_status.started()
            await tls.serve(self._forward)

    async def _forward(self, client: ByteStream) -> None:
        self.forwarded += 1
        async with client:
            upstream = await anyio.connect_tcp(*self.target)
            async with upstream, anyio.create_task_group() as group:
                group.start_soon(_pipe, client, upstream, group.cancel_scope)
                group.start_soon(_pipe, upstream, client, group.cancel_scope)


class _CountingListener(TLSListener):
    """A TLSListener that counts failed handshakes instead of logging them as errors."""

    proxy: TLSProxy

    async def handle_handshake_error(  # type: ignore[override]  # a staticmethod upstream
        self, exc: BaseException, stream: AnyByteStream
    ) -> None:
        """Count the refused handshake and close the connection (cancellations propagate)."""
        await anyio.aclose_forcefully(stream)
        if not isinstance(exc, Exception):
            raise exc
        self.proxy.refused += 1


async def _pipe(source: ByteStream, sink: ByteStream, scope: anyio.CancelScope) -> None:
    """Copy ``source`` to ``sink`` until either side closes, then stop the other direction."""
    try:
        async for chunk in source:
            await sink.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, ssl.SSLError, OSError):
        pass  # one side went away: the connection is over, the other pipe is cancelled below
    finally:
        scope.cancel()
