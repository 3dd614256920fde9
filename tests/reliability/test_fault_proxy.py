"""The fault proxy itself: it forwards, refuses after a cut, stalls while hung, delays when slow."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from typing import TYPE_CHECKING

import pytest

from outbox.bundled_broker import LOOPBACK
from tests.reliability.fault_proxy import FaultProxy

if TYPE_CHECKING:
    from collections.abc import Iterator


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(4096):
                self.request.sendall(data)
        except ConnectionResetError:
            return  # the proxy was cut: the upstream side is reset, as it should be


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """A proxy in front of a local echo server."""
    server = socketserver.ThreadingTCPServer((LOOPBACK, 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with FaultProxy(LOOPBACK, server.server_address[1]) as fault_proxy:
        yield fault_proxy
    server.shutdown()
    server.server_close()


def connect(proxy: FaultProxy) -> socket.socket:
    """A client connection through ``proxy`` (5 s timeout)."""
    return socket.create_connection((proxy.host, proxy.port), timeout=5)


def echo(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` and read the same number of bytes back."""
    sock.sendall(data)
    received = b""
    while len(received) < len(data):
        chunk = sock.recv(len(data) - len(received))
        if not chunk:
            break
        received += chunk
    return received


def test_pass_forwards_both_ways(proxy: FaultProxy) -> None:
    """In pass mode bytes go to the target and back unchanged."""
    with connect(proxy) as sock:
        assert echo(sock, b"hello" * 1000) == b"hello" * 1000
    assert proxy.stats.accepted == 1
    assert proxy.stats.bytes_up == proxy.stats.bytes_down == 5000


def test_cut_refuses_and_closes_then_restore_listens_again(proxy: FaultProxy) -> None:
    """A cut closes open connections and refuses new ones; a restore accepts on the same port."""
    with connect(proxy) as open_before:
        assert echo(open_before, b"a") == b"a"
        proxy.cut()
        with pytest.raises(ConnectionRefusedError):
            connect(proxy)
        try:
            closed = open_before.recv(1) == b""
        except ConnectionResetError:
            closed = True
        assert closed
    proxy.restore()
    with connect(proxy) as sock:
        assert echo(sock, b"back") == b"back"


def test_hang_stalls_connections_until_restore(proxy: FaultProxy) -> None:
    """While hung, old and new connections get no bytes; after a restore the held bytes arrive."""
    with connect(proxy) as old:
        assert echo(old, b"1") == b"1"
        proxy.hang()
        with connect(proxy) as new:  # accepted, but nothing flows
            old.settimeout(0.3)
            new.settimeout(0.3)
            old.sendall(b"2")
            new.sendall(b"3")
            for sock in (old, new):
                with pytest.raises(TimeoutError):
                    sock.recv(1)
            proxy.restore()
            old.settimeout(5)
            new.settimeout(5)
            assert old.recv(1) == b"2"
            assert new.recv(1) == b"3"


def test_slow_delays_every_chunk(proxy: FaultProxy) -> None:
    """In slow mode a round trip takes at least the delay of both directions."""
    proxy.slow(0.2)
    with connect(proxy) as sock:
        started = time.monotonic()
        assert echo(sock, b"x") == b"x"
        assert time.monotonic() - started >= 0.4
    proxy.restore()
    assert proxy.mode == "pass"
