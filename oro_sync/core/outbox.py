"""Frames for many peers, gathered during one reactor turn and sent at its end.

Fan-out is the server's hot path, and on it the cost that matters is the
kernel's, not Python's.  Writing each event with ``transport.write`` makes
Twisted buffer it, add the socket to epoll (``epoll_ctl``), wait a reactor
pass, ``send()`` it and remove the socket again: three system calls per
receiver per turn.  The outbox instead appends the frame to the peer's queue
and, once per turn, hands each queue's bytes (joined, when several events
came in the same turn) to the kernel with one ``send()``.  Only a peer that
cannot take it all at once (its socket buffer is full) goes through
``transport.write`` for the rest: then Twisted's own buffering, epoll
registration and producer flow control take over, exactly as before.

Bytes never overtake each other: a peer's queue is sent directly only while
Twisted holds nothing for it, and a front end that writes anything else to
the transport (a control frame, an RPC result, a close frame) first calls
:meth:`PeerQueue.flush`.

Transports other than plain TCP (TLS, or test doubles) still get the
per-turn batching, through their ``write``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.protocols.tls import TLSMemoryBIOProtocol

from oro_sync.logs import Logger

_log = Logger()


def batches(transport: Any) -> bool:
    """Whether writes to ``transport`` go through an outbox: real network
    transports do; anything else (a test's StringTransport) is written to
    at once, as it always was."""
    return isinstance(transport, (tcp.Connection, TLSMemoryBIOProtocol))


def _direct_socket(transport: Any) -> Any:
    """The socket to ``send()`` on for ``transport``, or None to use its ``write``.

    Only Twisted's own TCP connections qualify: their buffer attributes are
    the ones :func:`_send_now` reads.  A TLS connection (``TLS`` set by
    ``startTLS``, or a TLS protocol wrapped around the TCP one) encrypts in
    ``write`` and must always get the bytes there.
    """
    if isinstance(transport, tcp.Connection) and hasattr(transport, "_tempDataBuffer"):
        return transport.socket
    return None


class PeerQueue:
    """One peer's frames for the current reactor turn.

    ``send`` is what topics call per delivery; it only appends (and, for the
    first frame of the turn, tells the outbox to flush this queue).
    """

    __slots__ = ("transport", "frames", "outbox", "_socket")

    def __init__(self, outbox: "Outbox", transport: Any):
        self.outbox = outbox
        self.transport = transport
        #: This turn's frames.  A front end holding a session's output (while
        #: it answers a request) swaps in a list of its own for a moment.
        self.frames: list[bytes] = []
        self._socket = _direct_socket(transport)

    def send(self, data: bytes) -> None:
        frames = self.frames
        if not frames:
            self.outbox._pending(self)
        frames.append(data)

    def discard(self) -> None:
        """Drop what is queued (the connection is being aborted)."""
        self.frames.clear()

    def flush(self) -> None:
        """Hand what is queued to the transport now (ahead of another write)."""
        frames = self.frames
        if not frames:
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        frames.clear()
        transport = self.transport
        sock = self._socket
        if sock is not None and transport._aborting:
            # After abortConnection() Twisted keeps ``connected`` until the next
            # turn but sends nothing more: drop the bytes rather than buffer them.
            return
        if (sock is None or transport.dataBuffer or transport._tempDataBuffer
                or not transport.connected or transport.disconnecting or transport.TLS):
            transport.write(data)
            return
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            # Reset or broken pipe: let Twisted find out on its own write
            # path, which closes the connection the usual way.
            transport.write(data)
            return
        if sent < len(data):
            transport.write(data[sent:])


class Outbox:
    """The per-turn delivery batch of one node, shared by every front end."""

    def __init__(self, clock: Any):
        #: ``callLater`` provider (the reactor; a task.Clock in tests).
        self.clock = clock
        self._queues: list[PeerQueue] = []
        self._call: Any = None

    def queue_for(self, transport: Any) -> PeerQueue:
        """A new queue writing to ``transport``; its ``send`` is the session's
        ``send_frame``."""
        return PeerQueue(self, transport)

    def _pending(self, queue: PeerQueue) -> None:
        if self._call is None:
            # Delay 0: runs after every read of this reactor pass, before the
            # next poll, so all events of the pass share one send() per peer.
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

