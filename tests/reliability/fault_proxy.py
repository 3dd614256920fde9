"""A fault-injecting TCP proxy for the reliability suite: pass, cut, hang, slow, restore.

    with FaultProxy("127.0.0.1", broker_port) as proxy:   # listens on proxy.port
        proxy.cut()        # close every connection and stop listening: connects get ECONNREFUSED
        proxy.restore()    # listen again on the same port, forward as before
        proxy.hang()       # keep (and accept) connections but forward nothing, in either direction
        proxy.slow(0.05)   # forward, each chunk delayed by 0.05 s
        proxy.restore()    # hung connections resume: what waited in the buffers is forwarded

Clients must reach the service through ``proxy.address`` (a Kafka broker advertises it: see
net_stack.proxied_broker). The proxy runs its own asyncio loop in a daemon thread, so tests
drive it from synchronous or asynchronous code alike; every control method returns once the
mode is in force.
A hang stops reading: bytes wait in the kernel buffers (as on a partitioned network, where TCP
retransmits), and a restore lets them through; a peer that gave up meanwhile is closed then.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from outbox.bundled_broker import LOOPBACK, free_port

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from types import TracebackType

Mode = Literal["pass", "cut", "hang", "slow"]
CHUNK = 64 * 1024


@dataclass(slots=True)
class ProxyStats:
    """What went through the proxy since it started."""

    accepted: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    cuts: int = 0
    modes: list[tuple[float, Mode]] = field(default_factory=list)


class FaultProxy:
    """Forwards TCP connections from ``listen_host:port`` to ``target_host:target_port``.

    ``port`` defaults to a free port (chosen at construction, so a broker can advertise it before
    the proxy starts). Control methods are thread safe and idempotent; ``restored_at`` is the
    ``time.monotonic()`` of the last ``restore``.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        port: int | None = None,
        listen_host: str = LOOPBACK,
    ) -> None:
        self.target = (target_host, target_port)
        self.host = listen_host
        self.port = port if port is not None else free_port(listen_host)
        self.mode: Mode = "pass"
        self.delay = 0.0
        self.stats = ProxyStats()
        self.restored_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        """``host:port`` clients connect to."""
        return f"{self.host}:{self.port}"

    # -- lifecycle (any thread) ---------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread and listen (pass mode)."""
        if self._thread is not None:
            return
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve_forever, args=(ready,), name=f"fault-proxy-{self.port}", daemon=True
        )
        self._thread.start()
        ready.wait()
        self._call(self._listen())
        self._set_mode("pass")

    def stop(self) -> None:
        """Close every connection, stop listening and end the loop thread."""
        if self._thread is None or self._loop is None:
            return
        self._call(self._close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._thread = self._loop = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults (any thread) ------------------------------------------------------------------

    def cut(self) -> None:
        """Close every connection (the peers see a reset/EOF) and refuse new ones."""
        self.stats.cuts += 1
        self._set_mode("cut")
        self._call(self._close_all())

    def hang(self) -> None:
        """Accept connections but forward nothing; existing ones stall (no close, no data)."""
        self._set_mode("hang")
        self._call(self._listen())

    def slow(self, delay: float) -> None:
        """Forward every chunk after ``delay`` seconds."""
        self.delay = delay
        self._set_mode("slow")
        self._call(self._listen())

    def restore(self) -> None:
        """Back to pass: listen again after a cut, let hung connections flow again."""
        self.delay = 0.0
        self._call(self._listen())
        self._set_mode("pass")
        self.restored_at = time.monotonic()

    # -- the loop thread ----------------------------------------------------------------------

    def _serve_forever(self, ready: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        ready.set()
        self._loop.run_forever()

    def _call(self, coroutine: Coroutine[object, object, None]) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    def _set_mode(self, mode: Mode) -> None:
        self.mode = mode
        self.stats.modes.append((time.monotonic(), mode))
        if self._loop is not None:
            self._call(self._apply_flow())

    async def _apply_flow(self) -> None:
        assert self._flowing is not None
        if self.mode in {"pass", "slow"}:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True, backlog=128
        )

    async def _close_all(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for writer in list(self._connections):
            _abort(writer)
        self._connections.clear()

    async def _accept(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        if self.mode == "cut":  # a connect that raced the close
            _abort(client)
            return
        self.stats.accepted += 1
        self._connections.add(client)
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
        except OSError:
            self._connections.discard(client)
            _abort(client)
            return
        self._connections.add(upstream)
        pumps = (
            self._pump(client_reader, upstream, up=True),
            self._pump(upstream_reader, client, up=False),
        )
        try:
            await asyncio.gather(*pumps)
        finally:
            for writer in (client, upstream):
                self._connections.discard(writer)
                _abort(writer)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool
    ) -> None:
        """Copy ``reader`` to ``writer`` while flowing; ends (closing both) at EOF or an error."""
        assert self._flowing is not None
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                await self._flowing.wait()
                chunk = await reader.read(CHUNK)
                if not chunk:
                    break
                await self._flowing.wait()  # hung while this read was pending: hold the chunk
                if self.delay:
                    await asyncio.sleep(self.delay)
                if up:
                    self.stats.bytes_up += len(chunk)
                else:
                    self.stats.bytes_down += len(chunk)
                writer.write(chunk)
                await writer.drain()
        _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close at once (RST, not a graceful FIN after buffered data)."""
    transport = writer.transport
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
