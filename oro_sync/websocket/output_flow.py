"""What leaves a connection, and at what pace: output holding, ordering
behind the event queue, and flow control with the slow-consumer cut-off.

A mixin of :class:`oro_sync.websocket.connection.WampConnection`, apart from
the handshake and the session so that the rules about bytes going out can
be read in one place.  The connection is the push producer of its
transport: while the peer does not read and the buffers are full, Twisted
calls ``pauseProducing`` on every further write, and a periodic check runs
while paused; past the factory's output buffer limit the connection is
aborted (a slow consumer must not grow the server's memory without bound).
"""

from __future__ import annotations

from typing import Any

from oro_sync.core.outbox import PeerQueue
from oro_sync.websocket.kernel_write import buffered_bytes


class OutputFlow:
    """Output holding, write ordering and flow control of a connection."""

    #: This session's events of the current reactor turn (see oro_sync.core.outbox).
    _queue: PeerQueue | None = None
    # Output holding (see hold_output).
    _hold: list[bytes] | None = None
    _queued_before_hold: list[bytes] | None = None
    _paused_check: Any = None

    def hold_output(self) -> list[bytes]:
        """Keep every frame for this peer (events and other writes), in order,
        until :meth:`release_output`; returns the list they go to.

        Events reach the peer queue's ``send`` (what topics hold), so the
        queue's list itself is swapped for the hold list: no check is added
        to the per-delivery path."""
        self._hold = hold = []
        if self._queue is not None:
            self._queued_before_hold, self._queue.frames = self._queue.frames, hold
        return hold

    def release_output(self, held: list[bytes]) -> None:
        if self._hold is not None and self._queue is not None:
            self._queue.frames = self._queued_before_hold
            self._queued_before_hold = None
        self._hold = None
        for data in held:
            if self._queue is not None:
                self._queue.send(data)
            else:
                self.transport.write(data)

    def _write_now(self, data: bytes) -> None:
        """``send_frame`` for transports without an outbox queue."""
        if self._hold is not None:
            self._hold.append(data)
        else:
            self.transport.write(data)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # Every other write (WELCOME, RPC results, pings, the close frame)
        # goes after the events queued before it.
        if self._hold is not None:
            self._hold.append(data)
            return
        queue = self._queue
        if queue is not None and queue.frames:
            queue.flush()
        super().sendData(data, sync, chopsize)

    # -- flow control (IPushProducer: the transport says when it is full) ------

    def pauseProducing(self) -> None:
        # Twisted calls this on every write while the buffer is full: with the
        # outbox that is once per reactor turn for a lagging peer, whatever
        # the number of events, so the buffer is measured every time.
        if self._over_output_limit():
            self._slow_consumer()
            return
        self.factory.outputLagging(self)
        if self._paused_check is None:
            # Some transports (TLS) pause only once: keep checking while paused.
            self._paused_check = self.factory.clock.callLater(1.0, self._check_paused)

    def resumeProducing(self) -> None:
        self._cancel_paused_check()
        self.factory.outputCaughtUp(self)

    def stopProducing(self) -> None:
        self._cancel_paused_check()

    def _check_paused(self) -> None:
        self._paused_check = None
        if self._over_output_limit():
            self._slow_consumer()
        else:
            self._paused_check = self.factory.clock.callLater(1.0, self._check_paused)

    def _cancel_paused_check(self) -> None:
        if self._paused_check is not None:
            if self._paused_check.active():
                self._paused_check.cancel()
            self._paused_check = None

    def _over_output_limit(self) -> bool:
        return buffered_bytes(self.transport) > self.factory.limits.max_output_buffer

    def cutOff(self, why: str) -> None:
        """Drop this peer as a slow consumer (``why`` is logged)."""
        if self.state != self.STATE_CLOSED:
            self._slow_consumer(why)

    def _slow_consumer(self, why: str = "") -> None:
        self._cancel_paused_check()
        self.factory.outputCaughtUp(self)
        self.factory.repeats.warn(("slow_consumer", self._peer_host),
                                  "{peer} ({session}) does not read its events: closing ({why})",
                                  peer=self.peer, session=self.session_id,
                                  why=why or f"over {self.factory.limits.max_output_buffer} bytes queued")
        self.factory.metrics.counters["slow_consumers_closed"] += 1
        if self._queue is not None:
            self._queue.discard()
        self._leave()  # no more events are queued for it from now on
        self.wasClean = False
        self.wasNotCleanReason = "slow consumer: output buffer limit exceeded"
        self.dropConnection(abort=True)
