"""Frames for many peers, gathered during one reactor turn and sent at its end.

Fan-out is the server's hot path, and on it the cost that matters is the
kernel's, not Python's.  Writing each event with ``transport.write`` makes
Twisted buffer it, add the socket to epoll, wait a reactor pass, ``send()``
it and remove the socket again: three system calls per receiver per turn.
The outbox instead appends the frame to the peer's queue and, once per turn,
hands each queue's bytes (joined, when several events came in the same
turn) to the peer's *writer* in one call.

The writer is chosen by whoever builds the outbox: the transport's own
``write`` by default, or a writer that ``send()``s straight to the kernel
while Twisted holds nothing for the peer
(:class:`oro_sync.websocket.kernel_write.KernelWriter`).  The core knows
nothing of how bytes reach a socket.

Bytes never overtake each other: a front end that writes anything else to
the peer (a control frame, an RPC result, a close frame) first calls
:meth:`PeerQueue.flush`.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any, Callable

from oro_sync.logs import Logger

_log = Logger()

Write = Callable[[bytes], None]
#: Makes the writer of one transport (``transport.write`` by default).
WriterFactory = Callable[[Any], Write]


class PeerQueue:
    """One peer's frames for the current reactor turn.

    ``send`` is what topics call per delivery; it only appends (and, for the
    first frame of the turn, tells the outbox to flush this queue).
    """

    __slots__ = ("transport", "frames", "outbox", "write")

    def __init__(self, outbox: "Outbox", transport: Any, write: Write):
        self.outbox = outbox
        self.transport = transport
        #: Hands bytes to the peer (see the module docstring).
        self.write = write
        #: This turn's frames.  A front end holding a session's output (while
        #: it answers a request) swaps in a list of its own for a moment.
        self.frames: list[bytes] = []

    def send(self, data: bytes) -> None:
        frames = self.frames
        if not frames:
            self.outbox._pending(self)
        frames.append(data)

    def discard(self) -> None:
        """Drop what is queued (the connection is being aborted)."""
        self.frames.clear()

    def flush(self) -> None:
        """Hand what is queued to the writer now (ahead of another write)."""
        frames = self.frames
        if not frames:
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        frames.clear()
        self.write(data)


class Outbox:
    """The per-turn delivery batch of one node, shared by every front end."""

    def __init__(self, clock: Any, writer: WriterFactory | None = None):
        #: ``callLater`` provider (the reactor; a task.Clock in tests).
        self.clock = clock
        self._writer = writer
        self._queues: list[PeerQueue] = []
        self._call: Any = None
        #: ``perf_counter()`` of the sampled publications of this turn, and
        #: who is told their publish-to-send time (see :meth:`probe`).
        self._probes: list[float] = []
        self.on_latency: Callable[[float], None] | None = None

    def probe(self, started: float) -> None:
        """A sampled publication that began at ``started`` (``perf_counter``)
        has queued its frames: its latency is known once this turn's queues
        are written (at once if nothing is pending)."""
        if self.on_latency is None:
            return
        if self._call is None:
            self.on_latency(perf_counter() - started)
        else:
            self._probes.append(started)

    def queue_for(self, transport: Any) -> PeerQueue:
        """A new queue writing to ``transport``; its ``send`` is the session's
        ``send_frame``."""
        write = self._writer(transport) if self._writer is not None else transport.write
        return PeerQueue(self, transport, write)

    def _pending(self, queue: PeerQueue) -> None:
        if self._call is None:
            # Delay 0: runs after every read of this reactor pass, before the
            # next poll, so all events of the pass share one write per peer.
            self._call = self.clock.callLater(0, self.flush)
        self._queues.append(queue)

    def flush(self) -> None:
        """Send every queue filled since the last flush."""
        self._call = None
        queues, self._queues = self._queues, []
        for queue in queues:
            try:
                queue.flush()
            except Exception:
                # One broken transport must not keep the others' events.
                _log.failure("writing queued frames to {transport} failed", transport=queue.transport)
        if self._probes:
            now = perf_counter()
            probes, self._probes = self._probes, []
            for started in probes:
                self.on_latency(now - started)  # type: ignore[misc]
