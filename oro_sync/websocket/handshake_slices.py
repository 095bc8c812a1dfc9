"""Time slices for opening handshakes, so that a reconnect storm cannot
stall delivery to the clients already connected.

Why: after a restart or a network blip, thousands of browsers reconnect at
once.  Twisted accepts them in growing batches (``Port.numberAccepts`` grows
by 20 per full batch), and in one reactor turn every one of them whose
upgrade request has arrived went through Autobahn's set-up, its HTTP parser,
the Origin and subprotocol checks and the ticket check's hand-off to the
digest workers: measured (py-spy, bench/ticket_storm.py) as up to 0.75 s in
which the reactor did nothing but handshakes, while events for the
subscribers already connected waited (delivery p99 0.26-1.1 s).  Admission
control (``limits.max_pending_handshakes``) cannot stop this: it counts from
a complete request, and a whole batch completes in the same turn.

:class:`HandshakeSlices` runs the start of each handshake (the part after
:class:`~oro_sync.websocket.header_gate.HeaderGate` has a complete request
head) for at most :data:`SLICE_SECONDS` per reactor turn; the rest waits, in
arrival order, for the next turn, after the reactor has read and written
the connected clients' sockets.  Every check runs as before and in the same
order: only *when* it runs changes.  Under light load nothing waits (a
handshake starts at once while the turn's slice has room).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from oro_sync.logs import Logger

__all__ = ["ACCEPTS_PER_TURN", "SLICE_SECONDS", "HandshakeSlices"]

#: Handshake work allowed per reactor turn before the rest waits for the
#: next turn: small next to the 50 ms delivery p99 a storm may cost.
SLICE_SECONDS = 0.002

#: Connections Twisted may accept per read of the listening port while
#: admission control is on (the factory keeps ``Port.numberAccepts`` there).
ACCEPTS_PER_TURN = 16

log = Logger(namespace=__name__)


class HandshakeSlices:
    """A FIFO of handshake starts, run in slices of bounded time per reactor turn.

    ``reactor`` schedules the next slice (``callLater(0, ...)``); it must be
    a real reactor, since the slices are real time (``timer``).  Without one
    (``None``: a factory driven by a ``task.Clock`` in tests) every
    handshake starts at once, as before.
    """

    def __init__(self, reactor: Any, slice_seconds: float = SLICE_SECONDS,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self._reactor = reactor
        self.slice_seconds = slice_seconds
        self._timer = timer
        self._waiting: deque[Callable[[], None]] = deque()
        #: When this turn's slice began (None: no slice open).
        self._slice_began: float | None = None
        self._next: Any = None
        #: Handshake starts that had to wait for a later turn (for metrics and tests).
        self.deferred_starts = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def submit(self, start: Callable[[], None]) -> None:
        """Run ``start()`` now if this turn's slice has room, else in a later turn.

        ``start`` must check for itself whether its connection still exists.
        """
        if self._reactor is None or (not self._waiting and self._room()):
            self._run_one(start)
            return
        self.deferred_starts += 1
        self._waiting.append(start)
        self._schedule()

    def _room(self) -> bool:
        began = self._slice_began
        if began is None:
            self._slice_began = self._timer()
            self._schedule()  # the slice ends with this turn
            return True
        return self._timer() - began < self.slice_seconds

    def _schedule(self) -> None:
        if self._next is None:
            self._next = self._reactor.callLater(0, self._turn)

    def _turn(self) -> None:
        """A new reactor turn: a fresh slice for whatever waits."""
        self._next = None
        self._slice_began = None
        waiting = self._waiting
        while waiting and self._room():
            self._run_one(waiting.popleft())
        if waiting:
            self._schedule()

    def _run_one(self, start: Callable[[], None]) -> None:
        try:
            start()
        except Exception:  # one connection's failure must not stall the others
            log.failure("a handshake failed to start")

    def stop(self) -> None:
        """Forget waiting starts and the scheduled turn (server shutdown, tests)."""
        self._waiting.clear()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        self._slice_began = None
